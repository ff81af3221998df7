"""Ingest's pipeline guarantees that its other tests do not reach: zone ids that
survive a registry reload, linkage that reaches the signs through broker
outages and restarts, and a batch acknowledged once whatever is retried."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detection import AlarmChange, Engine, Events, Readings
from firesafe import contract
from ingest.pipeline import per_device_steps
from ingest.registry import Device, Registry, ZoneIds
from tests.test_detection_rules import NR, RI, T0, Profile, S, smouldering

EV_ACTIVATED = contract.EVENT_TYPES.index("activated")

DEVICES = [
    Device("A", 0, "S1", "B", "1", "Z1", "smoke", 10.0),
    Device("B", 1, "S1", "B", "1", "Z2", "smoke", 10.0),
    Device("C", 2, "S1", "B", "1", "Z1", "heat", 10.0),
    Device("D", 3, "S1", "B", "2", "Z1", "smoke", 10.0),
]
PROFILES: dict[int, Profile] = {0: smouldering(100, 1.0), 1: smouldering(130, 1.0)}


def run(reloads: dict[int, list[int]], shared_zone_ids: bool = True) -> list[AlarmChange]:
    """Feed the profiles in 30 s batches; before batch i, reload the registry from
    the device rows in the order `reloads[i]` (as ingest does on any upsert)."""
    zone_ids = ZoneIds()
    engine = Engine(capacity=8)
    engine.configure(*Registry(DEVICES, zone_ids).detection_config())
    out: list[AlarmChange] = []
    for i, lo in enumerate(range(0, 600, 30)):
        if i in reloads:
            rows = [DEVICES[j] for j in reloads[i]]
            registry = Registry(rows, zone_ids if shared_zone_ids else ZoneIds())
            engine.configure(*registry.detection_config())
        rows_ = []
        for slot, f in PROFILES.items():
            for t in range(lo, lo + 30, 10):
                v = np.full(NR, np.nan)
                for name, x in f(float(t)).items():
                    v[RI[name]] = x
                rows_.append((T0 + t * S, slot, v))
        rows_.sort(key=lambda r: (r[0], r[1]))
        out += engine.process(
            Readings(
                np.array([r[1] for r in rows_], np.int64),
                np.array([r[0] for r in rows_], np.int64),
                np.array([r[2] for r in rows_]).reshape(len(rows_), NR),
            ),
            Events(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16)),
        )
        out += engine.advance(T0 + (lo + 30) * S)
    return out


def fire_reasons(changes: list[AlarmChange]) -> list[tuple[int, str, str, tuple[int, ...]]]:
    return [(c.slot, c.verdict, c.reason, c.related) for c in changes if c.alarm_type == "fire"]


def test_a_batch_is_cut_for_detection_only_where_a_device_has_more_than_the_limit() -> None:
    slot = np.array([5, 1, 5, 5, 2, 5, 1, 5], np.int64)
    assert per_device_steps(slot, 8) is None
    assert per_device_steps(slot, 5) is None  # device 5 has five rows
    parts = per_device_steps(slot, 2)
    assert parts is not None
    # Device 5's rows two by two, in arrival order; the others in the first part.
    assert [p.tolist() for p in parts] == [[0, 1, 2, 4, 6], [3, 5], [7]]


def test_a_device_backlog_detected_in_parts_gives_the_verdicts_of_one_step() -> None:
    """Ingest detects a batch with a device's backlog of thousands in parts
    (`per_device_steps`, the event loop served in between), the events with
    the last part: the same alarms as the batch in one step. A smouldering
    fire in a 3,000-reading backlog (1 s apart) of one detector, its
    neighbour and a call point pressed in another zone."""
    n = 3_000
    fire = smouldering(600.0, 1.2)
    slot = np.array([0] * n + [1] * 300, np.int64)
    ts = np.array([T0 + i * 1_000 for i in range(n)] + [T0 + i * 10_000 for i in range(300)])
    values = np.full((slot.size, NR), np.nan)
    for i in range(slot.size):
        row = fire(float(ts[i] - T0) / 1000) if slot[i] == 0 else {"obscuration": 0.1}
        for name, x in row.items():
            values[i, RI[name]] = x
    events = Events(
        np.array([2], np.int64), np.array([T0 + 1_500_000], np.int64), np.array([EV_ACTIVATED])
    )
    outcomes = []
    for limit in (10**9, 1_000, 333):
        eng = Engine(capacity=4)
        eng.configure([0, 1, 2], [0, 0, 3], [1, 1, 2], [{}] * 3)
        parts = per_device_steps(slot, limit) or [np.arange(slot.size)]
        changes: list[AlarmChange] = []
        for part in parts:
            last = part is parts[-1]
            readings = Readings(slot[part], ts[part], values[part])
            changes += eng.process(readings, events if last else Events.empty(), T0 + 3_000_500)
        # (Output order across kinds follows the parts; each alarm's course does not.)
        outcomes.append(
            sorted((c.slot, c.alarm_type, c.at_ms, c.action, c.verdict, c.reason) for c in changes)
        )
    assert any(o[1] == "fire" and o[3:5] == ("verdict", "confirmed") for o in outcomes[0])
    assert any(o[0] == 2 and o[5] == "call_point" for o in outcomes[0])
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]


def test_detectors_in_two_zones_never_corroborate_each_other_across_a_reload() -> None:
    baseline = fire_reasons(run({}))
    assert baseline, "both detectors alarm"
    assert all(reason != "coincidence" for _, _, reason, _ in baseline)
    # A reload between A's alarm and B's, rows in another order: same verdicts.
    assert fire_reasons(run({10: [3, 2, 1, 0]})) == baseline


def test_a_zone_keeps_its_id_whatever_the_row_order() -> None:
    zone_ids = ZoneIds()
    first = Registry(DEVICES, zone_ids).zone.copy()
    again = Registry(list(reversed(DEVICES)), zone_ids).zone
    assert first.tolist() == again.tolist()
    # ...while ids taken afresh from row order would renumber the zones.
    assert Registry(list(reversed(DEVICES))).zone.tolist() != first.tolist()


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.integers(min_value=0, max_value=19),
        st.permutations(list(range(len(DEVICES)))),
        max_size=4,
    ),
    st.booleans(),
)
def test_reloading_the_registry_in_any_order_gives_the_same_verdicts(
    reloads: dict[int, list[int]], shared_zone_ids: bool
) -> None:
    """With stable ids nothing moves; with renumbered ids (a device moved to
    another zone does the same) the engine re-keys its zone bookkeeping."""
    assert fire_reasons(run(reloads, shared_zone_ids)) == fire_reasons(run({}))


# --------------------------------------------------------------- integration
# Linkage through the outbox and batches acknowledged once, on the real broker
# and database.

import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import psycopg  # noqa: E402
import pytest  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from firesafe.embedded import EmbeddedBroker, free_port  # noqa: E402
from firesafe.settings import MqttEndpoint, Settings  # noqa: E402
from ingest.mqtt import MqttSource  # noqa: E402
from tests.helpers import Publisher, query, register, running_ingest, wait_for  # noqa: E402
from tests.test_ingest_alarms import alarms, estate, now_ms, person_clears  # noqa: E402


class Sign:
    """An evacuation sign's side: a persistent session subscribed to its site's
    command topics, reconnecting by itself (as a real device would)."""

    def __init__(self, url: str, site: str) -> None:
        ep = MqttEndpoint.parse(url)
        self.received: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sign-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"fs/v1/{site}/+/cmd", qos=1)
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(orjson.loads(message.payload))
            self.topics.append(message.topic)

    def commands(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(t.split("/")[3], p) for t, p in zip(self.topics, self.received, strict=True)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def commands_of(db: str, site: str) -> list[tuple[str, str, str]]:
    return [
        (r[0], r[1], r[2])
        for r in query(
            db,
            "SELECT device_id, cmd, state FROM linkage_commands WHERE site_id = %s ORDER BY id",
            (site,),
        )
    ]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_commands_written_while_the_broker_is_down_reach_the_signs(
    db: str, tmp_path: Path, site: str
) -> None:
    register(db, estate(site))
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    url = broker.start()
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"pipe-{site}", ingest_mode="single"
    )
    sign = Sign(url, site)
    try:
        with running_ingest(settings), psycopg.connect(db) as blocker:
            # Hold the outbox: the fire's transaction waits at its commands...
            blocker.execute("LOCK TABLE linkage_commands IN ACCESS EXCLUSIVE MODE")
            pub = Publisher(url)
            pub.send(
                f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
            )
            pub.close()
            wait_for(
                lambda: (
                    query(
                        db,
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE NOT l.granted AND a.application_name = 'firesafe-ingest'",
                    )[0][0]
                    > 0
                )
            )
            broker.stop()  # ... the broker goes away before anything is published ...
            blocker.rollback()  # ... and the fire commits with its commands pending.
            wait_for(lambda: [c[2] for c in commands_of(db, site)] == ["pending"] * 3)
            broker.start()
            wait_for(lambda: len(sign.commands()) >= 3, timeout=40)
            wait_for(lambda: [c[2] for c in commands_of(db, site)] == ["acknowledged"] * 3)
        got = {device: p for device, p in sign.commands()}
        assert got[f"{site}-EX1"]["direction"] == "left"
        assert {p["cmd"] for p in got.values()} == {"emergency"}
        fire = next(a for a in alarms(db, site) if a["type"] == "fire")
        assert all(p["alarm_id"] == fire["id"] for p in got.values())
        # One fire, opened once, although its message was delivered twice (its
        # acknowledgement was lost with the broker).
        assert len([a for a in alarms(db, site) if a["type"] == "fire"]) == 1
    finally:
        sign.close()
        broker.stop()


@pytest.mark.integration
def test_a_fire_confirmed_before_a_restart_and_cleared_after_it_returns_the_signs_to_normal(
    db: str, ingest_settings: Settings, publisher: Publisher, mqtt_url: str, site: str
) -> None:
    register(db, estate(site))
    sign = Sign(mqtt_url, site)
    try:
        with running_ingest(ingest_settings):
            publisher.send(
                f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
            )
            wait_for(lambda: len(sign.commands()) == 3)
            wait_for(lambda: {c[2] for c in commands_of(db, site)} == {"acknowledged"})
        fire = next(a for a in alarms(db, site) if a["type"] == "fire")
        with running_ingest(ingest_settings):
            person_clears(db, fire["id"])
            wait_for(lambda: sum(p["cmd"] == "normal" for _, p in sign.commands()) == 3)
            wait_for(
                lambda: (
                    [c[1:] for c in commands_of(db, site)][-3:] == [("normal", "acknowledged")] * 3
                )
            )
        # The restart itself re-commanded nothing: the signs already showed the fire.
        assert [p["cmd"] for _, p in sign.commands()] == ["emergency"] * 3 + ["normal"] * 3
        # The `normal` commands answer the cleared alarm (listed with it by the API).
        normal = query(
            db,
            "SELECT alarm_id FROM linkage_commands WHERE site_id = %s AND cmd = 'normal'",
            (site,),
        )
        assert [r[0] for r in normal] == [fire["id"]] * 3
    finally:
        sign.close()


@pytest.mark.integration
def test_signs_commanded_after_a_restart_during_a_fire_when_the_commands_were_lost(
    db: str, ingest_settings: Settings, publisher: Publisher, mqtt_url: str, site: str
) -> None:
    """Commands written but never acknowledged before a crash go out after the restart."""
    register(db, estate(site))
    with running_ingest(ingest_settings):
        publisher.send(
            f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
        )
        wait_for(lambda: len(commands_of(db, site)) == 3)
    # As if the process had died before the broker acknowledged them:
    query(
        db, "UPDATE linkage_commands SET state = 'pending' WHERE site_id = %s RETURNING id", (site,)
    )
    sign = Sign(mqtt_url, site)
    try:
        with running_ingest(ingest_settings):
            wait_for(lambda: len(sign.commands()) == 3)
            wait_for(lambda: {c[2] for c in commands_of(db, site)} == {"acknowledged"})
        assert len(commands_of(db, site)) == 3  # resent, not rewritten
    finally:
        sign.close()


@pytest.mark.integration
def test_killed_database_sessions_neither_duplicate_alarms_nor_acknowledgements(
    db: str,
    ingest_settings: Settings,
    publisher: Publisher,
    site: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = 40
    register(
        db,
        [
            {
                "id": f"{site}-CP{i}",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": f"Z{i}",
                "kind": "mcp",
            }
            for i in range(points)
        ],
    )
    dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    acks: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            query(
                db,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'firesafe-ingest' AND datname = %s "
                "AND pid <> pg_backend_pid()",
                (dbname,),
            )
            time.sleep(0.15)

    real_ack = MqttSource.ack

    def counting_ack(self: MqttSource, messages: Any) -> int:
        if self.connected:  # what actually goes out: this connection's messages
            acks.extend(
                (id(self), m.generation, m.mid)
                for m in messages
                if m.qos and m.generation == self.generation
            )
        return real_ack(self, messages)

    monkeypatch.setattr(MqttSource, "ack", counting_ack)
    with running_ingest(ingest_settings):
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            for i in range(points):
                publisher.send(
                    f"fs/v1/{site}/{site}-CP{i}/event",
                    {"ts": now_ms(), "seq": 1, "type": "activated"},
                )
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join()
        wait_for(
            lambda: len([a for a in alarms(db, site) if a["type"] == "fire"]) == points, timeout=60
        )
        # Every message acknowledged (at least once: a redelivery after a reconnect
        # is a new delivery), on whichever connection it came.
        wait_for(lambda: len(acks) >= points, timeout=30)
    fires = [a for a in alarms(db, site) if a["type"] == "fire"]
    assert sorted(a["device_id"] for a in fires) == sorted(f"{site}-CP{i}" for i in range(points))
    opened = query(
        db,
        "SELECT l.alarm_id, count(*) FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id "
        "WHERE a.site_id = %s AND l.action = 'opened' GROUP BY l.alarm_id",
        (site,),
    )
    assert len(opened) == points
    assert all(n == 1 for _, n in opened)
    assert len(acks) == len(set(acks)), "a message was acknowledged twice"


@pytest.mark.integration
def test_a_re_registration_between_two_zones_alarms_never_makes_them_coincide(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """Through the contract: detectors in two zones, one alarms, a device is
    re-registered (upsert, registry reload), the other alarms: neither fire is
    confirmed by coincidence (zone ids are stable)."""
    devices = [
        {
            "id": f"{site}-A",
            "site": site,
            "building": "B",
            "floor": "1",
            "zone": "Z1",
            "kind": "smoke",
        },
        {
            "id": f"{site}-B",
            "site": site,
            "building": "B",
            "floor": "1",
            "zone": "Z2",
            "kind": "smoke",
        },
        {
            "id": f"{site}-C",
            "site": site,
            "building": "B",
            "floor": "1",
            "zone": "Z1",
            "kind": "heat",
        },
    ]
    register(db, devices)
    t0 = now_ms() - 600_000
    profiles = {f"{site}-A": smouldering(100, 1.0), f"{site}-B": smouldering(130, 1.0)}

    def send(lo: int, hi: int) -> None:
        for t in range(lo, hi, 10):
            for device, f in profiles.items():
                publisher.send(
                    f"fs/v1/{site}/{device}/telemetry",
                    {"ts": t0 + t * 1000, "seq": t, "v": f(float(t))},
                )

    def fires() -> list[dict[str, Any]]:
        return [a for a in alarms(db, site) if a["type"] == "fire"]

    with running_ingest(ingest_settings) as ingest:
        send(0, 300)
        wait_for(lambda: [a["device_id"] for a in fires()] == [f"{site}-A"])
        assert ingest.service is not None
        version = ingest.service._registry_version
        register(db, [{**devices[2], "interval_s": 20}])  # an upsert: the registry reloads
        wait_for(lambda: ingest.service is not None and ingest.service._registry_version != version)
        send(300, 600)
        wait_for(lambda: len(fires()) == 2 and all(a["verdict"] == "confirmed" for a in fires()))
    assert all(a["reason"] != "coincidence" for a in fires())


@pytest.mark.integration
def test_a_pending_fire_on_a_detector_that_falls_silent_is_still_decided(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """The only device of the estate reports a rising smoke level, then nothing
    (the fire took it): with no traffic at all, its window is still closed on the
    arrival clock and the fire confirmed."""
    device = f"{site}-S"
    register(
        db,
        [
            {
                "id": device,
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "smoke",
                "interval_s": 1,
            }
        ],
    )
    profile = smouldering(20, 3.0)
    t0 = now_ms() - 120_000

    def fire() -> list[dict[str, Any]]:
        return [a for a in alarms(db, site) if a["type"] == "fire"]

    def send(t: int) -> None:
        publisher.send(
            f"fs/v1/{site}/{device}/telemetry",
            {"ts": t0 + t * 1000, "seq": t, "v": profile(float(t))},
        )

    with running_ingest(ingest_settings):
        t = 0
        while not fire() and t < 118:  # until the fire opens (pending)
            send(t)
            t += 2
            if t % 20 == 0:
                time.sleep(0.3)  # let ingest commit between bursts
        wait_for(lambda: fire(), timeout=10)
        opened = fire()[0]["opened_at"].timestamp() * 1000
        deadline = opened + 30_000  # the default verification window
        # It reports through most of its window, then nothing: its last reading
        # 8 s before the deadline, so no reading of its own can close the window.
        while t0 + t * 1000 <= deadline - 8_000:
            send(t)
            t += 2
        # Silent for 3 x interval past when its deadline would have arrived.
        wait_for(lambda: fire()[0]["verdict"] != "pending", timeout=90)
    assert fire()[0]["verdict"] == "confirmed"


@pytest.mark.integration
def test_a_far_future_reading_neither_blinds_its_detector_nor_goes_unseen(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """One reading dated 2099 on a smoke detector, then a real fire on it: the
    fire is raised, and the quarantined reading is counted in device_state."""
    device = f"{site}-S"
    register(
        db,
        [
            {
                "id": device,
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "smoke",
                "interval_s": 10,
            }
        ],
    )
    topic = f"fs/v1/{site}/{device}/telemetry"
    t0 = now_ms() - 700_000
    profile = smouldering(100, 1.0)
    with running_ingest(ingest_settings):
        publisher.send(topic, {"ts": 4_070_908_800_000, "seq": 0, "v": {"obscuration": 0.1}})
        for t in range(0, 700, 10):
            publisher.send(topic, {"ts": t0 + t * 1000, "seq": t + 1, "v": profile(float(t))})
        wait_for(lambda: [a for a in alarms(db, site) if a["type"] == "fire"], timeout=30)
        wait_for(
            lambda: (
                query(db, "SELECT quarantined FROM device_state WHERE device_id = %s", (device,))
                == [(1,)]
            ),
            timeout=15,
        )
