"""A restart (or a shard taken over) anywhere inside a verification window gives
the verdicts of the uninterrupted stream: the new engine replays the zone's
last minutes (`Engine.warm_up`), then takes the open alarms as the database
has them. Restoring the alarms alone lost what the window had seen (steam
before it, its own readings, the look-back) and turned a shower into a fire."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from detection import AlarmChange, Engine, Events, Readings
from firesafe import contract
from ingest.warm_up import WARM_UP_MS

RI = contract.READING_INDEX
NR = len(contract.READINGS)
K = {name: i for i, name in enumerate(contract.KINDS)}
T0 = 1_764_072_000_000
STEP_MS = 10_000
Profile = Callable[[float], dict[str, float]]  # seconds since start -> readings


def ramp(t: float, start: float, span: float) -> float:
    return min(max((t - start) / span, 0.0), 1.0)


def shower(t: float) -> dict[str, float]:
    """Humidity jumps to 90 %RH, droplets follow 30 s later, the room warms."""
    return {
        "humidity": 50 + 40 * ramp(t, 100, 60),
        "obscuration": 0.2 + 5 * ramp(t, 130, 60),
        "temperature": 22 + 3 * ramp(t, 100, 60),
        "co": 1.0,
    }


def smoulder(t: float) -> dict[str, float]:
    return {"obscuration": 0.2 + 6 * ramp(t, 100, 400) ** 2, "temperature": 21.0}


def cooking(t: float) -> dict[str, float]:
    up, down = ramp(t, 100, 60), ramp(t, 220, 120)
    return {"obscuration": 0.2 + 5 * up * (1 - down), "temperature": 21 + up - down}


def flaming(t: float) -> dict[str, float]:
    return {"obscuration": 0.2 + 20 * ramp(t, 100, 120), "temperature": 21 + 40 * ramp(t, 110, 120)}


def clean_air(t: float) -> dict[str, float]:
    return {"obscuration": 0.2, "temperature": 21.0}


def spike(t: float) -> dict[str, float]:
    return {"obscuration": 6.0 if round(t) in (200, 210) else 0.2, "temperature": 21.0}


def heat_rising(t: float) -> dict[str, float]:
    return {"temperature": 21 + 0.2 * max(0.0, t - 200)}  # 12 °C/min from 200 s


def leakage(t: float) -> dict[str, float]:
    return {"residual_current": 450.0 if t >= 150 else 40.0, "cable_temperature": 35.0}


# (kind, profile) per device of one zone; two detectors see the same smoke 90 s apart.
CASES: dict[str, list[tuple[str, Profile]]] = {
    "shower on a multi": [("multi", shower)],
    "smouldering fire": [("smoke", smoulder)],
    "cooking": [("smoke", cooking)],
    "flaming fire": [("smoke", flaming)],
    "insect": [("smoke", spike)],
    "residual current": [("electrical", leakage)],
    "two detectors, one fire": [("smoke", smoulder), ("smoke", lambda t: smoulder(t - 90))],
}


def rows_of(
    devices: list[tuple[str, Profile]], seconds: int = 600
) -> list[tuple[int, int, np.ndarray]]:
    rows = []
    for t in range(0, seconds, STEP_MS // 1000):
        for slot, (_, profile) in enumerate(devices):
            v = np.full(NR, np.nan)
            for name, x in profile(float(t)).items():
                v[RI[name]] = x
            rows.append((T0 + t * 1000, slot, v))
    return rows


def engine(devices: list[tuple[str, Profile]]) -> Engine:
    e = Engine(capacity=4)
    e.configure(
        list(range(len(devices))),
        [K[k] for k, _ in devices],
        [1] * len(devices),
        [{}] * len(devices),
    )
    return e


def batch(rows: list[tuple[int, int, np.ndarray]]) -> Readings:
    return Readings(
        np.array([r[1] for r in rows], np.int64),
        np.array([r[0] for r in rows], np.int64),
        np.array([r[2] for r in rows]).reshape(len(rows), NR),
    )


def feed(e: Engine, rows: list[tuple[int, int, np.ndarray]]) -> list[AlarmChange]:
    """Arriving as sent (0.5 s later), a few readings per batch."""
    return feed_arriving(e, [(r[0] + 500, r) for r in rows])


def feed_arriving(
    e: Engine, timed: list[tuple[int, tuple[int, int, np.ndarray]]]
) -> list[AlarmChange]:
    """(arrival, row) in arrival order, two per batch (arriving with the later)."""
    out: list[AlarmChange] = []
    for i in range(0, len(timed), 2):
        part = timed[i : i + 2]
        out += e.process(batch([r for _, r in part]), Events.empty(), part[-1][0])
    return out


def verdicts(changes: list[AlarmChange]) -> list[tuple[int, str, str, str, str, int]]:
    return [(c.slot, c.alarm_type, c.action, c.verdict, c.reason, c.at_ms) for c in changes]


def open_alarms(changes: list[AlarmChange]) -> dict[tuple[int, str], tuple[str, int, str]]:
    """What the database holds open after these changes:
    (slot, type) -> (verdict, opened, reason)."""
    held: dict[tuple[int, str], tuple[str, int, str]] = {}
    for c in changes:
        key = (c.slot, c.alarm_type)
        if c.action == "clear" or c.verdict == "suppressed":
            held.pop(key, None)
        elif c.action == "open":
            held[key] = (c.verdict, c.at_ms, c.reason)
        elif key in held:
            held[key] = (c.verdict, held[key][1], c.reason)
    return held


@pytest.mark.parametrize("case", list(CASES))
def test_a_restart_inside_a_window_gives_the_uninterrupted_verdicts(case: str) -> None:
    devices = CASES[case]
    rows = rows_of(devices)
    whole = verdicts(feed(engine(devices), rows))
    cuts = 0
    for cut in range(1, len(rows)):
        before = feed(engine(devices), rows[:cut])
        held = open_alarms(before)
        if not any(v == "pending" for v, _, _ in held.values()):
            continue
        cuts += 1
        restarted = engine(devices)
        newest = rows[cut - 1][0]
        history = [r for r in rows[:cut] if r[0] >= newest - WARM_UP_MS]
        restarted.warm_up(batch(history), Events.empty(), newest + 500)
        for (slot, typ), (verdict, opened, reason) in held.items():
            restarted.restore_alarm(slot, typ, verdict, opened, reason)
        after = feed(restarted, rows[cut:])
        assert verdicts(before + after) == whole, f"restart after reading {cut}"
    assert cuts >= 2  # the case has a window to cut


# Zones killed mid-way: (devices, lag). The second detector's data arrive
# `lag` ms of event time behind the first's (a lagging connection): the
# zone's order holds the first one's readings until the second catches up.
KILLED: dict[str, tuple[list[tuple[str, Profile]], int]] = {
    "fire seen first by the detector ahead": (
        [("smoke", smoulder), ("smoke", lambda t: smoulder(t - 90))],
        100_000,
    ),
    "fire seen first by the detector behind": (
        [("smoke", lambda t: smoulder(t - 90)), ("smoke", smoulder)],
        100_000,
    ),
    "insect on the detector ahead": ([("smoke", spike), ("smoke", clean_air)], 90_000),
    # The third detector stops reporting at 150 s: the fire destroyed it.
    "a fire destroys a third detector": (
        [("smoke", flaming), ("smoke", lambda t: smoulder(t - 200)), ("smoke", flaming)],
        60_000,
    ),
    # An insect 100 s after the third detector fell silent: its zone did not
    # wait for it before the kill, and must not in the replay.
    "insect while a neighbour is silent": (
        [("smoke", lambda t: spike(t - 50)), ("smoke", clean_air), ("smoke", clean_air)],
        60_000,
    ),
    # No lag, no alarm open before the heat detector's rate of rise: its
    # look-back must be replayed too (the fifth outside check: an alarm 10 s
    # off after a restart).
    "heat rising next to a smouldering fire": (
        [("heat", heat_rising), ("smoke", lambda t: smoulder(t - 60))],
        0,
    ),
    "smoke, then heat rising": ([("smoke", flaming), ("heat", heat_rising)], 0),
}
DESTROYED_AT_MS = T0 + 150_000  # (slot 2)


def arriving(
    rows: list[tuple[int, int, np.ndarray]], lag_ms: int
) -> list[tuple[int, tuple[int, int, np.ndarray]]]:
    """(arrival, row) in arrival order: slot 1 is lag_ms behind, slot 2 falls silent."""
    timed = [
        (r[0] + (lag_ms if r[1] == 1 else 0) + 500, r)
        for r in rows
        if r[1] != 2 or r[0] < DESTROYED_AT_MS
    ]
    return sorted(timed, key=lambda x: (x[0], x[1][1]))


def restart_from(
    devices: list[tuple[str, Profile]],
    received: list[tuple[int, tuple[int, int, np.ndarray]]],
    alarms: dict[tuple[int, str], tuple[str, int, str]],
    marks: dict[int, int],
) -> Engine:
    """A new engine as ingest starts it after `received` was stored: every
    device's last minutes replayed, each last heard when it was, with the
    database's held `marks`, then the open `alarms` restored."""
    e = engine(devices)
    stored = sorted((r for _, r in received), key=lambda r: (r[0], r[1]))
    newest = {r[1]: r[0] for r in stored}
    history = [r for r in stored if r[0] >= newest[r[1]] - WARM_UP_MS]
    heard = {r[1]: a for a, r in received}  # (arrival order)
    e.warm_up(batch(history), Events.empty(), received[-1][0] + 5_000, heard, marks)
    for (slot, typ), (verdict, opened, reason) in alarms.items():
        e.restore_alarm(slot, typ, verdict, opened, reason)
    return e


@pytest.mark.parametrize("case", list(KILLED))
def test_a_sigkill_after_any_batch_gives_the_uninterrupted_verdicts(
    case: str,
) -> None:
    """Killed after any batch: ingest's warm-up (ingest/warm_up.py) replays
    every device's last minutes (a larger estate: the zones with an alarm
    open or stored readings detection held unjudged, `held_from`, marked
    with the batch that stored them), each device last heard when it was.
    Readings held at the kill are held again and judged when the lagging
    detector catches up."""
    devices, lag_ms = KILLED[case]
    timed = arriving(rows_of(devices), lag_ms)
    whole = verdicts(feed_arriving(engine(devices), timed))
    assert whole  # the case raises something
    held_cuts = 0
    for cut in range(2, len(timed), 2):
        first = engine(devices)
        before = feed_arriving(first, timed[:cut])
        held_cuts += bool(first.held_from())
        alarms = open_alarms(before)
        marks = first.held_from()  # (stored with the batches that held them)
        after = feed_arriving(restart_from(devices, timed[:cut], alarms, marks), timed[cut:])
        assert verdicts(before + after) == whole, f"killed after arrival {cut}"
    assert held_cuts >= 2 or lag_ms == 0  # a lag holds readings at some kill


@pytest.mark.parametrize("case", [c for c, (_, lag) in KILLED.items() if lag])
def test_a_stop_judges_what_was_held_once(case: str) -> None:
    """Stopped after any batch: the stop shows what the zone's order held
    (`flush`) and judges it; the restart's replay sees a neighbour lagging
    again, but holds only what the database marks as held (nothing, after
    a stop). An outside check: a detector's `fire_alarm` judged at the stop
    opened a second fire alarm after the restart. No alarm is opened after
    the restart from data that arrived before it."""
    devices, lag_ms = KILLED[case]
    timed = arriving(rows_of(devices), lag_ms)
    reopened: list[tuple[int, tuple[int, str, str, str, str, int]]] = []
    held_cuts = 0
    for cut in range(2, len(timed), 2):
        first = engine(devices)
        before = feed_arriving(first, timed[:cut])
        held_cuts += bool(first.held_from())
        before += first.flush()
        assert not first.held_from()
        after = feed_arriving(
            restart_from(devices, timed[:cut], open_alarms(before), {}), timed[cut:]
        )
        first_new: dict[int, int] = {}
        for _, r in timed[cut:]:
            first_new.setdefault(r[1], r[0])
        reopened += [
            (cut, v)
            for c, v in zip(after, verdicts(after), strict=True)
            if c.action == "open" and c.at_ms < first_new.get(c.slot, 2**62)
        ]
    assert held_cuts >= 2  # the stops had something held to judge
    assert reopened == []


def test_a_replay_counts_nothing_twice() -> None:
    """What the replay sees again was counted when it arrived: a far-future
    reading kept out of detection is not counted again (ingest adds the
    engine's counts to the device's stored total)."""
    devices: list[tuple[str, Profile]] = [("smoke", clean_air)]
    rows = rows_of(devices, seconds=60)
    glitch = (T0 + 86_400_000, 0, rows[0][2])  # a day ahead of its arrival
    history = [*rows[:2], glitch, *rows[2:]]  # batched with a reading on time
    first = engine(devices)
    feed(first, history)
    assert first.quarantined == 1
    assert int(first.quarantine_count[0]) == 1
    restarted = engine(devices)
    restarted.warm_up(batch(history), Events.empty(), rows[-1][0] + 500)
    assert restarted.quarantined == 0
    assert int(restarted.quarantine_count[0]) == 0
