"""Ingest restarted between the steps of an alarm: what it knew must come back
from the database (latching, pending windows, supervision, linkage)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from firesafe.settings import Settings
from tests.helpers import Publisher, Subscriber, drain, query, register, running_ingest, wait_for
from tests.test_ingest_alarms import alarms, person_clears

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def smoke(site: str, zone: str = "Z") -> dict[str, object]:
    return {"id": f"{site}-S", "site": site, "building": "B", "floor": "1", "zone": zone,
            "kind": "smoke"}  # fmt: skip


def readings(pub: Publisher, site: str, dev: str, t0: int, seqs: range, obscuration: float) -> None:
    for i in seqs:
        pub.send(
            f"fs/v1/{site}/{dev}/telemetry",
            {
                "ts": t0 + i * 10_000,
                "seq": i,
                "v": {"obscuration": obscuration, "temperature": 21.0},
            },
        )


def fires(db: str, site: str) -> list[dict[str, Any]]:
    return [a for a in alarms(db, site) if a["type"] == "fire"]


def test_confirmed_fire_latches_across_a_restart(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, [smoke(site)])
    dev = f"{site}-S"
    t0 = now_ms() - 600_000
    with running_ingest(ingest_settings):
        readings(publisher, site, dev, t0, range(0, 6), 0.1)
        readings(publisher, site, dev, t0, range(6, 11), 5.0)  # 40 s at 5 %/m
        wait_for(lambda: [f["verdict"] for f in fires(db, site)] == ["confirmed"])
    with running_ingest(ingest_settings):
        # Still burning, then the smoke clears: the same alarm stays open.
        readings(publisher, site, dev, t0, range(11, 16), 5.0)
        readings(publisher, site, dev, t0, range(16, 20), 0.1)
        drain(db, publisher, site)
        rows = fires(db, site)
        assert [(r["verdict"], r["status"]) for r in rows] == [("confirmed", "active")]
        # A person clears it; a fire after that opens a new alarm (the restarted
        # engine knows both the latched alarm and the clearing).
        person_clears(db, rows[0]["id"])
        wait_for(lambda: fires(db, site)[0]["status"] == "cleared")
        # The device goes on reporting smoke (ingest learns of the clearing within
        # its poll interval): a new alarm opens on one of these readings.
        seq = iter(range(20, 200))

        def refired() -> bool:
            i = next(seq)
            readings(publisher, site, dev, t0, range(i, i + 1), 5.0)
            return len(fires(db, site)) == 2

        wait_for(refired, timeout=30, interval=0.5)
    assert [r["status"] for r in fires(db, site)] == ["cleared", "active"]


def test_pending_fire_is_resolved_after_a_restart(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """Ingest stops inside a verification window; the next ingest resolves the
    same alarm with the readings that follow (one alarm, confirmed 30 s after it opened)."""
    register(db, [smoke(site)])
    dev = f"{site}-S"
    t0 = now_ms() - 600_000
    with running_ingest(ingest_settings):
        readings(publisher, site, dev, t0, range(0, 6), 0.1)
        readings(publisher, site, dev, t0, range(6, 8), 5.0)  # opened at seq 6, 10 s in
        wait_for(lambda: [f["verdict"] for f in fires(db, site)] == ["pending"])
        drain(db, publisher, site)
    with running_ingest(ingest_settings):
        readings(publisher, site, dev, t0, range(8, 12), 5.0)
        wait_for(lambda: [f["verdict"] for f in fires(db, site)] == ["confirmed"])
        drain(db, publisher, site)
    rows = fires(db, site)
    assert len(rows) == 1
    opened = rows[0]["opened_at"].timestamp()
    assert rows[0]["confirmed_at"].timestamp() - opened == pytest.approx(30.0)
    assert opened * 1000 == pytest.approx(t0 + 60_000)


def test_a_steam_window_open_across_a_restart_is_still_steam(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """A shower fills a bathroom: humidity jumps, then the droplets reach a
    multi-criteria detector's chamber. Ingest stops (or its shard is taken
    over) while that window is open. The next owner replays the zone's last
    minutes: the steam it saw before the window still suppresses it. (It used
    to restore a bare window, take the device for silent, and confirm a fire:
    evacuation for a shower.)"""
    register(db, [{**smoke(site, zone="Bath"), "id": f"{site}-M", "kind": "multi"}])
    dev = f"{site}-M"
    t0 = now_ms() - 600_000

    def send(seqs: range, obscuration: float, humidity: float) -> None:
        for i in seqs:
            v = {"obscuration": obscuration, "temperature": 24.0, "co": 1.0, "humidity": humidity}
            publisher.send(
                f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i * 10_000, "seq": i, "v": v}
            )

    with running_ingest(ingest_settings):
        send(range(0, 6), 0.2, 50.0)
        send(range(6, 7), 0.4, 70.0)  # the shower: humidity jumps first (steam) ...
        send(range(7, 8), 0.4, 90.0)  # ... and stays high, under condensation
        send(range(8, 10), 4.0, 90.0)  # then the optical chamber: the window opens at seq 8
        wait_for(lambda: [f["verdict"] for f in fires(db, site)] == ["pending"])
        drain(db, publisher, site)
    with running_ingest(ingest_settings):
        send(range(10, 16), 4.0, 90.0)
        wait_for(lambda: fires(db, site)[0]["verdict"] != "pending")
        drain(db, publisher, site)
    rows = fires(db, site)
    assert [(r["verdict"], r["reason"]) for r in rows] == [("suppressed", "steam_signature")]
    assert rows[0]["opened_at"].timestamp() * 1000 == pytest.approx(t0 + 80_000)


def test_supervision_across_a_restart(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """An outage of ingest is not an outage of the estate: after a restart a
    device is given 3 x interval_s from the restart, not from its last message
    before it; an offline alarm open before the restart is the one cleared after."""
    quiet = {"id": f"{site}-Q", "site": site, "building": "B", "floor": "1", "zone": "Z",
             "kind": "heat", "interval_s": 1}  # fmt: skip
    chatty = {**quiet, "id": f"{site}-C", "interval_s": 1}
    register(db, [quiet, chatty])
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{site}-C/telemetry", {"ts": now_ms(), "seq": 1, "v": {}})
        wait_for(
            lambda: (
                {a["device_id"] for a in alarms(db, site) if a["type"] == "offline"}
                == {f"{site}-Q", f"{site}-C"}
            ),
            timeout=20,
        )
    # Ingest is down for longer than 3 x interval_s: that is the scenario, not a wait.
    time.sleep(4.0)
    restarted = query(db, "SELECT now()")[0][0]
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{site}-C/telemetry", {"ts": now_ms(), "seq": 2, "v": {}})
        wait_for(
            lambda: (
                [a["status"] for a in alarms(db, site) if a["device_id"] == f"{site}-C"]
                == ["cleared"]
            )
        )
        drain(db, publisher, site)
    rows = [a for a in alarms(db, site) if a["type"] == "offline"]
    # One alarm per device: the restart neither duplicated nor forgot them.
    assert sorted((a["device_id"], a["status"]) for a in rows) == [
        (f"{site}-C", "cleared"),
        (f"{site}-Q", "active"),
    ]
    assert all(a["opened_at"] < restarted for a in rows)


def test_supervision_clock_restarts_with_ingest(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    dev = {"id": f"{site}-H", "site": site, "building": "B", "floor": "1", "zone": "Z",
           "kind": "heat", "interval_s": 1}  # fmt: skip
    register(db, [dev])
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{site}-H/telemetry", {"ts": now_ms(), "seq": 1, "v": {}})
        drain(db, publisher, site)
    assert alarms(db, site) == []  # stopped before 3 s of silence
    time.sleep(4.0)  # ingest's outage, longer than 3 x interval_s
    restarted = query(db, "SELECT now()")[0][0]
    with running_ingest(ingest_settings):
        rows = wait_for(lambda: alarms(db, site), timeout=20)
    assert (rows[0]["type"], rows[0]["reason"]) == ("offline", "silent")
    # Judged from the restart (3 s of silence after it), not from the last message.
    assert (rows[0]["opened_at"] - restarted).total_seconds() >= 3.0 - 0.05


def test_linkage_after_a_restart_sends_normal(
    db: str, ingest_settings: Settings, publisher: Publisher, mqtt_url: str, site: str
) -> None:
    """A fire confirmed before the restart, cleared after it: the signs that
    were commanded to `emergency` are sent `normal`."""
    base = {"site": site, "building": "B1", "floor": "1"}
    register(
        db,
        [
            {**base, "id": f"{site}-CP", "zone": "East", "kind": "mcp"},
            {**base, "id": f"{site}-EX", "zone": "Hall", "kind": "evac",
             "routes": {"left": "West", "right": "East"}},
        ],
    )  # fmt: skip
    signs = Subscriber(mqtt_url, f"fs/v1/{site}/+/cmd")
    try:

        def commands() -> list[dict[str, Any]]:
            return [orjson.loads(p) for _, p, _ in signs.messages()]

        with running_ingest(ingest_settings):
            publisher.send(
                f"fs/v1/{site}/{site}-CP/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
            )
            wait_for(lambda: [c["cmd"] for c in commands()] == ["emergency"])
        fire = next(a for a in alarms(db, site) if a["type"] == "fire")
        with running_ingest(ingest_settings):
            person_clears(db, fire["id"])
            wait_for(lambda: [c["cmd"] for c in commands()] == ["emergency", "normal"], timeout=20)
    finally:
        signs.close()


def test_a_learnt_drift_baseline_outlives_a_restart(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """A smoke chamber read 0.4 %/m of clean air for over two hours: detection
    learnt a baseline of 0.2 %/m, stored in device_state. After a restart,
    3.15 %/m raw (2.95 compensated) is no alarm on it, while a detector of the
    same site without that history opens one on the same reading."""
    learnt, fresh = f"{site}-L", f"{site}-F"
    register(
        db,
        [
            {**smoke(site), "id": learnt, "interval_s": 600},
            {**smoke(site, zone="Z2"), "id": fresh, "interval_s": 600},
        ],
    )
    hour = 3_600_000
    t0 = (now_ms() // hour - 3) * hour  # three clock hours back: two whole epochs
    with running_ingest(ingest_settings):
        for i in range(0, 2 * 6 + 2):  # every 10 min, 0:00 .. 2:10
            publisher.send(
                f"fs/v1/{site}/{learnt}/telemetry",
                {"ts": t0 + i * 600_000, "seq": i, "v": {"obscuration": 0.4, "temperature": 21.0}},
            )
        wait_for(
            lambda: (
                query(db, "SELECT drift_baseline FROM device_state WHERE device_id = %s", (learnt,))
                == [(pytest.approx(0.2),)]
            ),
            timeout=30,
        )
    with running_ingest(ingest_settings):
        at = t0 + 3 * hour
        for dev, seq in ((learnt, 100), (fresh, 0)):
            for j in range(4):
                publisher.send(
                    f"fs/v1/{site}/{dev}/telemetry",
                    {
                        "ts": at + j * 10_000,
                        "seq": seq + j,
                        "v": {"obscuration": 3.15, "temperature": 21.0},
                    },
                )
        wait_for(lambda: [f["device_id"] for f in fires(db, site)] == [fresh])
        drain(db, publisher, site)
        assert [f["device_id"] for f in fires(db, site)] == [fresh]
