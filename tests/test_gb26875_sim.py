"""The transmission-device simulator and the conformance centre: against each
other, against a faulty device written out by hand, and the simulator through
the real gateway, broker, ingest and API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from device_sim import gb26875_conformance as gc
from device_sim import gb26875_sim as gs
from firesafe.settings import Settings
from tests.gb26875_frames import adu, component_status, frame
from tests.helpers import running_ingest, wait_for
from tests.test_api_support import client, live_server
from tests.test_gb26875_e2e import GatewayThread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("centre", ["silent", "absent"])
def test_a_centre_that_never_confirms_does_not_keep_the_run_going(centre: str) -> None:
    """A centre that takes the connection and never confirms a frame (or no
    centre at all): the run ends its overrun past --duration, says how many
    devices it stopped, and the CLI would exit non-zero."""
    port = _free_port()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    async def go() -> tuple[gs.Stats, float]:
        server = (
            await asyncio.start_server(swallow, "127.0.0.1", port) if centre == "silent" else None
        )
        started = asyncio.get_running_loop().time()
        try:
            stats = await gs.run(
                gs.make_estate(2, 3, seed=1), "127.0.0.1", port, 0.5, 1, resend_s=0.3, overrun=1.0
            )
        finally:
            if server is not None:
                server.close()
        return stats, asyncio.get_running_loop().time() - started

    stats, took = asyncio.run(go())
    assert stats.stopped == 2
    assert stats.confirmed == 0
    assert "2 stopped unconfirmed" in stats.line()
    assert took < 10  # duration 0.5 + overrun 1 + a resend; for ever before


def test_simulated_device_passes_conformance() -> None:
    port = _free_port()
    centre = gc.Centre()
    uitds = gs.make_estate(1, 12, seed=3)

    async def go() -> gs.Stats:
        server = asyncio.create_task(gc.serve(centre, "127.0.0.1", port, 30))
        await asyncio.sleep(0)  # let it bind before the device connects
        try:
            return await gs.run(
                uitds, "127.0.0.1", port, 3.0, 3, heartbeat_s=0.5, resend_s=0.3, split_p=0.5
            )
        finally:
            server.cancel()

    stats = asyncio.run(go())
    results = {r.rule: r for r in centre.report()}
    assert {n: r.status for n, r in results.items() if r.status != "pass"} == {}
    assert stats.resent >= 1  # the withheld confirm was made up for by a resend
    assert stats.confirmed == stats.frames
    assert results["heartbeats"].checked >= 2


def test_the_centre_ends_cleanly_with_a_device_still_connected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The newcomer check: a device still connected when the listening time ran
    out made asyncio print a CancelledError traceback before the report."""
    port = _free_port()

    async def go() -> None:
        server = asyncio.create_task(gc.serve(gc.Centre(), "127.0.0.1", port, 1.0))
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await server  # returns at the end of its time, the device still there
        assert await reader.read() == b""  # and it was disconnected
        writer.close()

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(go())
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_conformance_reports_a_faulty_device() -> None:
    centre = gc.Centre(withhold=True)
    cst = timezone(timedelta(hours=8))
    now = datetime.now(cst).replace(tzinfo=None, microsecond=0)
    ms = int(now.replace(tzinfo=cst).timestamp() * 1000)
    good = adu(2, component_status(1, 1, 42, 1, 3, "3F东走廊", now))
    frames = [
        frame(1, good, when=now),  # withheld ...
        frame(5, good, when=now),  # ... and never resent; serial jumps 1 -> 5
        frame(6, good, when=now, bad_checksum=True),
        frame(7, adu(2, bytes(10)), when=now),  # count/length mismatch
        frame(8, b"", when=datetime(2020, 1, 1)),  # heartbeat with a clock 6 years off
        b"\xde\xad",
    ]
    buf = bytearray(b"".join(frames))
    from device_sim import gb26875_wire as w

    for seen in w.split(buf):
        centre.see(seen, ms)
    status = {r.rule: r.status for r in centre.report()}
    assert status["resend"] == "fail"
    assert status["serial_numbers"] == "fail"
    assert status["checksum"] == "fail"
    assert status["application_data"] == "fail"
    assert status["time_labels"] == "fail"
    assert status["descriptions"] == "pass"
    assert status["version"] == "pass"


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


@pytest.mark.integration
def test_simulator_through_the_gateway(
    ingest_settings: Settings, api_url: str, db: str, mqtt_url: str
) -> None:
    uitds = gs.make_estate(1, 15, seed=5, site_prefix=f"G{_free_port()}x")
    with client(api_url) as api:
        assert api.post("/api/v1/devices", json=gs.registry(uitds, 1.0)).status_code in (200, 201)
    with running_ingest(ingest_settings):
        gw = GatewayThread(mqtt_url, api_url).start()
        try:
            stats = asyncio.run(
                gs.run(uitds, "127.0.0.1", gw.port, 4.0, 5, heartbeat_s=1.0, resend_s=3.0)
            )
        finally:
            gw.stop()
        assert stats.confirmed == stats.frames
        site = uitds[0].site
        with client(api_url) as api:

            def alarms() -> list[dict[str, object]]:
                items: list[dict[str, object]] = api.get(
                    "/api/v1/alarms", params={"site": site, "limit": 100}
                ).json()["items"]
                return items

            # A call point pressed: a confirmed fire; a detector's fire then the
            # panel's reset: suppressed; a fault opened.
            wait_for(
                lambda: (
                    {("fire", "call_point"), ("fire", "panel_reset")}
                    <= {(a["type"], a["reason"]) for a in alarms()}
                ),
                timeout=20,
            )
            kinds = {a["type"] for a in alarms()}
            assert "fault" in kinds
            devices = api.get("/api/v1/devices", params={"site": site, "limit": 100}).json()
            assert len(devices["items"]) >= 16  # the uitd, its points and its panel
