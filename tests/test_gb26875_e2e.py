"""The GB/T 26875.3 gateway end to end: hand-built frames over real TCP, the real
broker, ingest, database and API (a uvicorn server), as a monitoring centre
would be checked: confirms, components, alarms, telemetry, rejects, resends,
operator verification and linkage, a gateway dying between publish and
confirm, and a broker outage."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firesafe.settings import MqttEndpoint, Settings
from gateways.directory import Directory
from gateways.gb26875 import server as gwserver
from gateways.gb26875.server import Gateway
from gateways.mqtt import AckPublisher
from tests.gb26875_frames import adu, analog, component_status, frame
from tests.helpers import query, reads_in_chinese, running_ingest, wait_for
from tests.test_api_support import ADMIN_TOKEN, client, live_server

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))
SOURCE = bytes([0xA7, 0x01, 0, 0, 0, 0])  # address 0000000001A7
ADDRESS = "0000000001A7"


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


def local_now() -> datetime:
    """The panel's clock: China Standard Time, whole seconds."""
    return datetime.now(CST).replace(tzinfo=None, microsecond=0)


def epoch_ms(local: datetime) -> int:
    return int(local.replace(tzinfo=CST).timestamp() * 1000)


class GatewayThread:
    """A Gateway on its own event loop in a thread, on a free port."""

    def __init__(self, mqtt_url: str, api_url: str, gateway_cls: type[Gateway] = Gateway) -> None:
        self.mqtt_url, self.api_url, self.cls = mqtt_url, api_url, gateway_cls
        self.port = 0
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        publisher = AckPublisher(MqttEndpoint.parse(self.mqtt_url), "test-gb26875")
        publisher.start()
        await publisher.wait_connected(10)
        directory = Directory(self.api_url, ADMIN_TOKEN)
        self.gateway = self.cls(publisher, directory, idle_s=30)

        def ready(host: str, port: int) -> None:
            self.port = port
            self._ready.set()

        try:
            await self.gateway.serve("127.0.0.1", 0, self._stop, ready)
        finally:
            await directory.close()
            publisher.stop()

    def start(self) -> GatewayThread:
        self._thread.start()
        assert self._ready.wait(15), "gateway did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


class Device:
    """A transmission device's side of the TCP connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, *writes: bytes) -> None:
        for w in writes:
            self.sock.sendall(w)

    def confirm(self) -> int:
        """The next frame from the centre: must be a confirm (command 3, N = 0)."""
        serial, command = self.answer()
        assert command == 3
        return serial

    def answer(self) -> tuple[int, int]:
        """The next frame from the centre, an answer without data: (serial, command)."""
        while len(self.buf) < 30:
            chunk = self.sock.recv(4096)
            assert chunk, "gateway closed the connection"
            self.buf += chunk
        raw, self.buf = self.buf[:30], self.buf[30:]
        assert raw[:2] == b"@@"
        assert raw[28:30] == b"##"
        assert raw[24:26] == b"\x00\x00"
        assert raw[27] == sum(raw[2:27]) % 256
        assert raw[18:24] == SOURCE or raw[18:24] != b""  # addressed back to the device
        return raw[2] | raw[3] << 8, raw[26]

    def nothing_received(self) -> bool:
        self.sock.setblocking(False)
        try:
            return not self.buf and not self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(20)

    def close(self) -> None:
        self.sock.close()


def register_uitd(api_url: str, site: str, **extra: Any) -> None:
    with client(api_url) as api:
        body = {
            "id": "UITD-7",
            "site": site,
            "building": "B1",
            "floor": "1",
            "zone": "control-room",
            "kind": "uitd",
            "address": ADDRESS.lower(),
            "interval_s": 30,
            **extra,
        }
        r = api.post("/api/v1/devices", json=body)
        assert r.status_code in (200, 201), r.text


def status_frame(serial: int, ct: int, ca: int, flags: int, text: str, when: datetime) -> bytes:
    return frame(serial, adu(2, component_status(1, 1, ct, ca, flags, text, when)), source=SOURCE)


def api_get(api_url: str, path: str, **params: Any) -> Any:
    with client(api_url) as api:
        r = api.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def alarm_of(api_url: str, device: str, type_: str = "fire") -> Any:
    items = api_get(api_url, "/api/v1/alarms", device=device, type=type_)["items"]
    return items[0] if items else None


def test_panel_end_to_end(
    ingest_settings: Settings,
    api_url: str,
    db: str,
    mqtt_url: str,
    site: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gwserver, "OFFLINE_GRACE_S", 2.0)  # 5 s: the test's time
    register_uitd(api_url, site)
    now = local_now()
    with running_ingest(ingest_settings), _gateway(mqtt_url, api_url) as gw:
        dev = Device(gw.port)
        # A heartbeat: command 2 with no data.
        dev.send(frame(1, b"", source=SOURCE))
        assert dev.confirm() == 1
        # A request (command 4) and a control (command 1) the centre does not take:
        # denied (command 6), so the device does not resend them; kept as rejects.
        dev.send(frame(10, adu(81, b"\x00"), source=SOURCE, command=4))
        assert dev.answer() == (10, 6)
        dev.send(frame(11, adu(89, b"\x00"), source=SOURCE, command=1))
        assert dev.answer() == (11, 6)
        # A photoelectric detector's fire alarm, one frame in two writes.
        fire = status_frame(2, 42, 0x105, 0x0003, "3F东走廊", now)
        dev.send(fire[:20], fire[20:])
        assert dev.confirm() == 2
        # Two frames in one write: a call point's fire alarm and a temperature.
        mcp = status_frame(3, 23, 7, 0x0003, "一层大厅手报", now)
        temp = frame(4, adu(3, analog(1, 1, 31, 12, 3, 253, now)), source=SOURCE)
        dev.send(mcp + temp)
        assert [dev.confirm(), dev.confirm()] == [3, 4]
        # A fault on the heat detector, then its restore.
        dev.send(status_frame(5, 31, 12, 0x0005, "2F机房感温", now))
        assert dev.confirm() == 5
        later = now + timedelta(seconds=5)
        dev.send(status_frame(6, 31, 12, 0x0001, "2F机房感温", later))
        assert dev.confirm() == 6
        # A bad checksum is not confirmed: the next confirm is the heartbeat's.
        bad = frame(7, b"", source=SOURCE, bad_checksum=True)
        dev.send(bad, frame(8, b"", source=SOURCE))
        assert dev.confirm() == 8
        # The detector's frame again (the device did not see the confirm in time).
        dev.send(fire)
        assert dev.confirm() == 2
        # An unregistered transmission device: confirmed, kept as a reject.
        stranger = Device(gw.port)
        stranger.send(frame(9, adu(2, component_status(1, 1, 42, 1, 3, "x", now))))
        assert stranger.confirm() == 9

        # Components appear with their ids, kinds and names.
        def component(cid: str) -> dict[str, Any]:
            return api_get(api_url, f"/api/v1/devices/{cid}")  # type: ignore[no-any-return]

        detector = wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_261"))
        assert component("UITD-7_1_1_261")["kind"] == "smoke"
        assert component("UITD-7_1_1_261")["name"] == "3F东走廊"
        assert component("UITD-7_1_1_7")["kind"] == "mcp"
        assert component("UITD-7_1_1_7")["name"] == "一层大厅手报"
        assert component("UITD-7_1_1_12")["kind"] == "heat"
        assert component("UITD-7_1_1_261")["site"] == site
        # The detector's fire is pending, the call point's confirmed.
        assert detector["verdict"] == "pending"
        assert detector["reason"] == "panel_alarm"
        assert detector["opened_at"].startswith(
            datetime.fromtimestamp(epoch_ms(now) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        )
        callpoint = wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_7"))
        assert callpoint["verdict"] == "confirmed"
        assert callpoint["reason"] == "call_point"
        # The fault opened and cleared.
        fault = wait_for(
            lambda: (a := alarm_of(api_url, "UITD-7_1_1_12", "fault")) and a["status"] == "cleared"
        )
        assert fault
        # The temperature in telemetry.
        readings = wait_for(
            lambda: api_get(api_url, "/api/v1/devices/UITD-7_1_1_12/telemetry")["items"]
        )
        assert readings[0]["v"] == {"temperature": 25.3}

        # The bad frame and the stranger's in rejects, with their raw bytes.
        def gateway_rejects() -> list[dict[str, Any]]:
            items = api_get(api_url, "/api/v1/rejects")["items"]
            return [r for r in items if r["topic"] == "fs/v1/_gateway/gb26875/reject"]

        rejects = wait_for(lambda: gateway_rejects()[1:] and gateway_rejects())
        by_reason = {r["reason"]: r for r in rejects}
        assert by_reason["bad_frame"]["encoding"] == "base64"
        assert base64.b64decode(by_reason["bad_frame"]["payload"]) == bad
        # (The shared test broker may replay other tests' retained statuses:
        # only the gateway's own topic counts here.)
        unknown = api_get(api_url, "/api/v1/rejects", reason="unknown_device")["items"]
        [stranger_fire] = [r for r in unknown if r["topic"] == "fs/v1/_gateway/gb26875/reject"]
        assert "; it carries FIRE ALARMS: point 1/1/1 (x) (serial 9" in stranger_fire["detail"]
        denied = api_get(api_url, "/api/v1/rejects", reason="unsupported")["items"]
        details = [r["detail"] for r in denied if r["topic"] == "fs/v1/_gateway/gb26875/reject"]
        assert any(d.startswith("command 4 ") for d in details)
        assert any(d.startswith("command 1 ") for d in details)
        for detail in [*details, stranger_fire["detail"], by_reason["bad_frame"]["detail"]]:
            reads_in_chinese(detail)
        # The resent frame is stored once.
        events = query(
            db,
            "SELECT type FROM device_events WHERE device_id = 'UITD-7_1_1_261' ORDER BY ts, seq",
        )
        assert sorted(e[0] for e in events) == ["panel_fire", "restore"]
        assert len(query(db, "SELECT 1 FROM alarms WHERE device_id = 'UITD-7_1_1_261'")) == 1

        # An operator confirms the detector's fire; a panel reset then leaves it latched.
        with client(api_url) as api:
            r = api.post(
                f"/api/v1/alarms/{detector['id']}/confirm", json={"note": "seen on camera"}
            )
            assert r.status_code == 200, r.text
            assert (r.json()["verdict"], r.json()["reason"]) == ("confirmed", "operator")
            log = api.get(f"/api/v1/alarms/{detector['id']}").json()["log"]
            assert log[-1]["action"] == "confirmed"
            assert log[-1]["note"] == "seen on camera"
        dev.send(status_frame(10, 42, 0x105, 0x0001, "3F东走廊", later))
        assert dev.confirm() == 10
        wait_for(
            lambda: query(
                db,
                "SELECT 1 FROM device_events WHERE device_id = 'UITD-7_1_1_261' "
                "AND type = 'panel_reset'",
            )
        )
        assert alarm_of(api_url, "UITD-7_1_1_261")["verdict"] == "confirmed"

        # A second detector: fire, then the panel is reset -> suppressed, panel_reset.
        dev.send(status_frame(11, 42, 0x106, 0x0003, "3F西走廊", now))
        assert dev.confirm() == 11
        wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_262"))
        dev.send(status_frame(12, 42, 0x106, 0x0001, "3F西走廊", later))
        assert dev.confirm() == 12
        reset = wait_for(
            lambda: (
                (a := alarm_of(api_url, "UITD-7_1_1_262")) and a["verdict"] == "suppressed" and a
            )
        )
        assert reset["reason"] == "panel_reset"
        # A third: fire, dismissed by an operator.
        dev.send(status_frame(13, 41, 0x107, 0x0003, "4F", now))
        assert dev.confirm() == 13
        third = wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_263"))
        with client(api_url) as api:
            r = api.post(f"/api/v1/alarms/{third['id']}/dismiss", json={"note": "dust"})
            assert r.status_code == 200, r.text
            assert (r.json()["verdict"], r.json()["reason"], r.json()["status"]) == (
                "suppressed",
                "operator",
                "cleared",
            )
            # A confirmed alarm cannot be dismissed.
            r = api.post(f"/api/v1/alarms/{detector['id']}/dismiss", json={"note": "no"})
            assert r.status_code == 409
        # A frame whose count says two objects and holds one (a panel's bug; the
        # outside check's lost fire): the complete one is taken, its fire
        # raised, and the whole frame kept as a reject that says so.
        one = component_status(1, 1, 42, 0x108, 0x0003, "5F", now)
        dev.send(frame(14, bytes([2, 2]) + one, source=SOURCE))
        assert dev.confirm() == 14
        assert wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_264"))["verdict"] == "pending"
        miscounted = [
            r["detail"]
            for r in api_get(api_url, "/api/v1/rejects", reason="bad_payload")["items"]
            if r["topic"] == "fs/v1/_gateway/gb26875/reject"
        ]
        assert miscounted == [
            "it carries FIRE ALARMS: point 1/1/264 (5F), raised; type 2 with 2 object(s) of "
            "46 bytes needs 94 bytes, got 48; the 1 complete object(s) in it were taken "
            f"(serial 14, from {miscounted[0].split('from ')[1]}"
        ]
        # A point an admin registered after the gateway listed the site (its
        # floor and zone set by hand): the gateway registers nothing over it
        # (an outside check found them overwritten with its guesses).
        point = {
            "id": "UITD-7_1_1_265",
            "site": site,
            "building": "B1",
            "floor": "5",
            "zone": "5F-west",
            "kind": "smoke",
            "name": "5F west A",
            "interval_s": 31_622_400,
        }
        with client(api_url) as api:
            assert api.post("/api/v1/devices", json=point).status_code == 200
        dev.send(status_frame(15, 42, 0x109, 0x0003, "5F西", now))
        assert dev.confirm() == 15
        assert wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_265"))["zone"] == "5F-west"
        stored = api_get(api_url, "/api/v1/devices/UITD-7_1_1_265")
        assert (stored["floor"], stored["zone"], stored["name"]) == ("5", "5F-west", "5F west A")
        # A device that connects per message (a connection open only a moment,
        # none open when the grace ends) is no outage per connection (an
        # outside check counted 35 offline alarms, then 6 in 12 s).
        dev.close()
        for serial in (16, 17):
            time.sleep(gwserver.OFFLINE_GRACE_S / 2)
            dev = Device(gw.port)
            dev.send(frame(serial, b"", source=SOURCE))
            assert dev.confirm() == serial
            dev.close()
        stranger.close()
        # The uitd went offline when its last connection closed, once.
        wait_for(lambda: alarm_of(api_url, "UITD-7", "offline"))
        time.sleep(1.0)
        offline = api_get(api_url, "/api/v1/alarms", device="UITD-7", type="offline")["items"]
        assert len(offline) == 1, offline


def test_operator_confirm_triggers_linkage(
    ingest_settings: Settings, api_url: str, db: str, mqtt_url: str, site: str
) -> None:
    register_uitd(api_url, site)
    with client(api_url) as api:
        evac = {"id": f"EV-{site}", "site": site, "building": "B1", "floor": "1"}
        r = api.post("/api/v1/devices", json={**evac, "zone": "stairs", "kind": "evac"})
        assert r.status_code in (200, 201), r.text
    commands = _Commands(mqtt_url, site)
    try:
        with running_ingest(ingest_settings), _gateway(mqtt_url, api_url) as gw:
            dev = Device(gw.port)
            dev.send(status_frame(1, 42, 0x105, 0x0003, "3F东走廊", local_now()))
            assert dev.confirm() == 1
            alarm = wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_261"))
            assert alarm["verdict"] == "pending"
            assert commands.received() == []  # nothing while it is pending
            with client(api_url) as api:
                r = api.post(f"/api/v1/alarms/{alarm['id']}/confirm", json={"note": "ok"})
                assert r.status_code == 200
            cmds = wait_for(commands.received)
            assert cmds[0]["cmd"] == "emergency"
            assert cmds[0]["alarm_id"] == alarm["id"]
            # The person's verdict is in the live stream, with the note.
            change = _stream_change(api_url, "UITD-7_1_1_261", "confirmed")
            assert change["note"] == "ok"
            assert change["alarm"]["reason"] == "operator"
            dev.close()
    finally:
        commands.close()


def _stream_change(api_url: str, device: str, action: str) -> dict[str, Any]:
    """The first change of `action` on the device's alarms in the SSE stream
    (replayed from the start with Last-Event-ID: 0)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Last-Event-ID": "0"}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=10)) as http,
        http.stream(
            "GET", f"{api_url}/api/v1/alarms/stream", params={"device": device}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                change: dict[str, Any] = orjson.loads(line[6:])
                if change["action"] == action:
                    return change
    raise AssertionError(f"no {action} change for {device} in the stream")


class _Commands:
    def __init__(self, url: str, site: str) -> None:
        ep = MqttEndpoint.parse(url)
        self._got: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid.uuid4().hex}")
        self.client.on_message = lambda c, u, m: self._got.append(orjson.loads(m.payload))
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(ep.host, ep.port)
        self.client.subscribe(f"fs/v1/{site}/+/cmd", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def received(self) -> list[dict[str, Any]]:
        return list(self._got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _DiesBeforeConfirm(Gateway):
    """A gateway that dies after the broker acknowledged a frame's messages and
    before it confirmed the frame (a crash at the worst moment)."""

    def _confirm(self, frame: Any, conn: Any, offset: Any) -> None:
        if frame.adu:
            conn.transport.abort()  # the device sees the connection die, no confirm
            return
        super()._confirm(frame, conn, offset)


def test_gateway_killed_between_publish_and_confirm_stores_once(
    ingest_settings: Settings, api_url: str, db: str, mqtt_url: str, site: str
) -> None:
    register_uitd(api_url, site)
    fire = status_frame(21, 42, 0x105, 0x0003, "3F东走廊", local_now())
    with running_ingest(ingest_settings) as ingest:
        with _gateway(mqtt_url, api_url, _DiesBeforeConfirm) as dying:
            dev = Device(dying.port)
            dev.send(fire)
            with pytest.raises((ConnectionError, AssertionError)):
                dev.confirm()
            dev.close()
        # Published before it died: stored already.
        wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_261"))
        # A new gateway process (nothing remembered); the device resends.
        with _gateway(mqtt_url, api_url) as fresh:
            dev = Device(fresh.port)
            dev.send(fire)
            assert dev.confirm() == 21
            dev.send(frame(22, b"", source=SOURCE))  # a heartbeat behind it, to wait on
            assert dev.confirm() == 22
            dev.close()
        # Ingest saw the resent messages again and dropped them as duplicates.
        assert ingest.service is not None
        wait_for(lambda: ingest.service.counters.duplicates >= 2)  # type: ignore[union-attr]
    events = query(
        db, "SELECT type FROM device_events WHERE device_id = 'UITD-7_1_1_261' ORDER BY type"
    )
    assert [e[0] for e in events] == ["panel_fire", "restore"]  # the fire once
    assert len(query(db, "SELECT 1 FROM alarms WHERE device_id = 'UITD-7_1_1_261'")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_no_confirm_until_the_broker_acknowledges(
    api_url: str, db: str, site: str, tmp_path: Any
) -> None:
    """A broker of this test only, stopped and started again."""
    port = _free_port()
    url = f"mqtt://127.0.0.1:{port}"

    def broker() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["mosquitto", "-p", str(port)], stderr=subprocess.DEVNULL)
        wait_for(lambda: _listening(port), timeout=10)
        return proc

    register_uitd(api_url, site)
    proc = broker()
    settings = Settings(mqtt_url=url, database_url=db, mqtt_client_id=f"t-{uuid.uuid4().hex[:8]}")
    try:
        with running_ingest(settings) as ingest, _gateway(url, api_url) as gw:
            dev = Device(gw.port)
            dev.send(frame(1, b"", source=SOURCE))
            assert dev.confirm() == 1
            proc.terminate()
            proc.wait(10)
            assert gw.gateway is not None
            wait_for(lambda: not gw.gateway.publisher.connected)  # type: ignore[union-attr]
            fire = status_frame(2, 42, 0x105, 0x0003, "3F东走廊", local_now())
            dev.send(fire)
            wait_for(lambda: gw.gateway.counters.unconfirmed >= 1)  # type: ignore[union-attr]
            assert dev.nothing_received()  # not passed on: not confirmed
            proc = broker()
            wait_for(lambda: gw.gateway.publisher.connected, timeout=30)  # type: ignore[union-attr]
            # This test's broker keeps no sessions across its restart: ingest must
            # have subscribed again before the resend (a production broker keeps
            # ingest's persistent session and the messages for it).
            assert ingest.service is not None
            wait_for(lambda: ingest.service.subscribed, timeout=30)  # type: ignore[union-attr]
            dev.send(fire)  # the device resends
            assert dev.confirm() == 2
            alarm = wait_for(lambda: alarm_of(api_url, "UITD-7_1_1_261"), timeout=30)
            assert alarm["verdict"] == "pending"
            dev.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class _gateway:
    def __init__(self, mqtt_url: str, api_url: str, cls: type[Gateway] = Gateway) -> None:
        self.thread = GatewayThread(mqtt_url, api_url, cls)

    def __enter__(self) -> GatewayThread:
        return self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.thread.stop()
