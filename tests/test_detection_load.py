"""Verdicts that do not depend on load (issue 16 item 1).

A group of devices whose messages arrive 90-150 s behind the rest (a lagging
publisher connection, a gateway backlog), the arrival stream cut into
batches every way hypothesis finds, must give the alarms of the same stream
fully sorted by event time: same type, action, verdict, reason and event
times. Windows close on each device's own clock; silence is judged on arrival
time, so a device whose data are merely late is never taken for silent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detection import AlarmChange, Engine, Events, Readings, kernel, params
from firesafe import contract
from tests.helpers import examples

RI = contract.READING_INDEX
NR = len(contract.READINGS)
EV = {n: i for i, n in enumerate(contract.EVENT_TYPES)}
K = {n: i for i, n in enumerate(contract.KINDS)}
T0 = 1_764_072_000_000
INTERVAL_MS = 5_000
SAMPLES = 60
FAR = 10**15

# (arrival, ts, slot, is_event, payload)
Item = tuple[int, int, int, bool, object]


@dataclass
class Stream:
    slots: list[int]
    kinds: list[int]
    zones: list[int]
    items: list[Item]  # in arrival order


def _values(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Clean readings with one episode: a spike, a decaying aerosol, a fire, or nothing."""
    v = np.full((SAMPLES, NR), np.nan)
    i = np.arange(SAMPLES)
    ep = str(rng.choice(["none", "spike", "spike2", "decay", "fire"]))
    at = int(rng.integers(5, SAMPLES - 10))
    if kind in ("smoke", "multi", "heat"):
        v[:, RI["temperature"]] = 21.0 + rng.normal(0, 0.05, SAMPLES)
    if kind in ("smoke", "multi"):
        obs = 0.1 + rng.normal(0, 0.02, SAMPLES)
        if ep in ("spike", "spike2"):
            obs[at : at + (1 if ep == "spike" else 2)] += rng.uniform(6, 15)
        elif ep == "decay":
            obs += np.where(i >= at, rng.uniform(3.5, 6) * np.exp(-(i - at) / 4.0), 0.0)
        elif ep == "fire":
            obs += np.clip(i - at, 0, None) * rng.uniform(0.3, 2.0)
        v[:, RI["obscuration"]] = obs
    if kind == "multi":
        co = 1.0 + rng.normal(0, 0.2, SAMPLES)
        if ep == "fire" and rng.random() < 0.5:
            co += np.clip(i - at, 0, None) * rng.uniform(1, 5)
        v[:, RI["co"]] = co
        v[:, RI["humidity"]] = 45.0 + rng.normal(0, 0.3, SAMPLES)
    if kind == "heat":
        t = v[:, RI["temperature"]]
        if ep in ("spike", "spike2"):
            t[at : at + (1 if ep == "spike" else 2)] += rng.uniform(40, 60)
        elif ep == "fire":
            t += np.clip(i - at, 0, None) * rng.uniform(0.5, 3.0)
    if kind == "electrical":
        rc = 20.0 + rng.normal(0, 1.0, SAMPLES)
        if ep in ("spike", "spike2", "decay"):
            rc[at : at + (1 if ep == "spike" else 2)] = rng.uniform(400, 800)
        elif ep == "fire":
            rc[at:] = rng.uniform(350, 700)
        v[:, RI["residual_current"]] = rc
        v[:, RI["cable_temperature"]] = 35.0 + rng.normal(0, 0.1, SAMPLES)
    return v


def make_stream(seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8))
    names = [str(rng.choice(["smoke", "smoke", "heat", "multi", "electrical"])) for _ in range(n)]
    zones = [int(rng.integers(0, 2)) for _ in range(n)]
    slots = [int(x) for x in rng.choice(20, n, replace=False)]
    lagging = rng.random(n) < 0.5
    lag_ms = int(rng.integers(90_000, 150_000))
    ramp_from = T0 + int(rng.integers(0, 60_000))
    items: list[Item] = []
    for j, (slot, kind) in enumerate(zip(slots, names, strict=True)):
        phase = int(rng.integers(0, INTERVAL_MS))
        vals = _values(rng, kind)

        def arrival(ts: int, j: int = j) -> int:
            jitter = int(rng.integers(0, 800))
            if not lagging[j]:
                return ts + jitter
            # The connection falls behind gradually (its arrivals slow down to
            # two thirds of the offered rate: never silent), then stays behind.
            return ts + jitter + int(min(max(ts - ramp_from, 0) // 2, lag_ms))

        for i in range(SAMPLES):
            ts = T0 + phase + i * INTERVAL_MS
            items.append((arrival(ts), ts, slot, False, vals[i]))
        if kind != "electrical" and rng.random() < 0.5:  # the detector's own alarm
            te = T0 + int(rng.integers(10_000, SAMPLES * INTERVAL_MS - 30_000))
            items.append((arrival(te), te, slot, True, EV["fire_alarm"]))
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    return Stream(slots, [K[k] for k in names], zones, items)


def _batch(part: Sequence[Item]) -> tuple[Readings, Events]:
    rows = [it for it in part if not it[3]]
    evs = [it for it in part if it[3]]
    r = Readings(
        np.array([x[2] for x in rows], np.int64),
        np.array([x[1] for x in rows], np.int64),
        np.array([x[4] for x in rows], np.float64).reshape(len(rows), NR),
    )
    e = Events(
        np.array([x[2] for x in evs], np.int64),
        np.array([x[1] for x in evs], np.int64),
        np.array([x[4] for x in evs], np.int16),
    )
    return r, e


def run(s: Stream, items: Sequence[Item], cuts: Sequence[int]) -> list[AlarmChange]:
    eng = Engine(capacity=4)
    eng.configure(s.slots, s.kinds, s.zones, [{}] * len(s.slots), [INTERVAL_MS] * len(s.slots))
    out: list[AlarmChange] = []
    bounds = [0, *sorted(set(cuts)), len(items)]
    for a, b in itertools.pairwise(bounds):
        part = items[a:b]
        if not part:
            continue
        now = max(it[0] for it in part)
        r, e = _batch(part)
        out += eng.process(r, e, now)
        out += eng.advance(now)
    out += eng.advance(FAR)  # the end of the stream: every device falls silent
    return out


def verdicts(changes: Sequence[AlarmChange]) -> list[tuple[object, ...]]:
    keyed = [(c.slot, c.alarm_type, c.action, c.verdict, c.reason, c.at_ms) for c in changes]
    return sorted(keyed, key=lambda x: (x[0], x[1]))  # each device's order kept


def sorted_reference(s: Stream) -> list[tuple[object, ...]]:
    by_ts = sorted(s.items, key=lambda it: (it[1], it[2]))
    return verdicts(run(s, by_ts, []))


SETTINGS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_lagging_group_gives_the_verdicts_of_the_sorted_stream(
    seed: int, data: st.DataObject
) -> None:
    s = make_stream(seed)
    cuts = data.draw(st.lists(st.integers(0, len(s.items)), max_size=40))
    assert verdicts(run(s, s.items, cuts)) == sorted_reference(s)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
# Found by searching seeds: an event late into a window since judged (3122,
# 1003089), a window judged only when noticed (1001294), a late event's zone
# effect (1001491).
@example(seed=3122)
@example(seed=1001294)
@example(seed=1001491)
@example(seed=1003089)
def test_lagging_group_one_message_per_batch_and_one_batch(seed: int) -> None:
    s = make_stream(seed)
    want = sorted_reference(s)
    assert verdicts(run(s, s.items, list(range(len(s.items))))) == want
    assert verdicts(run(s, s.items, [])) == want


def _spike_stream(lag_ms: int, batch: int) -> list[AlarmChange]:
    """Issue 16's deterministic case: 10 devices every 5 s, a 12 %/m spike on
    one smoke head and a 600 mA reading on one electrical monitor, those two
    arriving `lag_ms` behind the others, fed in batches of `batch` messages."""
    kinds = [K["smoke"]] * 8 + [K["electrical"]] * 2
    items: list[Item] = []
    for slot in range(10):
        for i in range(80):
            ts = T0 + i * INTERVAL_MS + slot * 100
            v = np.full(NR, np.nan)
            if kinds[slot] == K["smoke"]:
                v[RI["obscuration"]] = 12.0 if (slot == 0 and i == 40) else 0.1
                v[RI["temperature"]] = 21.0
            else:
                v[RI["residual_current"]] = 600.0 if (slot == 9 and i == 40) else 15.0
                v[RI["cable_temperature"]] = 30.0
            lag = lag_ms if slot in (0, 9) else 0
            items.append((ts + lag, ts, slot, False, v))
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    s = Stream(list(range(10)), kinds, [slot // 2 for slot in range(10)], items)
    return run(s, items, list(range(batch, len(items), batch)))


def test_issue_16_spike_and_motor_start_under_lag_stay_transient() -> None:
    for lag_ms in (0, 85_000, 100_000, 300_000):
        for batch in (1, 10, 200):
            got = [
                (c.slot, c.alarm_type, c.verdict, c.reason)
                for c in _spike_stream(lag_ms, batch)
                if c.action == "verdict"
            ]
            assert sorted(got) == [
                (0, "fire", "suppressed", "transient"),
                (9, "electrical", "suppressed", "transient"),
            ], (lag_ms, batch)


def test_truly_silent_device_is_still_resolved_on_arrival_time() -> None:
    """A detector in alarm that stops sending (destroyed): confirmed once nothing
    has arrived from it for 3 intervals past its deadline, by arrival time."""
    eng = Engine(capacity=4)
    eng.configure([0, 1], [K["smoke"], K["smoke"]], [0, 1], [{}, {}], [10_000, 10_000])
    v = np.full((1, NR), np.nan)
    v[0, RI["obscuration"]] = 9.0
    v[0, RI["temperature"]] = 40.0
    ts = np.array([T0], np.int64)
    out = eng.process(Readings(np.array([0], np.int64), ts, v), Events.empty(), T0 + 500)
    assert [(c.action, c.verdict) for c in out] == [("open", "confirmed"), ("open", "pending")]
    # The other device keeps reporting, far ahead in event time: nothing closes.
    quiet = np.full((1, NR), np.nan)
    quiet[0, RI["obscuration"]] = 0.1
    for k in range(1, 6):  # up to 50 s of arrival time after the last message
        t = T0 + 500 + k * 10_000
        out = eng.process(
            Readings(np.array([1], np.int64), np.array([t + 10**7], np.int64), quiet),
            Events.empty(),
            t,
        )
        out += eng.advance(t)
        assert [c for c in out if c.alarm_type == "fire"] == []
    # deadline T0 + 30 s arrives (projected) at +30.5 s; silent 30 s later: +60.5 s.
    out = eng.advance(T0 + 60_499)
    assert out == []
    out = eng.advance(T0 + 60_500)
    assert [(c.slot, c.verdict, c.reason, c.at_ms) for c in out] == [
        (0, "confirmed", "obscuration", T0 + 30_000)
    ]


def test_late_fire_alarm_event_does_not_open_an_empty_window() -> None:
    """The event arrives after its detector's readings moved past it: judged
    against those readings (clean), not confirmed by an empty window."""
    fire = _late_event_stream(T0 + 95_000)
    assert fire == [
        ("open", "pending", "obscuration", T0 + 30_000),
        ("verdict", "suppressed", "transient", T0 + 60_000),
        ("open", "pending", "device_alarm", T0 + 95_000),
        ("verdict", "suppressed", "transient", T0 + 125_000),
    ]
    assert fire == _late_event_stream(T0 + 95_000, in_order=True)


def test_late_fire_alarm_event_inside_a_judged_window_is_evidence_for_it() -> None:
    """Dated inside a window already judged: in order it came while that window
    was open, so it opens nothing of its own."""
    fire = _late_event_stream(T0 + 35_000)
    assert fire == [
        ("open", "pending", "obscuration", T0 + 30_000),
        ("verdict", "suppressed", "transient", T0 + 60_000),
    ]
    assert fire == _late_event_stream(T0 + 35_000, in_order=True)


def _late_event_stream(event_ts: int, in_order: bool = False) -> list[tuple[object, ...]]:
    """A smoke detector every 10 s with one sample above the alarm level (a
    cooking burst) at +30 s, and its own `fire_alarm` at `event_ts`, arriving
    after all its readings (or in order)."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    n = 15
    v = np.full((n, NR), np.nan)
    v[:, RI["obscuration"]] = 0.1
    v[:, RI["temperature"]] = 21.0
    v[3, RI["obscuration"]] = 4.0
    ts = T0 + np.arange(n, dtype=np.int64) * 10_000
    event = Events(
        np.array([0], np.int64),
        np.array([event_ts], np.int64),
        np.array([EV["fire_alarm"]], np.int16),
    )
    if in_order:
        before = ts < event_ts
        batches = [
            (
                Readings(np.zeros(int(before.sum()), np.int64), ts[before], v[before]),
                Events.empty(),
            ),
            (Readings.empty(), event),
            (
                Readings(np.zeros(int((~before).sum()), np.int64), ts[~before], v[~before]),
                Events.empty(),
            ),
        ]
    else:
        batches = [
            (Readings(np.zeros(n, np.int64), ts, v), Events.empty()),
            (Readings.empty(), event),
        ]
    out: list[AlarmChange] = []
    arrival = int(ts[-1])
    for r, e in batches:
        out += eng.process(r, e, arrival)
        out += eng.advance(arrival)
    out += eng.advance(arrival + 1_000)
    return [(c.action, c.verdict, c.reason, c.at_ms) for c in out if c.alarm_type == "fire"]


def test_event_ahead_of_its_readings_is_judged_in_their_order() -> None:
    """Telemetry behind its event: the event waits in its zone's queue until
    the device's readings reach its ts, then everything is judged in event-time
    order, as the sorted stream would be: the spike at +40 s opens the window,
    the event at +60 s is evidence inside it, the window ends at +70 s with
    the signal back to normal."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    n = 11
    v = np.full((n, NR), np.nan)
    v[:, RI["obscuration"]] = 0.1
    v[:, RI["temperature"]] = 21.0
    v[4, RI["obscuration"]] = 6.0
    ts = T0 + np.arange(n, dtype=np.int64) * 10_000  # up to +100 s
    # The device has reported before (its clock is at -10 s), then its event
    # overtakes its readings.
    first = np.full((1, NR), np.nan)
    first[0, RI["obscuration"]] = 0.1
    first[0, RI["temperature"]] = 21.0
    out = eng.process(
        Readings(np.zeros(1, np.int64), np.array([T0 - 10_000], np.int64), first),
        Events.empty(),
        T0 - 9_500,
    )
    ev = Events(
        np.array([0], np.int64),
        np.array([T0 + 60_000], np.int64),
        np.array([EV["fire_alarm"]], np.int16),
    )
    out += eng.process(Readings.empty(), ev, T0 + 60_100)
    assert out == []  # waits for the device's readings
    out += eng.process(Readings(np.zeros(n, np.int64), ts, v), Events.empty(), T0 + 100_500)
    fire = [(c.action, c.verdict, c.reason, c.at_ms) for c in out if c.alarm_type == "fire"]
    assert fire == [
        ("open", "pending", "obscuration", T0 + 40_000),
        ("verdict", "suppressed", "transient", T0 + 70_000),
    ]


def test_event_of_a_device_without_readings_is_shown_at_once() -> None:
    eng = Engine(capacity=4)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    ev = Events(
        np.array([0], np.int64),
        np.array([T0], np.int64),
        np.array([EV["fire_alarm"]], np.int16),
    )
    out = eng.process(Readings.empty(), ev, T0 + 100)
    assert [(c.action, c.verdict, c.reason) for c in out] == [("open", "pending", "device_alarm")]


def _with_a_clock_an_hour_behind(
    rounds: int, obscuration: Callable[[int], list[float]]
) -> list[AlarmChange]:
    """Two smoke detectors of one zone every 10 s, the second's clock an hour
    behind (contract: clocks may be skewed); `obscuration(i)` gives both
    readings of round i."""
    eng = Engine(capacity=4)
    eng.configure([0, 1], [K["smoke"], K["smoke"]], [0, 0], [{}, {}], [10_000, 10_000])
    out = []
    for i in range(rounds):
        arrival = T0 + i * 10_000
        v = np.full((2, NR), np.nan)
        v[:, RI["temperature"]] = 21.0
        v[:, RI["obscuration"]] = obscuration(i)
        ts = np.array([arrival, arrival - 3_600_000], np.int64)
        out += eng.process(Readings(np.array([0, 1], np.int64), ts, v), Events.empty(), arrival)
        out += eng.advance(arrival)
    return out


def test_a_clock_far_behind_does_not_hold_its_zone() -> None:
    """A detector whose clock is an hour behind keeps reporting; its zone's
    verdicts do not wait an hour for it."""
    out = _with_a_clock_an_hour_behind(8, lambda i: [9.0 if i >= 2 else 0.1, 0.1])
    fire = [(c.slot, c.verdict, c.reason, c.at_ms) for c in out if c.alarm_type == "fire"]
    assert fire == [
        (0, "pending", "obscuration", T0 + 20_000),
        (0, "confirmed", "obscuration", T0 + 50_000),
    ]


def test_a_neighbour_does_not_close_the_window_of_a_clock_far_behind() -> None:
    """A spike on a detector whose clock is an hour behind, while its neighbour
    is at the alarm level: the spike's window is judged on its own readings
    (a transient), not closed by the neighbour's time with one sample in it."""
    out = _with_a_clock_an_hour_behind(
        10, lambda i: [9.0 if i >= 2 else 0.1, 12.0 if i == 3 else 0.1]
    )
    behind = [(c.verdict, c.reason) for c in out if c.alarm_type == "fire" and c.slot == 1]
    assert behind == [("pending", "obscuration"), ("suppressed", "transient")]


def _slow_fire_at(t0: int) -> list[tuple[object, ...]]:
    """A smoke head in slightly dusty clean air (0.45 %/m, which drift
    compensation tracks by 0.1 %/m an hour) for two hours, then a smouldering
    fire growing 0.2 %/m a minute; its alarms with times from the start."""
    rng = np.random.default_rng(7)
    eng = Engine(capacity=1)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    n = 2 * 360 + 150
    ts = t0 + np.arange(n, dtype=np.int64) * 10_000
    v = np.full((n, NR), np.nan)
    minutes_burning = np.clip(np.arange(n) - 720, 0, None) / 6
    v[:, RI["obscuration"]] = 0.45 + rng.normal(0, 0.01, n) + 0.2 * minutes_burning
    v[:, RI["temperature"]] = 21.0
    out: list[AlarmChange] = []
    for a in range(0, n, 30):
        r = Readings(np.zeros(len(ts[a : a + 30]), np.int64), ts[a : a + 30], v[a : a + 30])
        out += eng.process(r, Events.empty(), int(ts[a : a + 30][-1]))
    out += eng.advance(FAR)
    return [(c.alarm_type, c.action, c.verdict, c.reason, c.at_ms - t0) for c in out]


def test_the_same_stream_at_another_time_of_day_gives_the_same_alarms() -> None:
    """Drift compensation learns per hour of the device's own stream, not per
    clock hour: a scenario replayed 20, 40 or 59 minutes later in the hour
    (another run of a test suite, a gateway's backlog) is judged alike."""
    want = _slow_fire_at(T0)
    assert any(a[0] == "fire" and a[2] == "confirmed" for a in want)
    for shift_min in (20, 40, 59):
        assert _slow_fire_at(T0 + shift_min * 60_000) == want, shift_min


def _feed_one_by_one(
    eng: Engine, rows: list[tuple[int, float, float]], arrival0: int
) -> list[AlarmChange]:
    """(ts, obscuration, temperature) of slot 0, one message per batch, arriving
    10 s apart from `arrival0`."""
    out: list[AlarmChange] = []
    for i, (ts, obs, temp) in enumerate(rows):
        v = np.full((1, NR), np.nan)
        v[0, RI["obscuration"]], v[0, RI["temperature"]] = obs, temp
        now = arrival0 + i * 10_000
        r = Readings(np.array([0], np.int64), np.array([ts], np.int64), v)
        out += eng.process(r, Events.empty(), now)
        out += eng.advance(now)
    return out


def test_a_clock_reset_to_its_epoch_does_not_blind_the_detector() -> None:
    """A detector's real-time clock falls back to 2000-01-01 after a power loss
    (its readings far behind its own newest from then on): after three readings
    on the new clock, in order and at a steady offset, they feed detection again
    and a fire on that clock is confirmed."""
    eng = Engine(capacity=1)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    now = T0 + 3_600_000
    on_time = [(now - 60_000 + i * 10_000, 0.1, 21.0) for i in range(6)]
    epoch = 946_684_800_000
    fire = [
        (epoch + i * 10_000, 0.1 if i < 3 else min(1.0 * (i - 2), 12.0), 21.0 + max(i - 2, 0) * 2.0)
        for i in range(16)
    ]
    out = _feed_one_by_one(eng, on_time + fire, now - 60_000)
    got = [(c.alarm_type, c.verdict) for c in out if c.alarm_type == "fire"]
    assert ("fire", "confirmed") in got
    assert eng.clock_steps == 1
    assert all(c.at_ms < T0 for c in out if c.alarm_type == "fire")  # on the device's clock


def test_a_backlog_between_live_readings_is_no_clock_step() -> None:
    """A gateway sends a device's stored hour between its live readings: those
    readings are far behind and in order, but live ones interrupt them, so the
    clock is not taken as stepped back (they stay late, as Lateness says)."""
    eng = Engine(capacity=1)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    now = T0 + 3_600_000
    rows: list[tuple[int, float, float]] = []
    for i in range(30):
        rows.append((now + i * 20_000, 0.1, 21.0))  # live
        rows.append((T0 + i * 10_000, 0.1, 21.0))  # backlog, one hour behind
        rows.append((T0 + i * 10_000 + 5_000, 0.1, 21.0))
    _feed_one_by_one(eng, rows, now)
    assert eng.clock_steps == 0
    assert eng.late_readings == 60


# (kind, reporting interval s, first report s, readings at t s, lag ms)
Reporter = tuple[str, float, float, Callable[[float], dict[str, float]], int]


def _zone_fires(devices: Sequence[Reporter], until_s: float) -> list[tuple[AlarmChange, int]]:
    """One zone of these reporters, each message arriving 0.3 s plus its lag
    after its ts, one message per batch in arrival order, then the end of the
    stream: the fire alarm changes, each with the arrival that gave it."""
    eng = Engine(capacity=len(devices))
    n = len(devices)
    eng.configure(
        list(range(n)), [K[d[0]] for d in devices], [0] * n, [{}] * n,
        [round(d[1] * 1000) for d in devices],
    )  # fmt: skip
    items: list[tuple[int, int, int, np.ndarray]] = []
    for slot, (_, interval_s, first_s, readings, lag) in enumerate(devices):
        for t in np.arange(first_s, until_s, interval_s):
            v = np.full(NR, np.nan)
            for name, x in readings(float(t)).items():
                v[RI[name]] = x
            ts = T0 + round(t * 1000)
            items.append((ts + lag + 300, ts, slot, v))
    out: list[tuple[AlarmChange, int]] = []
    for arrival, ts, slot, v in sorted(items, key=lambda it: (it[0], it[2])):
        r = Readings(np.array([slot]), np.array([ts]), v.reshape(1, NR))
        out += [(c, arrival) for c in eng.process(r, Events.empty(), arrival)]
        out += [(c, arrival) for c in eng.advance(arrival)]
    out += [(c, FAR) for c in eng.advance(FAR)]
    return [(c, arrival) for c, arrival in out if c.alarm_type == "fire"]


def _fire_next_to_a_slow_reporter(heat_interval_s: float) -> list[tuple[str, str, int, int]]:
    """A flaming fire on a smoke head reporting every 10 s, in the zone of a
    heat detector reporting every `heat_interval_s` (a battery heartbeat):
    (action, verdict, event time, arrival of the batch that gave it) of the
    fire alarm."""

    def smoke(t: float) -> dict[str, float]:
        return {"obscuration": 0.2 + 20 * min(max((t - 300) / 120, 0.0), 1.0), "temperature": 21.0}

    devices: list[Reporter] = [
        ("smoke", 10, 0.003, smoke, 0),
        ("heat", heat_interval_s, 0.007, lambda t: {"temperature": 21.0}, 0),
    ]
    return [(c.action, c.verdict, c.at_ms, at) for c, at in _zone_fires(devices, 900)]


def test_a_detector_reporting_every_few_minutes_does_not_hold_its_zone() -> None:
    """Its zone waits for it only while data of it can be on the way (its lag
    plus ZONE_TRANSIT_SLACK_MS): before, a neighbour's fire was confirmed
    when the slow one next reported, 250 s late with a 5-minute heartbeat.
    The verdicts are those of a zone of 10 s reporters."""
    prompt = _fire_next_to_a_slow_reporter(10)
    assert [a[:3] for a in prompt] == [
        ("open", "pending", T0 + 320_003),
        ("verdict", "confirmed", T0 + 350_003),
    ]
    for interval_s in (60, 300, 3600):
        slow = _fire_next_to_a_slow_reporter(interval_s)
        assert [a[:3] for a in slow] == [a[:3] for a in prompt], interval_s
        for _, _, at, shown in slow:  # 10 s of slack, one period of the smoke head
            assert shown - at <= 20_000, (interval_s, shown - at)


def _zone_with_a_slow_heat_detector(
    heat_from_s: float, hot_from_s: float, smoke_from_s: float, lag_ms: int
) -> list[tuple[object, ...]]:
    """A smoke head (every 10 s) whose smoke rises from `smoke_from_s` (the
    alarm level 40 s later), a heat detector reporting every 300 s from
    `heat_from_s` (64 °C from `hot_from_s`) on a connection `lag_ms` behind,
    a multi-criteria detector every 60 s in clean air; one message per batch,
    in arrival order. The fire alarms."""

    def smoke(t: float) -> dict[str, float]:
        u = t - smoke_from_s
        obs = 0.2 + 4.0 * u / 50 if u < 50 else 4.2 + 16 * (u - 50) / 70
        return {"obscuration": min(max(obs, 0.2), 20.0), "temperature": 21.0}

    devices: list[Reporter] = [
        ("smoke", 10, 0.0, smoke, 0),
        ("heat", 300, heat_from_s, lambda t: {"temperature": 64.0 if t >= hot_from_s else 21.0},
         lag_ms),
        ("multi", 60, 5.0, lambda t: {"obscuration": 0.3, "co": 1.0, "humidity": 45.0}, 0),
    ]  # fmt: skip
    return verdicts([c for c, _ in _zone_fires(devices, 600)])


@pytest.mark.parametrize(
    ("heat_from_s", "hot_from_s", "smoke_from_s"),
    [
        (3.1, 300.0, 250.0),  # the fire reaches the heat head's report at 303.1 s
        (100.0, 0.0, 90.0),  # its first report ever (hot), just before the smoke
    ],
)
def test_a_slow_reporter_lagging_60_s_gives_the_verdicts_it_gives_on_time(
    heat_from_s: float, hot_from_s: float, smoke_from_s: float
) -> None:
    """The outside check of the transit rule: a heat detector reporting every
    5 min on a connection 60 s behind. Its zone must wait for it by its lag,
    however old its newest reading is (the 5-minute limit is on how far
    behind it holds the zone, not on its reporting interval), and a
    neighbour's row shown late never corroborates a window that opened after
    it (a fire was confirmed by coincidence 40 s before it opened)."""
    on_time = _zone_with_a_slow_heat_detector(heat_from_s, hot_from_s, smoke_from_s, 0)
    lagging = _zone_with_a_slow_heat_detector(heat_from_s, hot_from_s, smoke_from_s, 60_000)
    assert lagging == on_time
    opened = {(v[0], v[1]): cast(int, v[5]) for v in on_time if v[2] == "open"}
    assert all(cast(int, v[5]) >= opened[(v[0], v[1])] for v in lagging)


def held_by_scan(eng: Engine) -> dict[int, int]:
    """What each device holds, read off the zone queues themselves (also the
    baseline of bench/detection_lag.py)."""
    held: dict[int, int] = {}
    for q in eng._zq.values():
        for it in q:
            held[it[2]] = min(it[0], held.get(it[2], it[0]))
    return held


@settings(max_examples=examples(40), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_what_each_device_holds_is_kept_exact_batch_after_batch(
    seed: int, data: st.DataObject
) -> None:
    """`held_from` (marked with each batch so a restart replays what was held)
    is kept per device as items are queued and shown, not scanned out of the
    queues per batch: it must say exactly what the queues hold, through lags,
    any batch cuts, a device forgotten (its shard taken over) and the end."""
    s = make_stream(seed)
    cuts = data.draw(st.lists(st.integers(0, len(s.items)), max_size=30))
    forget_at = data.draw(st.integers(0, len(s.items)))
    eng = Engine(capacity=4)
    eng.configure(s.slots, s.kinds, s.zones, [{}] * len(s.slots), [INTERVAL_MS] * len(s.slots))
    bounds = [0, *sorted(set(cuts)), len(s.items)]
    for a, b in itertools.pairwise(bounds):
        part = s.items[a:b]
        if not part:
            continue
        now = max(it[0] for it in part)
        eng.process(*_batch(part), now)
        if a <= forget_at < b and eng.held_from():
            eng.forget([min(eng.held_from())])  # one that holds something
        assert eng.held_from() == held_by_scan(eng)
        eng.advance(now)
        assert eng.held_from() == held_by_scan(eng)
    eng.flush()
    assert eng.held_from() == {} == held_by_scan(eng)


def _zone_clock_one_by_one(eng: Engine, zone: int) -> int:
    """The zone clock's rule written out for one zone (how the engine computed
    it zone by zone before it took them all in one pass)."""
    members = eng._zmembers.get(zone)
    if members is None or len(members) == 0:
        return 2**62
    clocks = []
    for m in members.tolist():
        heard, newest, interval = eng.last_arrival[m], eng.last_ts[m], eng.interval_ms[m]
        on_change = interval >= params.REPORTS_ON_CHANGE_MS
        if on_change:
            newest = max(newest, eng.last_event_ts[m])
        if eng.arrival_clock - heard >= interval * params.SILENT_AFTER_INTERVALS:
            continue  # silent
        if newest <= kernel.TS_NONE:
            continue  # nothing of it yet
        slack = params.ON_CHANGE_TRANSIT_SLACK_MS if on_change else params.ZONE_TRANSIT_SLACK_MS
        clocks.append(int(newest + max(eng.arrival_clock - heard - slack, 0)))
    if not clocks:
        return 2**62
    lead = max(clocks)
    return min(c for c in clocks if c >= lead - params.ZONE_HOLD_MAX_MS)


@settings(max_examples=examples(100), deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_zone_clocks_in_one_pass_follow_the_rule_zone_by_zone(seed: int) -> None:
    """Zones of detectors late, silent, never heard, reporting on change only,
    minutes behind their lead: every zone's clock as the rule says."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    eng = Engine(capacity=n)
    zones = rng.integers(0, 6, n).tolist()
    kinds = [K[k] for k in rng.choice(["smoke", "heat", "multi"], n)]
    intervals = rng.choice([10_000, 60_000, params.REPORTS_ON_CHANGE_MS], n).tolist()
    eng.configure(list(range(n)), kinds, zones, [{}] * n, intervals)
    now = T0 + 3_600_000
    eng.arrival_clock = now
    never = rng.random(n) < 0.1
    eng.last_arrival[:n] = np.where(never, kernel.TS_NONE, now - rng.integers(0, 400_000, n))
    eng.last_ts[:n] = np.where(
        rng.random(n) < 0.1, kernel.TS_NONE, eng.last_arrival[:n] - rng.integers(0, 600_000, n)
    )
    eng.last_event_ts[:n] = np.where(
        rng.random(n) < 0.5, kernel.TS_NONE, now - rng.integers(0, 600_000, n)
    )
    asked = sorted({*zones, 99})  # (a zone with no detector)
    assert eng._zone_clocks(asked) == {z: _zone_clock_one_by_one(eng, z) for z in asked}
