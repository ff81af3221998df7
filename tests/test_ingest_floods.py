"""A site or a gateway that falls silent as a whole raises one alarm (issue 16: floods)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from firesafe.settings import Settings
from ingest.floods import FLOOD_MIN_DEVICES, FloodWatch, GatewayMembers
from ingest.registry import Device, Registry
from ingest.silence import Silence
from tests.helpers import Publisher, query, register, running_ingest, wait_for
from tests.test_ingest_alarms import alarms, now_ms
from tests.test_notify_support import add_rule, add_target


def test_a_site_is_silent_when_half_its_devices_stop_within_one_interval() -> None:
    watch = FloodWatch()
    site = ("S", "")
    changes = [watch.went_offline(site, slot, 1_000 + slot, 10, 60_000) for slot in range(5)]
    assert changes[:4] == [None] * 4  # 4 of 10: devices, not the site
    opened = changes[4]
    assert opened is not None
    assert (opened.action, opened.silent, opened.of, opened.since_ms) == ("open", 5, 10, 1_000)
    assert opened.slots == (0, 1, 2, 3, 4)
    assert watch.went_offline(site, 5, 1_010, 10, 60_000) is None  # already silent
    # Back: the site clears once fewer than half remain offline.
    assert watch.came_back(0, 2_000, lambda g: 10) == []
    (cleared,) = watch.came_back(1, 2_001, lambda g: 10)
    assert (cleared.action, cleared.silent, cleared.group) == ("clear", 4, site)


def test_devices_back_leave_no_empty_groups_behind() -> None:
    """A device heard again touches only its own groups; an emptied, non-silent
    group is dropped (estates with many gateways must not grow without bound)."""
    watch = FloodWatch()
    site, gw = ("S", ""), ("S", "GW1")
    for slot in range(3):
        watch.went_offline(site, slot, 1_000, 100, 60_000)
        watch.went_offline(gw, slot, 1_000, 100, 60_000)
    watch.went_offline(("T", ""), 50, 1_000, 100, 60_000)
    for slot in range(3):
        assert watch.came_back(slot, 2_000, lambda g: 100) == []
    assert watch.offline == {("T", ""): {50: 1_000}}
    assert watch.groups_of == {50: {("T", "")}}
    watch.forget({"T"})
    assert watch.offline == {}
    assert watch.groups_of == {}


def test_devices_falling_silent_far_apart_are_only_devices() -> None:
    watch = FloodWatch()
    for slot in range(6):  # one every two intervals
        assert watch.went_offline(("S", ""), slot, slot * 120_000, 6, 60_000) is None


def test_a_small_site_needs_the_minimum_count() -> None:
    watch = FloodWatch()
    results = [watch.went_offline(("S", ""), s, 0, 2, 60_000) for s in range(2)]
    assert results == [None, None]  # 2 of 2, but below FLOOD_MIN_DEVICES
    assert FLOOD_MIN_DEVICES > 2


def test_a_gateway_is_silent_when_half_the_devices_heard_through_it_stop() -> None:
    members = GatewayMembers()
    gw1, gw2 = ("S", "GW1"), ("S", "GW2")
    members.heard(gw1, np.arange(0, 6))
    members.heard(gw2, np.arange(6, 12))
    members.heard(gw2, np.array([5, 5]))  # device 5 moved to the other gateway
    assert (members.count(gw1), members.count(gw2)) == (5, 7)
    assert members.group_of(5) == gw2
    assert members.group_of(0) == gw1
    assert members.group_of(99) is None  # never heard through a gateway
    watch = FloodWatch()
    changes = [watch.went_offline(gw1, s, 1_000, members.count(gw1), 60_000) for s in range(5)]
    assert changes[:4] == [None] * 4
    opened = changes[4]
    assert opened is not None
    assert (opened.gateway, opened.silent, opened.of, opened.slots) == (
        "GW1",
        5,
        5,
        (0, 1, 2, 3, 4),
    )
    members.forget(np.array([0]))
    assert members.count(gw1) == 4
    assert members.group_of(0) is None


def test_gateway_membership_drains_what_changed_and_restores_without_rewriting() -> None:
    members = GatewayMembers()
    gw1, gw2 = ("S", "GW1"), ("S", "GW2")
    members.heard(gw1, np.arange(0, 4))
    slots, groups = members.drain()
    assert (slots.tolist(), groups) == ([0, 1, 2, 3], [gw1] * 4)
    members.heard(gw1, np.arange(0, 4))  # the same gateway again: nothing to store
    assert members.drain()[0].tolist() == []
    members.heard(gw2, np.array([2]))
    slots, groups = members.drain()
    assert (slots.tolist(), groups) == ([2], [gw2])
    members.undrain(slots)  # storing failed: kept for the next drain
    assert members.drain()[0].tolist() == [2]
    restored = GatewayMembers()
    restored.restore(gw1, np.array([0, 1, 3]))
    restored.restore(gw2, np.array([2]))
    assert (restored.count(gw1), restored.group_of(2)) == (3, gw2)
    assert restored.drain()[0].tolist() == []  # came from the database


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

    add_target(db, f"{site}-duty", url="http://127.0.0.1:9/duty")
    add_rule(db, f"{site}-offline", types=["offline"], targets=[f"{site}-duty"], sites=[site])
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
    # Only the site's alarm is notified (no notifier runs: the rows wait); the
    # devices' own, held for their interval, were cancelled when linked.
    sent = query(
        db,
        "SELECT a.device_id, n.event, n.status FROM notifications n "
        "JOIN alarms a ON a.id = n.alarm_id WHERE a.site_id = %s AND n.status <> 'cancelled' "
        "ORDER BY n.seq",
        (site,),
    )
    assert sent == [(None, "confirmed", "pending"), (None, "cleared", "pending")]


class GatewayHeartbeat:
    """12 heat detectors of a site: 5 behind GW1, 5 behind GW2, 2 connected
    directly, all beating every 0.3 s until stopped; `gw1_up` cleared: GW1 fails.
    5 of 12 is not the site, 5 of 5 is the gateway."""

    def __init__(self, db: str, publisher: Publisher, site: str) -> None:
        self.site, self.publisher = site, publisher
        self.ids = [f"{site}-H{i}" for i in range(12)]
        register(
            db,
            [
                {
                    "id": d,
                    "site": site,
                    "building": "B",
                    "floor": "1",
                    "zone": "Z",
                    "kind": "heat",
                    "interval_s": 2,  # 6 s of silence: no false offline under CI load
                }
                for d in self.ids
            ],
        )
        self.gw1_up = threading.Event()
        self.gw1_up.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            ts = now_ms()
            for gw, members in (("GW1", self.ids[:5]), ("GW2", self.ids[5:10])):
                if gw == "GW1" and not self.gw1_up.is_set():
                    continue
                readings = [{"device": d, "ts": ts, "seq": seq, "v": {}} for d in members]
                self.publisher.send(
                    f"fs/v1/{self.site}/gateway/{gw}/batch", {"ts": ts, "readings": readings}
                )
            for d in self.ids[10:]:
                self.publisher.send(
                    f"fs/v1/{self.site}/{d}/telemetry", {"ts": ts, "seq": seq, "v": {}}
                )
            time.sleep(0.3)

    def __enter__(self) -> GatewayHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gateway_alarm_raised(db: str, site: str, gw1: list[str]) -> dict[str, Any]:
    """GW1's one `gateway_silent` alarm, once its 5 device alarms point to it."""
    group = wait_for(lambda: [a for a in alarms(db, site) if a["device_id"] is None], timeout=15)
    gw_alarm: dict[str, Any] = group[0]
    assert (gw_alarm["reason"], gw_alarm["detail"]["gateway"]) == ("gateway_silent", "GW1")
    wait_for(lambda: {a["device_id"] for a in alarms(db, site) if a["device_id"]} == set(gw1))
    device_alarms = [a for a in alarms(db, site) if a["device_id"] is not None]
    assert all(a["detail"].get("cause") == gw_alarm["id"] for a in device_alarms)
    return gw_alarm


@pytest.mark.integration
def test_a_gateway_silent_right_after_a_restart_is_still_one_alarm(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """Which gateway carries which device outlives the process: GW1 fails just
    before ingest stops, and the restarted ingest, which never hears GW1, still
    raises one gateway alarm and not five device alarms."""
    with GatewayHeartbeat(db, publisher, site) as beat:
        with running_ingest(ingest_settings):
            wait_for(
                lambda: (
                    query(
                        db,
                        "SELECT count(*) FROM gateway_members m "
                        "JOIN devices d ON d.id = m.device_id WHERE d.site_id = %s",
                        (site,),
                    )[0][0]
                    == 10
                ),
                timeout=15,
            )
            # GW1 fails; the last of its batches are taken before ingest stops,
            # so the restarted one has nothing of GW1 queued in its session.
            beat.gw1_up.clear()
            time.sleep(1.0)
        with running_ingest(ingest_settings):
            gateway_alarm_raised(db, site, beat.ids[:5])
    assert query(
        db,
        "SELECT m.gateway, count(*) FROM gateway_members m JOIN devices d ON d.id = m.device_id "
        "WHERE d.site_id = %s GROUP BY 1 ORDER BY 1",
        (site,),
    ) == [("GW1", 5), ("GW2", 5)]


@pytest.mark.integration
def test_a_silent_gateway_raises_one_alarm_and_its_site_none(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    beat = GatewayHeartbeat(db, publisher, site)
    with beat, running_ingest(ingest_settings):
        # Every device's heartbeats are stored: ingest has seen each gateway's members.
        wait_for(
            lambda: (
                query(
                    db,
                    "SELECT count(DISTINCT device_id) FROM telemetry WHERE device_id LIKE %s",
                    (f"{site}-%",),
                )[0][0]
                == 12
            ),
            timeout=15,
        )
        beat.gw1_up.clear()  # GW1 fails; GW2 and the direct devices go on
        gateway_alarm_raised(db, site, beat.ids[:5])
        beat.gw1_up.set()  # back: the gateway's alarm clears with its devices'
        wait_for(
            lambda: all(
                a["status"] == "cleared" for a in alarms(db, site) if a["type"] == "offline"
            )
        )
    group_level = [a for a in alarms(db, site) if a["device_id"] is None]
    assert [a["reason"] for a in group_level] == ["gateway_silent"]  # never the site


def _site_behind_gateways() -> Silence:
    """12 devices of site S: slots 0-4 heard through GW1, 5-9 through GW2, 10-11
    directly; all last heard at 0, offline after 3 x 2 s."""
    registry = Registry([Device(f"S-H{i}", i, "S", "B", "1", "Z", "heat", 2.0) for i in range(12)])
    silence = Silence(registry)
    slots = np.arange(12, dtype=np.int64)
    silence.configure(registry, slots, np.zeros(12, np.int64))
    silence.gateways.heard(("S", "GW1"), slots[:5])
    silence.gateways.heard(("S", "GW2"), slots[5:10])
    return silence


def test_a_whole_site_silent_is_one_site_alarm_though_a_gateway_is_judged_first() -> None:
    """Every device stops at once: GW1's five are judged first in the pass (5 of 5
    is the gateway), the site follows in the same pass (6 of 12): its one alarm
    stands for it all, no gateway alarm beside it (found by an outside check)."""
    silence = _site_behind_gateways()
    writes, changes = silence.silent(10_000)
    assert len(writes) == 12
    assert [(c.action, c.group) for c in changes] == [("open", ("S", ""))]


def test_a_gateway_silent_before_its_site_keeps_its_own_alarm() -> None:
    silence = _site_behind_gateways()
    later = np.arange(5, 12, dtype=np.int64)
    silence.supervisor.seen(later, np.full(later.size, 5_000, np.int64))
    _, first = silence.silent(7_000)  # only GW1's devices are past their limit
    assert [(c.action, c.group) for c in first] == [("open", ("S", "GW1"))]
    _, then = silence.silent(20_000)  # the rest of the site a pass later
    assert [(c.action, c.group) for c in then] == [("open", ("S", ""))]


def test_a_will_delivered_with_the_devices_newer_messages_is_old_news() -> None:
    """An outside check restarted the broker: the last will it had published on
    shutdown came back to ingest in one read with the device's retained
    `online` and its readings, and ingest cleared and reopened `offline` in
    that batch (a false alarm for 50 s). A will counts only when nothing newer
    of the device came with it; one arriving after them still counts."""
    from ingest.decode import Decoder, RawMessage

    registry = Registry([Device(f"S-H{i}", i, "S", "B", "1", "Z", "heat", 60.0) for i in range(2)])
    silence = Silence(registry)
    silence.configure(registry, np.arange(2, dtype=np.int64), np.zeros(2, np.int64))
    reading = b'{"ts": 1764072000000, "seq": 1, "v": {"temperature": 21.0}}'
    burst = [
        RawMessage("fs/v1/S/S-H0/status", b"offline", 5_000),  # the will, redelivered
        RawMessage("fs/v1/S/S-H0/status", b"online", 5_000),
        RawMessage("fs/v1/S/S-H0/telemetry", reading, 5_000),
        RawMessage("fs/v1/S/S-H1/telemetry", reading, 5_000),
        RawMessage("fs/v1/S/S-H1/status", b"offline", 5_001),  # a will after its reading
    ]
    writes, _ = silence.batch(Decoder(registry).decode(burst))
    assert [(w.device_id, w.action, w.reason) for w in writes] == [("S-H1", "open", "last_will")]


def test_a_will_the_broker_delivers_again_is_raised_once() -> None:
    """An outside check restarted the broker under 40 devices with wills: two
    got two offline alarms from one will. The will and the device's last
    reading were both in flight to ingest when the broker stopped; it sent
    them again (MQTT DUP), the reading first (it cleared the alarm, in a batch
    of its own), then the will (it opened a second one). A redelivered will
    within WILL_REDELIVERY_MS of the one raised is that same will; a will
    that is not a redelivery, or comes much later, still counts."""
    from ingest.decode import Decoder, RawMessage
    from ingest.silence import WILL_REDELIVERY_MS

    registry = Registry([Device(f"S-H{i}", i, "S", "B", "1", "Z", "heat", 60.0) for i in range(2)])
    silence = Silence(registry)
    silence.configure(registry, np.arange(2, dtype=np.int64), np.zeros(2, np.int64))
    decode = Decoder(registry).decode
    reading = b'{"ts": 1764072000000, "seq": 1, "v": {"temperature": 21.0}}'

    def changes(*burst: RawMessage) -> list[tuple[str, str, str]]:
        writes, _ = silence.batch(decode(list(burst)))
        return [(w.device_id, w.action, w.reason) for w in writes]

    for slot in ("S-H0", "S-H1"):  # the broker stops: both wills
        assert changes(RawMessage(f"fs/v1/S/{slot}/status", b"offline", 1_000)) == [
            (slot, "open", "last_will")
        ]
    # Back: each device's last reading, redelivered, then its will, redelivered.
    for slot in ("S-H0", "S-H1"):
        telemetry = RawMessage(f"fs/v1/S/{slot}/telemetry", reading, 6_000, dup=True)
        assert changes(telemetry) == [(slot, "clear", "back_online")]
    assert changes(RawMessage("fs/v1/S/S-H0/status", b"offline", 6_035, dup=True)) == []
    # Not a redelivery: a new will.
    assert changes(RawMessage("fs/v1/S/S-H1/status", b"offline", 6_040)) == [
        ("S-H1", "open", "last_will")
    ]
    # A redelivery long after the will raised is judged as a will again.
    late = RawMessage("fs/v1/S/S-H0/status", b"offline", 1_000 + WILL_REDELIVERY_MS + 1, dup=True)
    assert changes(late) == [("S-H0", "open", "last_will")]
