"""A site that falls silent as a whole raises one alarm (issue 16: alarm floods)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from firesafe.settings import Settings
from ingest.floods import FLOOD_MIN_DEVICES, FloodWatch
from tests.helpers import Publisher, register, running_ingest, wait_for
from tests.test_ingest_alarms import alarms, now_ms


def test_a_site_is_silent_when_half_its_devices_stop_within_one_interval() -> None:
    watch = FloodWatch()
    changes = [watch.went_offline("S", slot, 1_000 + slot, 10, 60_000) for slot in range(5)]
    assert changes[:4] == [None] * 4  # 4 of 10: devices, not the site
    opened = changes[4]
    assert opened is not None
    assert (opened.action, opened.silent, opened.of, opened.since_ms) == ("open", 5, 10, 1_000)
    assert watch.went_offline("S", 5, 1_010, 10, 60_000) is None  # already silent
    # Back: the site clears once fewer than half remain offline.
    assert [watch.came_back("S", s, 2_000, 10) for s in (0,)] == [None]
    cleared = watch.came_back("S", 1, 2_001, 10)
    assert cleared is not None
    assert (cleared.action, cleared.silent) == ("clear", 4)


def test_devices_falling_silent_far_apart_are_only_devices() -> None:
    watch = FloodWatch()
    for slot in range(6):  # one every two intervals
        assert watch.went_offline("S", slot, slot * 120_000, 6, 60_000) is None


def test_a_small_site_needs_the_minimum_count() -> None:
    watch = FloodWatch()
    results = [watch.went_offline("S", s, 0, 2, 60_000) for s in range(2)]
    assert results == [None, None]  # 2 of 2, but below FLOOD_MIN_DEVICES
    assert FLOOD_MIN_DEVICES > 2


@pytest.mark.integration
def test_a_silent_site_raises_one_alarm_that_its_device_alarms_point_to(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    devices = 8
    register(
        db,
        [
            {
                "id": f"{site}-H{i}",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "heat",
                "interval_s": 1,
            }
            for i in range(devices)
        ],
    )
    stop = threading.Event()

    def heartbeat() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            for i in range(devices):
                publisher.send(
                    f"fs/v1/{site}/{site}-H{i}/telemetry", {"ts": now_ms(), "seq": seq, "v": {}}
                )
            time.sleep(0.3)

    with running_ingest(ingest_settings):
        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        time.sleep(2.0)
        assert not [a for a in alarms(db, site) if a["type"] == "offline"]
        stop.set()  # the site's uplink fails: every device stops at once
        beat.join()
        site_level = wait_for(
            lambda: [
                a for a in alarms(db, site) if a["type"] == "offline" and a["device_id"] is None
            ],
            timeout=15,
        )
        site_alarm: dict[str, Any] = site_level[0]
        assert (site_alarm["reason"], site_alarm["status"]) == ("site_silent", "active")
        wait_for(
            lambda: len([a for a in alarms(db, site) if a["device_id"] is not None]) == devices
        )
        device_alarms = [a for a in alarms(db, site) if a["device_id"] is not None]
        assert all(a["detail"].get("cause") == site_alarm["id"] for a in device_alarms)
        # The line is back: the site's alarm clears with its devices'.
        for i in range(devices):
            publisher.send(
                f"fs/v1/{site}/{site}-H{i}/telemetry", {"ts": now_ms(), "seq": 999, "v": {}}
            )
        wait_for(
            lambda: all(
                a["status"] == "cleared" for a in alarms(db, site) if a["type"] == "offline"
            )
        )
    site_level = [a for a in alarms(db, site) if a["device_id"] is None]
    assert len(site_level) == 1  # one alarm for the site, never one per tick
