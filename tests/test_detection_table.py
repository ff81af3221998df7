"""The alarm rules, each checked against the written rule with literal numbers.

Every expected value here comes from the README's "Detection" section and the
contract (section 6), written out as a number: nothing is computed from
`detection.params`, so changing a rule's constant (a window, a memory, a
fraction, a grace) fails a test here even where the engine and its reference
(`tests/naive_detection.py`, written from the same rules) still agree.

Each device's readings are fed in its own time order, cut into batches by
event time; `Engine.advance` (arrival-time silence) is called only by the
test of a device that never reports: every other window closes on the
device's own clock, its next reading or event at or after the window's end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from detection import AlarmChange, Engine, Events, Readings
from firesafe import contract
from tests.naive_detection import NaiveEngine

T0 = 1_764_072_000_000  # 2025-11-25 12:00:00 UTC, on an hour boundary
S = 1_000  # ms per second
H = 3_600  # seconds per hour

Row = tuple[float, dict[str, float]]  # (seconds since T0, readings)


class Rig:
    """An engine with a few devices; readings fed per device in time order."""

    def __init__(
        self,
        devices: Sequence[tuple[str, int]] | Sequence[tuple[str, int, dict[str, float]]],
        reference: bool = False,
        intervals_s: Sequence[float] | None = None,
    ) -> None:
        self.engine = Engine(capacity=8)
        # Fed instead of the engine: the rules' reference (tests/naive_detection.py).
        self.reference = NaiveEngine() if reference else None
        for engine in (self.engine, self.reference):
            if engine is not None:
                engine.configure(
                    list(range(len(devices))),
                    [contract.KINDS.index(d[0]) for d in devices],
                    [d[1] for d in devices],
                    [d[2] if len(d) > 2 else {} for d in devices],
                    None if intervals_s is None else [round(x * S) for x in intervals_s],
                )
        self.changes: list[AlarmChange] = []

    def feed(
        self,
        rows: dict[int, Iterable[Row]],
        events: Iterable[tuple[int, float, str]] = (),
        batch_s: float = 30.0,
    ) -> list[AlarmChange]:
        """Feed every device's rows (each in its own time order) and events in
        batches of `batch_s` of event time. Returns the transitions."""
        flat = [(t, slot, v) for slot, rs in rows.items() for t, v in rs]
        for slot, rs in rows.items():
            ts = [t for t, _ in rs]
            assert ts == sorted(ts), f"device {slot} fed out of its own time order"
        evs = sorted((t, slot, name) for slot, t, name in events)
        times = [t for t, _, _ in flat] + [t for t, _, _ in evs]
        if not times:
            return []
        out: list[AlarmChange] = []
        lo = min(times) // batch_s * batch_s
        end = max(times)
        while lo <= end:
            hi = lo + batch_s
            part = sorted((r for r in flat if lo <= r[0] < hi), key=lambda r: (r[0], r[1]))
            pe = [e for e in evs if lo <= e[0] < hi]
            values = np.full((len(part), len(contract.READINGS)), np.nan)
            for i, (_, _, v) in enumerate(part):
                for name, x in v.items():
                    values[i, contract.READING_INDEX[name]] = x
            out += (self.reference or self.engine).process(
                Readings(
                    np.array([r[1] for r in part], np.int64),
                    np.array([T0 + round(r[0] * S) for r in part], np.int64),
                    values,
                ),
                Events(
                    np.array([e[1] for e in pe], np.int64),
                    np.array([T0 + round(e[0] * S) for e in pe], np.int64),
                    np.array([contract.EVENT_TYPES.index(e[2]) for e in pe], np.int16),
                ),
            )
            lo = hi
        self.changes += out
        return out


def series(points: Sequence[tuple[float, float, float]], name: str, **fixed: float) -> list[Row]:
    """Rows from (start_s, stop_s, value) segments, 10 s apart; `fixed` readings on every row."""
    out: list[Row] = []
    for start, stop, value in points:
        for t in np.arange(start, stop, 10.0):
            out.append((float(t), {name: value, **fixed}))
    return out


def summary(
    changes: Iterable[AlarmChange], typ: str, slot: int | None = None
) -> list[tuple[str, str, str, float]]:
    """(action, verdict, reason, seconds since T0) of one alarm type."""
    return [
        (c.action, c.verdict, c.reason, (c.at_ms - T0) / S)
        for c in changes
        if c.alarm_type == typ and (slot is None or c.slot == slot)
    ]


def clean(start: float, stop: float) -> list[tuple[float, float, float]]:
    return [(start, stop, 0.1)]


# --- Coincidence: "a second detector of the zone" within 60 s -----------------------
@pytest.mark.parametrize(
    ("gap_s", "expected_b"),
    [
        (
            40,
            [
                ("open", "pending", "obscuration", 150.0),
                ("verdict", "confirmed", "coincidence", 150.0),
            ],
        ),
        (
            60,
            [
                ("open", "pending", "obscuration", 170.0),
                ("verdict", "confirmed", "coincidence", 170.0),
            ],
        ),
        (
            70,
            [
                ("open", "pending", "obscuration", 180.0),
                ("verdict", "suppressed", "transient", 210.0),
            ],
        ),
        (
            300,
            [
                ("open", "pending", "obscuration", 410.0),
                ("verdict", "suppressed", "transient", 440.0),
            ],
        ),
    ],
)
@pytest.mark.parametrize("batch_s", [10.0, 30.0, 600.0])
def test_coincidence_window_is_60_s(
    gap_s: int, expected_b: list[tuple[str, str, str, float]], batch_s: float
) -> None:
    """A: two samples at 5 %/m at t=100 and 110 (activity that lasted two
    readings, so it can corroborate a neighbour). B, same zone: one sample at
    5 %/m `gap_s` after A's last. Within 60 s B is confirmed by coincidence,
    and so is A, which took part (contract section 6: a coincidence confirms
    every device that took part), although its own window had already ended
    as a transient at 130 s: A opens again, confirmed, when B coincides.
    Beyond 60 s, each is a transient of its own."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    tb = 110 + gap_s
    a = series([(0, 100, 0.1), (100, 120, 5.0), (120, 700, 0.1)], "obscuration", temperature=21.0)
    b = series(
        [(0, tb, 0.1), (tb, tb + 10, 5.0), (tb + 10, 700, 0.1)], "obscuration", temperature=21.0
    )
    ch = rig.feed({0: a, 1: b}, batch_s=batch_s)
    coincided = expected_b[1][2] == "coincidence"
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
        *([("open", "confirmed", "coincidence", expected_b[1][3])] if coincided else []),
    ]
    assert summary(ch, "fire", 1) == expected_b
    if coincided:
        confirmed = [c for c in ch if c.slot == 1 and c.action == "verdict"]
        assert [c.related for c in confirmed] == [(0,)]
        assert confirmed[0].detail["obscuration"] == 5.0  # the reading that coincided
        revived = [c for c in ch if c.slot == 0 and c.alarm_type == "fire" and c.action == "open"]
        assert [c.related for c in revived][1:] == [(1,)]
        assert rig.engine.open_alarms()[(0, "fire")] == "confirmed"


def test_coincidence_30_s_apart_confirms_both() -> None:
    """Issue 18's finding: A at 5 %/m at 100 and 110 s, then clean (its window
    ends at 130 s: a transient); B, same zone, at 5 %/m from 140 s, 30 s after
    A's last. B is confirmed by coincidence at 140 s, and A with it."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series([(0, 100, 0.1), (100, 120, 5.0), (120, 400, 0.1)], "obscuration", temperature=21.0)
    b = series([(0, 140, 0.1), (140, 170, 5.0), (170, 400, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
        ("open", "confirmed", "coincidence", 140.0),
    ]
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 140.0),
        ("verdict", "confirmed", "coincidence", 140.0),
    ]
    assert rig.engine.open_alarms() == {
        (0, "fire"): "confirmed",
        (1, "fire"): "confirmed",
    }


def test_each_detector_of_a_coincidence_shows_its_own_reading() -> None:
    """The fifth outside check's re-check: the partner a coincidence confirmed
    carried the other detector's reading in its alarm's detail. A at 5 %/m
    from 100 s, B at 7 %/m from 110 s: each alarm shows its own obscuration."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series([(0, 100, 0.1), (100, 300, 5.0)], "obscuration", temperature=21.0)
    b = series([(0, 110, 0.1), (110, 300, 7.0)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    confirmed = {c.slot: c for c in ch if c.alarm_type == "fire" and c.verdict == "confirmed"}
    assert {s: c.reason for s, c in confirmed.items()} == {0: "coincidence", 1: "coincidence"}
    assert confirmed[0].detail["obscuration"] == 5.0
    assert confirmed[1].detail["obscuration"] == 7.0


def test_coincidence_confirms_a_partner_whose_window_is_not_resolved_yet() -> None:
    """A at 5 %/m at 100 and 110 s, clean at 120 s, then nothing until 200 s
    (its window ended at 130 s in event time, but its own clock is not there
    yet: still pending).
    B, same zone, at 5 %/m at 140 s: B is confirmed by coincidence at 140 s;
    A, which took part, gets its window's verdict (a transient at 130 s, as
    whenever its window is closed) and is confirmed with B at 140 s."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series(
        [(0, 100, 0.1), (100, 120, 5.0), (120, 130, 0.1), (200, 300, 0.1)],
        "obscuration",
        temperature=21.0,
    )
    b = series([(0, 140, 0.1), (140, 150, 5.0), (150, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
        ("open", "confirmed", "coincidence", 140.0),
    ]
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 140.0),
        ("verdict", "confirmed", "coincidence", 140.0),
    ]
    related = {c.slot: c.related for c in ch if c.alarm_type == "fire" and c.verdict == "confirmed"}
    assert related == {0: (1,), 1: (0,)}


def test_coincidence_confirms_a_pending_partner_it_corroborates_alone() -> None:
    """A at 5 %/m at 100 and 110 s (activity), clean from 120 s; B, same zone,
    one sample at 5 %/m at 120 s (no activity of its own yet, so A has no
    partner). B is confirmed by coincidence with A at 120 s, and A, which took
    part, with it (not a transient when its window ends at 130 s)."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series([(0, 100, 0.1), (100, 120, 5.0), (120, 300, 0.1)], "obscuration", temperature=21.0)
    b = series([(0, 120, 0.1), (120, 130, 5.0), (130, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "coincidence", 120.0),
    ]
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 120.0),
        ("verdict", "confirmed", "coincidence", 120.0),
    ]
    related = {c.slot: c.related for c in ch if c.alarm_type == "fire" and c.verdict == "confirmed"}
    assert related == {0: (1,), 1: (0,)}


def test_activity_at_the_last_ms_of_a_window_does_not_corroborate_it() -> None:
    """A window closes at its deadline (README: its device's next reading or
    event at or after it). A: 5 %/m at 100 and 110 s, clean at 120 s, then
    silent until 200 s: its window ends at 130 s. B, same zone, at the
    pre-alarm level at 120 and 130 s: its activity begins exactly at 130 s,
    too late for A, a transient."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series(
        [(0, 100, 0.1), (100, 120, 5.0), (120, 130, 0.1), (200, 300, 0.1)],
        "obscuration",
        temperature=21.0,
    )
    b = series([(0, 120, 0.1), (120, 140, 2.0), (140, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
    ]
    assert summary(ch, "fire", 1) == []


def test_a_lingering_pre_alarm_corroborates_nothing_and_is_not_revived() -> None:
    """A: a transient at 100-110 s and a pre-alarm that lingers at 2 %/m from
    120 s (no new alarm): hovering under the level, its window gets its second
    part and is suppressed at 160 s. B spikes at 240 s: a neighbour at
    pre-alarm level is no second alarm (two-detector dependency), so B is a
    transient of its own and A's transient, 80 s old, stays as it was."""
    rig = Rig([("smoke", 7), ("smoke", 7)])
    a = series([(0, 100, 0.1), (100, 120, 5.0), (120, 300, 2.0)], "obscuration", temperature=21.0)
    b = series([(0, 240, 0.1), (240, 250, 5.0), (250, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 160.0),
    ]
    assert summary(ch, "fire", 1)[-1] == ("verdict", "suppressed", "transient", 270.0)


def test_coincidence_needs_the_same_zone() -> None:
    rig = Rig([("smoke", 7), ("smoke", 8)])
    a = series([(0, 100, 0.1), (100, 110, 5.0), (110, 300, 0.1)], "obscuration", temperature=21.0)
    b = series([(0, 120, 0.1), (120, 130, 5.0), (130, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed({0: a, 1: b})
    assert [c.reason for c in ch if c.action == "verdict"] == ["transient", "transient"]


# --- Steam: a humidity jump seen up to 5 min before an alarm opened ------------------
def shower_then_smoke(fire_at: float) -> list[Row]:
    """Multi detector: humidity 97 %RH from t=70 to t=290 (last steam sample at
    290), back to 50; dense smoke (25 %/m, no CO, no heat) from `fire_at` on."""
    rows: list[Row] = []
    for t in np.arange(0.0, fire_at + 120.0, 10.0):
        rh = 97.0 if 70 <= t < 300 else 50.0
        obs = 25.0 if t >= fire_at else 0.1
        rows.append(
            (float(t), {"obscuration": obs, "temperature": 21.0, "co": 2.0, "humidity": rh})
        )
    return rows


@pytest.mark.parametrize(
    ("after_steam_s", "verdict"),
    [
        (200, ("suppressed", "steam_signature")),
        (300, ("suppressed", "steam_signature")),
        (310, ("confirmed", "obscuration")),
        (900, ("confirmed", "obscuration")),
    ],
)
def test_steam_memory_is_5_min(after_steam_s: int, verdict: tuple[str, str]) -> None:
    fire_at = 290 + after_steam_s
    rig = Rig([("multi", 1)])
    ch = rig.feed({0: shower_then_smoke(fire_at)})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", float(fire_at)),
        ("verdict", *verdict, float(fire_at + 30)),
    ]


def test_steam_alone_opens_nothing() -> None:
    rig = Rig([("multi", 1)])
    ch = rig.feed({0: shower_then_smoke(10_000)[:60]})
    assert ch == []


# --- Pre-alarm: opens at 1.5 %/m, clears below 0.8 x 1.5 = 1.2 %/m -----------------
@pytest.mark.parametrize(
    ("after", "cleared_at"),
    [
        (1.3, None),  # above 1.2: hysteresis holds it open
        (1.25, None),
        (1.1, 120.0),  # below 1.2: cleared
        (0.4, 120.0),
    ],
)
def test_pre_alarm_hysteresis(after: float, cleared_at: float | None) -> None:
    rig = Rig([("smoke", 1)])
    rows = series(
        [(0, 60, 0.1), (60, 120, 2.0), (120, 300, after)], "obscuration", temperature=21.0
    )
    ch = rig.feed({0: rows})
    expected = [("open", "confirmed", "obscuration", 60.0)]
    if cleared_at is not None:
        expected.append(("clear", "confirmed", "condition_gone", cleared_at))
    assert summary(ch, "pre_alarm") == expected
    assert summary(ch, "fire") == []  # 2 %/m is below the 3 %/m alarm level


@pytest.mark.parametrize(("level", "opens"), [(1.4, False), (1.5, True), (2.9, True)])
def test_pre_alarm_level(level: float, opens: bool) -> None:
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: series([(0, 60, 0.1), (60, 200, level)], "obscuration", temperature=21.0)})
    assert bool(summary(ch, "pre_alarm")) is opens
    assert summary(ch, "fire") == []


# --- Rates: taken over at least 20 s of the last minute ------------------------------
def test_rate_of_rise_over_a_40_s_interval() -> None:
    """A heat detector reporting every 40 s, rising 12 °C/min (above 8.3) to
    45 °C (below the 58 °C static level): the rate over one 40 s interval is a
    rate (>= 20 s), so rate of rise opens the alarm; the window (30 s) ends
    before the next reading, which decides: one sample out of normal air is
    no verdict (40 s later, still rising: confirmed by persistence)."""
    rows: list[Row] = []
    for t in range(0, 1200, 40):
        temp = 21.0 if t <= 400 else min(45.0, 21.0 + (t - 400) * 12.0 / 60.0)
        rows.append((float(t), {"temperature": temp}))
    rig = Rig([("heat", 1)])
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "rate_of_rise", 440.0),
        ("verdict", "confirmed", "rate_of_rise", 480.0),
    ]


# --- A multi-criteria detector's own alarm event signs what its readings show ---
@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("lost", [False, True])
def test_cooking_on_two_multis_with_a_reading_lost_is_no_fire(reference: bool, lost: bool) -> None:
    """Cooking fumes on two multi-criteria detectors of a kitchen, no CO or heat
    (an outside check's replay, shapes kept): each sends its own `fire_alarm`.
    With one reading of the second lost on the way (a broker killed), its event
    came after a single reading at pre-alarm level: it was zone activity
    without a signature, and confirmed both by `coincidence`."""
    rise = [0.1, 0.3, 1.4, 2.7, 4.0, 5.3, 6.7, 8.0, 8.8, 8.8, 8.8, 8.5, 8.0, 7.0]
    first: list[Row] = []
    second: list[Row] = []
    for i, x in enumerate(rise + [8.0] * 20):
        t = 20.0 + 10 * i
        first.append((t + 2.4, {"obscuration": x, "temperature": 25.0, "co": 2.0}))
        if not (lost and t == 60.0):  # the second's reading at 4 %/m
            second.append((t, {"obscuration": x * 0.95, "temperature": 24.0, "co": 2.0}))
    events = [(1, 70.0, "fire_alarm"), (0, 72.4, "fire_alarm")]
    rig = Rig([("multi", 1), ("multi", 1)], reference=reference)
    ch = rig.feed({0: first, 1: second}, events=events)
    assert [c.reason for c in ch if c.alarm_type == "fire" and c.verdict == "confirmed"] == []


# --- One sample out of clean air is no verdict: the next reading decides -------
# A device reporting more slowly than the window (every 30-60 s) has no second
# reading in it: the seventh outside check saw insects, sprays and EMI
# confirmed on one sample there, suppressed on 10 s devices.
def _every_60_s(name: str, clean: float, at_600: list[float]) -> list[Row]:
    rows = [(float(t), {name: clean}) for t in range(0, 600, 60)]
    rows += [(600.0 + 60 * i, {name: x}) for i, x in enumerate(at_600)]
    return rows + [(float(t), {name: clean}) for t in range(600 + 60 * len(at_600), 1800, 60)]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("kind", "name", "clean", "spike", "own_alarm", "opened"),
    [
        # An insect: 13 %/m once between clean readings, a minute apart.
        ("smoke", "obscuration", 0.3, 13.0, False, "obscuration"),
        # The same, and the detector sends its own `fire_alarm` with it (its
        # window opens on the event; a recheck saw it confirmed `device_alarm`).
        ("smoke", "obscuration", 0.3, 13.0, True, "device_alarm"),
        # EMI on a heat detector: 95 °C on one reading between 21.5 °C ones.
        ("heat", "temperature", 21.5, 95.0, False, "static_heat"),
    ],
)
def test_one_sample_on_a_detector_reporting_every_60_s_waits_for_its_next(
    reference: bool,
    kind: str,
    name: str,
    clean: float,
    spike: float,
    own_alarm: bool,
    opened: str,
) -> None:
    rig = Rig([(kind, 1)], reference=reference, intervals_s=[60.0])
    events = [(0, 600.0, "fire_alarm")] if own_alarm else []
    ch = rig.feed({0: _every_60_s(name, clean, [spike])}, events=events)
    assert summary(ch, "fire") == [
        ("open", "pending", opened, 600.0),
        ("verdict", "suppressed", "transient", 660.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
def test_a_fire_on_a_detector_reporting_every_60_s_is_confirmed_by_its_second_reading(
    reference: bool,
) -> None:
    """Out of clean air to 6 %/m, then 12: confirmed at the second reading."""
    rig = Rig([("smoke", 1)], reference=reference, intervals_s=[60.0])
    ch = rig.feed({0: _every_60_s("obscuration", 0.3, [6.0, 12.0, 20.0, 25.0])})
    assert [(c.verdict, (c.at_ms - T0) / S) for c in ch if c.alarm_type == "fire"] == [
        ("pending", 600.0),
        ("confirmed", 660.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("interval", "samples"),
    [
        (30.0, [4.5, 4.5]),  # an outside check's insect on a 30 s detector
        (30.0, [5.0, 5.5]),
        (60.0, [6.0, 6.0]),  # ... and on a 60 s one
        (20.0, [4.0, 4.2]),
    ],
)
def test_two_steady_samples_on_a_slow_detector_are_a_spike_not_a_fire(
    reference: bool, interval: float, samples: list[float]
) -> None:
    """Two readings at the alarm level out of clean air, neither growing fast
    from the first, then clean air again: on a 10 s detector a transient; on
    one reporting every 20-60 s the window ended on the second and confirmed
    it by persistence. Its next reading decides, as for one sample."""
    rows = [(float(t), {"obscuration": 0.3}) for t in range(0, 600, int(interval))]
    rows += [(600.0 + interval * i, {"obscuration": x}) for i, x in enumerate(samples)]
    after = 600.0 + interval * len(samples)
    rows += [(after + interval * i, {"obscuration": 0.3}) for i in range(10)]
    rig = Rig([("smoke", 1)], reference=reference, intervals_s=[interval])
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 600.0),
        ("verdict", "suppressed", "transient", after),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("kind", "verdict"),
    # (a multi-criteria detector: its warming ceiling persisted through the window)
    [("heat", "static_heat"), ("multi", "combined")],
)
def test_static_heat_on_a_30_s_detector_is_confirmed_at_its_window_end(
    reference: bool, kind: str, verdict: str
) -> None:
    """An outside check's slow fire under a 30 s heat detector, warming by
    4 °C a minute (under the rate-of-rise and heat-rise levels): 57 °C at
    540 s, then 59 (over the 58 °C static level), 61, 63. Its second reading
    at the level, at the window's end, confirms: no insect heats a ceiling
    (it waited for a third, a reading late, as two steady optical samples do)."""
    rows = [(float(t), {"temperature": 21.0 + t / 15}) for t in range(0, 660, 30)]
    rig = Rig([(kind, 1)], reference=reference, intervals_s=[30.0])
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "static_heat", 570.0),
        ("verdict", "confirmed", verdict, 600.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(("interval", "every"), [(60, 2), (60, 3), (30, 5)])
def test_a_ceiling_flickering_across_the_static_level_is_confirmed(
    reference: bool, interval: int, every: int
) -> None:
    """A recheck's heat fires sitting at the static level after a slow rise:
    57.5 °C, and 58.6 on one reading in two, three or five. Each reading over
    58 °C was a lone sample judged `transient` by the next, for 15 min. The
    ceiling still within 5 °C of the level stayed hot: confirmed by it."""
    rows: list[Row] = [(float(t), {"temperature": 21.0 + t / 15}) for t in range(0, 540, interval)]
    rows += [
        (540.0 + interval * i, {"temperature": 58.6 if i % every == 1 else 57.5}) for i in range(15)
    ]
    rig = Rig([("heat", 1)], reference=reference, intervals_s=[float(interval)])
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "static_heat", 540.0 + interval),
        ("verdict", "confirmed", "static_heat", 540.0 + 2 * interval),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(("interval", "blast"), [(30, 66.0), (60, 70.0), (10, 64.0)])
def test_blasts_of_hot_air_on_a_heat_detector_are_transient(
    reference: bool, interval: int, blast: float
) -> None:
    """A hair dryer or a heat gun, one reading each, two readings apart, the
    room at 21 °C between: each falls back to the room's air, `transient`
    (a recheck saw them `reverified` under a rule since withdrawn)."""
    rows: list[Row] = [(float(t), {"temperature": 21.0}) for t in range(0, 600, interval)]
    rows += [
        (600.0 + interval * i, {"temperature": blast if i in (0, 2, 4) else 21.0})
        for i in range(10)
    ]
    rig = Rig([("heat", 1)], reference=reference, intervals_s=[float(interval)])
    ch = rig.feed({0: rows})
    verdicts = [v for a, v, _, _ in summary(ch, "fire") if a == "verdict"]
    assert verdicts
    assert set(verdicts) == {"suppressed"}


def _monitor_every_30_s(residual_ma: list[float]) -> list[Row]:
    rows: list[Row] = [(float(t), {"residual_current": 30.0}) for t in range(0, 600, 30)]
    rows += [(600.0 + 30 * i, {"residual_current": x}) for i, x in enumerate(residual_ma)]
    after = 600.0 + 30 * len(residual_ma)
    return rows + [(after + 30 * i, {"residual_current": 30.0}) for i in range(10)]


@pytest.mark.parametrize("reference", [False, True])
def test_one_inrush_sample_on_a_30_s_monitor_is_judged_by_its_next_reading(
    reference: bool,
) -> None:
    """An outside check's motor start: 350 mA on one reading of a monitor
    reporting every 30 s, 31 mA on the next. Its window (30 s) ended with
    that next reading, which showed the leak gone: it was confirmed there."""
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[30.0])
    ch = rig.feed({0: _monitor_every_30_s([350.0])})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 600.0),
        ("verdict", "suppressed", "transient", 630.0),
    ]
    # A leak that is still there on the next reading is confirmed by it.
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[30.0])
    ch = rig.feed({0: _monitor_every_30_s([350.0, 360.0, 340.0])})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 600.0),
        ("verdict", "confirmed", "residual_current", 630.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("interval", [30, 60])
def test_an_intermittent_fault_on_a_slow_monitor_is_confirmed_when_it_comes_back(
    reference: bool, interval: int
) -> None:
    """An arcing fault's leakage over the setting on alternate readings
    (450 mA, then 100) of a monitor reporting every 30 or 60 s: each sample
    is alone, gone on the next reading; back within three intervals of that
    verdict it is the same fault, confirmed. One inrush blip stays transient
    (above)."""
    rows: list[Row] = [(float(t), {"residual_current": 30.0}) for t in range(0, 600, interval)]
    rows += [
        (600.0 + interval * i, {"residual_current": 450.0 if i % 2 == 0 else 100.0})
        for i in range(10)
    ]
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[float(interval)])
    ch = rig.feed({0: rows})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 600.0),
        ("verdict", "suppressed", "transient", 600.0 + interval),
        ("open", "pending", "residual_current", 600.0 + 2 * interval),
        ("verdict", "confirmed", "residual_current", 600.0 + 2 * interval),
    ]


def _monitor(interval: float, high: set[int], n: int) -> list[Row]:
    """Readings every `interval` s from 600 s (30 mA before), 450 mA on the
    readings numbered in `high`, 30 mA on the others."""
    rows: list[Row] = [(float(t), {"residual_current": 30.0}) for t in range(0, 600, 60)]
    return rows + [
        (600.0 + interval * i, {"residual_current": 450.0 if i in high else 30.0}) for i in range(n)
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("interval", "registered", "every", "confirmed_at"),
    [
        (60.0, 60.0, 3, 780.0),  # a recheck's fault on one reading in three, never confirmed
        (30.0, 30.0, 4, 720.0),  # ... on one in four of a 30 s monitor
        (62.0, 60.0, 2, 724.0),  # ... registered as 60 s, really reporting every 62 s
    ],
)
def test_an_intermittent_fault_with_sparse_high_readings_is_confirmed(
    reference: bool, interval: float, registered: float, every: int, confirmed_at: float
) -> None:
    high = set(range(0, 12, every))
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[registered])
    ch = rig.feed({0: _monitor(interval, high, 12)})
    verdicts = [(v, t) for a, v, _, t in summary(ch, "electrical") if a == "verdict"]
    assert verdicts == [("suppressed", 600.0 + interval), ("confirmed", confirmed_at)]


@pytest.mark.parametrize("reference", [False, True])
def test_one_inrush_sample_on_a_monitor_reporting_early_is_still_transient(
    reference: bool,
) -> None:
    """A recheck's 30 s monitor reporting every 28 s: the reading after the
    blip came before the window's end, and the 10 s clear period let the
    window confirm first."""
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[30.0])
    ch = rig.feed({0: _monitor(28.0, {0}, 10)})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 600.0),
        ("verdict", "suppressed", "transient", 628.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
def test_a_start_retried_every_minute_on_a_10_s_monitor_stays_transient(
    reference: bool,
) -> None:
    """A compressor's start retried every 60 s, one 360 mA reading each: not
    an intermittent fault on a monitor that would have seen one within 30 s."""
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[10.0])
    ch = rig.feed({0: _monitor(10.0, {0, 6, 12}, 20)})
    assert [v for a, v, _, _ in summary(ch, "electrical") if a == "verdict"] == ["suppressed"] * 3


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("name", "hovering", "limit"),
    [("residual_current", [310.0, 290.0], 300.0), ("cable_temperature", [70.4, 69.6], 70.0)],
)
@pytest.mark.parametrize("interval", [30, 60])
def test_a_condition_hovering_at_its_limit_on_a_slow_monitor_is_confirmed(
    reference: bool, name: str, hovering: list[float], limit: float, interval: int
) -> None:
    """A recheck's earth fault at the 300 mA setting (310 mA on one reading
    in five, 290 on the others), and a cable at its 70 °C limit, on 30 and 60 s
    monitors: each reading over the limit was a lone sample, gone on the
    next, for 15 min. A reading still near the limit after it is the
    condition staying: confirmed by it. (Inrush falls back to normal: above.)"""
    normal = 30.0 if name == "residual_current" else 40.0
    rows: list[Row] = [(float(t), {name: normal}) for t in range(0, 600, interval)]
    high, near = hovering
    rows += [(600.0 + interval * i, {name: high if i % 5 == 0 else near}) for i in range(15)]
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[float(interval)])
    ch = rig.feed({0: rows})
    verdicts = [(v, t) for a, v, _, t in summary(ch, "electrical") if a == "verdict"]
    assert verdicts == [("confirmed", 600.0 + interval)]
    assert high > limit > near


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("interval", "period"), [(30, 60), (30, 90), (30, 120), (60, 120), (60, 240)]
)
def test_a_motor_restarting_every_few_minutes_is_no_recurring_fault(
    reference: bool, interval: int, period: int
) -> None:
    """A recheck's VFD restarted every one to four minutes: each start one
    reading of 360 mA with the load current at 90 A (25 A running, 30 mA
    between). Within three reporting intervals of the last start's
    `transient`, it was confirmed as an intermittent fault; the inrush on
    the same reading says it is a start. The same leakage with the load
    steady is the fault (`test_an_intermittent_fault_with_sparse_high_readings_is_confirmed`)."""
    starts = set(range(0, 10 * period, period))
    rows: list[Row] = [
        (float(t), {"residual_current": 30.0, "current": 25.0}) for t in range(0, 600, interval)
    ]
    rows += [
        (
            600.0 + t,
            {"residual_current": 360.0, "current": 90.0}
            if t in starts
            else {"residual_current": 30.0, "current": 25.0},
        )
        for t in range(0, 10 * period, interval)
    ]
    rig = Rig([("electrical", 1)], reference=reference, intervals_s=[float(interval)])
    ch = rig.feed({0: rows})
    verdicts = [v for a, v, _, _ in summary(ch, "electrical") if a == "verdict"]
    assert verdicts == ["suppressed"] * 10


def test_a_monitor_gone_silent_after_one_sample_is_confirmed() -> None:
    """The next reading never comes (the monitor lost power with the
    fault): judged silent on arrival time, the condition is confirmed."""
    rig = Rig([("electrical", 1)], intervals_s=[30.0])
    rows = [(float(t), {"residual_current": 30.0}) for t in range(0, 600, 30)]
    ch = rig.feed({0: [*rows, (600.0, {"residual_current": 350.0})]})
    assert summary(ch, "electrical") == [("open", "pending", "residual_current", 600.0)]
    ch = rig.engine.advance(T0 + 900 * S)
    assert summary(ch, "electrical") == [("verdict", "confirmed", "residual_current", 630.0)]


@pytest.mark.parametrize("reference", [False, True])
def test_a_fire_on_a_30_s_detector_is_confirmed_by_its_third_steady_reading(
    reference: bool,
) -> None:
    """A fire whose smoke does not grow fast (4, 4.4, 4.9 %/m every 30 s) on a
    30 s detector: confirmed by the third reading, one interval later than
    before spikes of two samples waited."""
    rig = Rig([("smoke", 1)], reference=reference, intervals_s=[30.0])
    rows = [(float(t), {"obscuration": 0.3}) for t in range(0, 600, 30)]
    rows += [(600.0 + 30 * i, {"obscuration": 4.0 + 0.45 * i}) for i in range(10)]
    ch = rig.feed({0: rows})
    assert [(c.verdict, (c.at_ms - T0) / S) for c in ch if c.alarm_type == "fire"] == [
        ("pending", 600.0),
        ("confirmed", 660.0),
    ]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("temperature", [62.0, -20.0])  # (a recheck's EMI read -20 °C)
def test_emi_on_a_multi_criteria_detector_is_a_transient_not_steam(
    reference: bool, temperature: float
) -> None:
    """EMI jumps every channel of a detector for one reading, humidity to 100 %RH
    too: an outside check saw it suppressed as `steam_signature`. A reading
    whose temperature jumped faster than any fire heats a ceiling is no
    steam either."""
    normal = {"obscuration": 0.3, "temperature": 22.0, "co": 2.0, "humidity": 45.0}
    burst = {"obscuration": 20.3, "temperature": temperature, "co": 252.0, "humidity": 100.0}
    rows = [(float(t), dict(normal)) for t in range(0, 600, 10)]
    rows += [(600.0, burst)] + [(float(t), dict(normal)) for t in range(610, 900, 10)]
    rig = Rig([("multi", 1)], reference=reference)
    ch = rig.feed({0: rows})
    verdicts = [(c.verdict, c.reason) for c in ch if c.alarm_type == "fire"]
    assert verdicts[:2] == [("pending", "obscuration"), ("suppressed", "transient")]
    # (back from -20 °C, the recovery reads as a rate of rise: another transient)
    assert {v for v in verdicts if v[0] != "pending"} == {("suppressed", "transient")}


def test_one_sample_and_then_silence_is_confirmed_at_the_window_end() -> None:
    """A detector that alarms once and is heard no more (burnt, cut off): judged
    silent on arrival time, the lone sample's window is confirmed at its end."""
    rig = Rig([("smoke", 1)], intervals_s=[60.0])
    rows = _every_60_s("obscuration", 0.3, [13.0])[:11]
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [("open", "pending", "obscuration", 600.0)]
    ch = rig.engine.advance(T0 + 3_600 * S)
    assert summary(ch, "fire") == [("verdict", "confirmed", "obscuration", 630.0)]


def test_one_sample_after_a_reading_at_pre_alarm_level_is_judged_at_the_window_end() -> None:
    """A smouldering fire's signal rising through the pre-alarm level on a
    60 s detector: its window ends confirmed at 30 s, as on any detector."""
    rig = Rig([("smoke", 1)], intervals_s=[60.0])
    ch = rig.feed({0: _every_60_s("obscuration", 0.3, [2.2, 3.4, 4.5, 6.0])})
    assert summary(ch, "fire")[:2] == [
        ("open", "pending", "obscuration", 660.0),
        ("verdict", "confirmed", "obscuration", 690.0),
    ]


def test_no_rate_over_less_than_20_s() -> None:
    """A new heat detector's first two readings 10 s apart, 2 °C apart: 12 °C/min
    over 10 s is noise, not a rate; over 20 s it is 6 °C/min (below 8.3)."""
    rows: list[Row] = [(0.0, {"temperature": 21.0})]
    rows += [(float(t), {"temperature": 23.0}) for t in range(10, 300, 10)]
    rig = Rig([("heat", 1)])
    assert rig.feed({0: rows}) == []


@pytest.mark.parametrize(("static", "opens"), [(57.5, False), (58.0, True)])
def test_static_heat_58_c(static: float, opens: bool) -> None:
    # Slow warming (1 °C/min) to the level, so only the static element can fire.
    rows = [(float(t), {"temperature": min(static, 40.0 + t / 60.0)}) for t in range(0, 2400, 10)]
    rig = Rig([("heat", 1)])
    ch = rig.feed({0: rows})
    if opens:
        assert summary(ch, "fire")[:1] == [("open", "pending", "static_heat", 1080.0)]
        assert summary(ch, "fire")[1][1:3] == ("confirmed", "static_heat")
    else:
        assert summary(ch, "fire") == []


# --- Drift compensation: the baseline follows clean air by 0.1 %/m per hour at most --
@pytest.mark.parametrize(
    ("raw", "fires", "baseline"),
    [
        (3.25, True, 0.2),  # 3.25 - 0.2 = 3.05 >= 3.0
        (3.15, False, None),  # 3.15 - 0.2 = 2.95 < 3.0
    ],
)
def test_drift_tracks_at_most_0_1_per_hour(raw: float, fires: bool, baseline: float | None) -> None:
    """Clean air reads 0.4 %/m for two hours (inside the 0.5 band): the baseline
    steps 0.1 per hour (0.0 -> 0.1 at 1 h -> 0.2 at 2 h), not all the way."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.4, "temperature": 21.0}) for t in range(0, 2 * H, 60)
    ]
    rows += [
        (float(t), {"obscuration": raw, "temperature": 21.0}) for t in range(2 * H, 2 * H + 120, 10)
    ]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=600.0)
    fire = [c for c in ch if c.alarm_type == "fire"]
    if not fires:
        assert fire == []
        return
    assert (fire[0].action, fire[0].at_ms - T0) == ("open", 2 * H * S)
    assert fire[0].detail["baseline"] == pytest.approx(baseline)
    assert fire[0].detail["obscuration"] == pytest.approx(raw - 0.2)


def test_drift_hours_count_from_the_devices_first_reading() -> None:
    """The same two steps, but the detector's first reading comes at 0:59 on
    the clock: its hours end at 1:59 and 2:59, not on the clock's hours, so at
    2:29 the baseline has stepped once (0.1) and 3.15 %/m raw is an alarm
    (3.05). Counted on the clock (1:00, 2:00) it would be 0.2, and no alarm."""
    start = 59 * 60
    rows: list[Row] = [
        (float(t), {"obscuration": 0.4, "temperature": 21.0}) for t in range(start, 149 * 60, 60)
    ]
    rows += [
        (float(t), {"obscuration": 3.15, "temperature": 21.0})
        for t in range(149 * 60, 149 * 60 + 120, 10)
    ]
    ch = Rig([("smoke", 1)]).feed({0: rows}, batch_s=600.0)
    fire = [c for c in ch if c.alarm_type == "fire"]
    assert (fire[0].action, fire[0].at_ms - T0) == ("open", 149 * 60 * S)
    assert fire[0].detail["baseline"] == pytest.approx(0.1)


def test_a_learnt_baseline_outlives_a_restart() -> None:
    """Two hours of clean air at 0.4 %/m teach a baseline of 0.2 (as above); it is
    drained for storage, given to a new engine (a restarted ingest), and 3.15 %/m
    raw (2.95 compensated) is no alarm there either. Without it: an alarm."""
    learn: list[Row] = [
        (float(t), {"obscuration": 0.4, "temperature": 21.0}) for t in range(0, 2 * H + 60, 60)
    ]
    first = Rig([("smoke", 1)])
    first.feed({0: learn}, batch_s=600.0)
    slots, baselines = first.engine.drain_baselines()
    assert slots.tolist() == [0]
    assert baselines.tolist() == [pytest.approx(0.2)]
    assert first.engine.drain_baselines()[0].tolist() == []  # drained: nothing new

    after: list[Row] = [
        (float(t), {"obscuration": 3.15, "temperature": 21.0})
        for t in range(3 * H, 3 * H + 120, 10)
    ]
    restarted = Rig([("smoke", 1)])
    restarted.engine.restore_baselines(slots, baselines)
    assert summary(restarted.feed({0: after}), "fire") == []
    forgetful = Rig([("smoke", 1)])
    assert summary(forgetful.feed({0: after}), "fire")[0][:3] == ("open", "pending", "obscuration")


def test_a_stored_baseline_at_the_limit_keeps_the_drift_fault() -> None:
    restarted = Rig([("smoke", 1)])
    restarted.engine.restore_baselines([0], [1.5])
    rows: list[Row] = [
        (float(t), {"obscuration": 1.6, "temperature": 21.0}) for t in range(0, 60, 10)
    ]
    assert [f[:3] for f in summary(restarted.feed({0: rows}), "fault")] == [
        ("open", "confirmed", "drift_limit")
    ]


def test_drift_does_not_track_above_the_band() -> None:
    """0.7 %/m above the baseline is not clean air: after three hours the
    baseline is still 0, so 3.0 %/m raw is an alarm."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.7, "temperature": 21.0}) for t in range(0, 3 * H, 60)
    ]
    rows += [
        (float(t), {"obscuration": 3.0, "temperature": 21.0}) for t in range(3 * H, 3 * H + 60, 10)
    ]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=600.0)
    fire = [c for c in ch if c.alarm_type == "fire"]
    assert fire[0].at_ms - T0 == 3 * H * S
    assert fire[0].detail["baseline"] == 0.0


def test_drift_limit_is_a_fault() -> None:
    """Clean air creeping up 0.1 %/m per hour: at 1.5 %/m of compensation (the
    limit) the detector reports a fault (drift_limit)."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.05 + 0.1 * (t // H), "temperature": 21.0})
        for t in range(0, 18 * H, 600)
    ]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    faults = summary(ch, "fault")
    assert [f[:3] for f in faults] == [("open", "confirmed", "drift_limit")]
    assert faults[0][3] >= 15 * H  # 15 steps of 0.1 %/m at the soonest
    assert summary(ch, "fire") == []


def test_drift_fault_stays_while_the_air_is_not_clean() -> None:
    """After the limit is reached (as above), three hours at 2.6 %/m raw (1.1
    over the baseline: beyond the 0.5 %/m band, so not clean air, not
    tracked): the baseline does not move and the fault stays."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.05 + 0.1 * (t // H), "temperature": 21.0})
        for t in range(0, 18 * H, 600)
    ]
    rows += [
        (float(t), {"obscuration": 2.6, "temperature": 21.0}) for t in range(18 * H, 21 * H, 600)
    ]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    assert [f[:3] for f in summary(ch, "fault")] == [("open", "confirmed", "drift_limit")]
    assert rig.engine.open_alarms() == {(0, "fault"): "confirmed"}


def test_multi_aerosol_suppressed_then_co_reopens_at_once() -> None:
    """A multi-criteria detector in cooking aerosol (5 %/m, no CO, no heat rise)
    at 100, 110, 120 s: `aerosol_signature` at 130 s. Its next reading, at
    135 s, still 5 %/m but with 40 ppm CO (above clean air: evidence that was
    not there when it was suppressed): a new alarm at once, confirmed by CO
    on the second such reading (145 s)."""
    rig = Rig([("multi", 1)])
    air = {"temperature": 21.0, "humidity": 40.0}
    rows: list[Row] = [
        (float(t), {"obscuration": 0.1, "co": 0.0, **air}) for t in range(0, 100, 10)
    ]
    rows += [(float(t), {"obscuration": 5.0, "co": 0.0, **air}) for t in (100, 110, 120)]
    rows += [(float(t), {"obscuration": 5.0, "co": 40.0, **air}) for t in (135, 145, 155)]
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "aerosol_signature", 130.0),
        ("open", "pending", "obscuration", 135.0),
        ("verdict", "confirmed", "co_rise", 145.0),
    ]


def test_multi_evidence_anywhere_in_the_window_counts() -> None:
    """A multi-criteria detector at 5 %/m from 100 s; CO at 15 ppm (above the
    10 ppm of clean air: chemical evidence) on its first reading only. The
    aerosol is not CO-free in this window: confirmed by persistence at 130 s,
    not `aerosol_signature`."""
    rig = Rig([("multi", 1)])
    air = {"temperature": 21.0, "humidity": 40.0}
    rows: list[Row] = [
        (float(t), {"obscuration": 0.1, "co": 0.0, **air}) for t in range(0, 100, 10)
    ]
    rows += [(100.0, {"obscuration": 5.0, "co": 15.0, **air})]
    rows += [(float(t), {"obscuration": 5.0, "co": 0.0, **air}) for t in (110, 120, 130)]
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "obscuration", 130.0),
    ]


def test_rise_of_exactly_8_3_per_min_is_a_rate_of_rise_alarm() -> None:
    """README table, heat: `rate_of_rise_c_per_min` 8.3. 20 °C for a minute,
    then 28.3 °C: 8.3 °C over 60 s opens an alarm for that reason."""
    rig = Rig([("heat", 1)])
    rows: list[Row] = [(float(t), {"temperature": 20.0}) for t in range(0, 60, 10)]
    rows += [(60.0, {"temperature": 28.3})]
    ch = rig.feed({0: rows})
    assert summary(ch, "fire")[:1] == [("open", "pending", "rate_of_rise", 60.0)]
    assert [c.detail["temperature_rate"] for c in ch if c.action == "open"] == [8.3]


# --- Verification window: 30 s; transient = 1-2 samples ------------------------------
@pytest.mark.parametrize(
    ("samples", "verdict"),
    [
        (1, ("suppressed", "transient")),
        (2, ("suppressed", "transient")),
        (3, ("suppressed", "aerosol_decay")),
        (4, ("confirmed", "obscuration")),
    ],
)
def test_verification_window(samples: int, verdict: tuple[str, str]) -> None:
    rig = Rig([("smoke", 1)])
    stop = 100 + 10 * samples
    rows = series(
        [(0, 100, 0.1), (100, stop, 5.0), (stop, 400, 0.1)], "obscuration", temperature=21.0
    )
    ch = rig.feed({0: rows})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", *verdict, 130.0),
    ]
    # The verdict's evidence: samples at the alarm level in the window (100..130
    # inclusive), and the window's length.
    fire_verdict = next(c for c in ch if c.alarm_type == "fire" and c.action == "verdict")
    assert fire_verdict.detail == {"samples_above": float(min(samples, 4)), "window_s": 30.0}


# --- Smoke in puffs: 2 pre-alarm openings in the 5 min before, the last 30 s out,
# over a haze (back in clean air after each: separate visits) ------------------
@pytest.mark.parametrize("reference", [False, True], ids=["engine", "naive"])
@pytest.mark.parametrize(
    ("kind", "puffs_at", "between", "verdict"),
    [
        ("smoke", (310, 450), 0.8, ("confirmed", "smoke_puffs")),
        ("smoke", (300, 580), 0.8, ("suppressed", "transient")),  # 580: its own rise
        ("smoke", (290, 450), 0.8, ("suppressed", "transient")),  # 290: 310 s before it
        ("smoke", (450,), 0.8, ("suppressed", "transient")),
        ("multi", (310, 450), 0.8, ("suppressed", "transient")),
        ("smoke", (310, 450), 0.2, ("suppressed", "transient")),  # clean air between
        ("smoke", (310, 450), 0.45, ("suppressed", "transient")),  # 0.5: clean air's edge
        ("smoke", (310, 450), 0.55, ("confirmed", "smoke_puffs")),
    ],
)
def test_smoke_in_puffs_before_an_alarm(
    kind: str, puffs_at: tuple[int, ...], between: float, verdict: tuple[str, str], reference: bool
) -> None:
    rig = Rig([(kind, 1)], reference=reference)
    points = [(0.0, 800.0, between)]
    for at in puffs_at:  # one reading at 2 %/m: the pre-alarm opens, then clears
        points.append((float(at), at + 10.0, 2.0))
    points.append((600.0, 620.0, 5.0))  # two readings at the alarm level
    values: dict[float, dict[str, float]] = {}
    for start, stop, x in points:
        for t, v in series([(start, stop, x)], "obscuration", temperature=21.0):
            values[t] = v
    ch = rig.feed({0: sorted(values.items())})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 600.0),
        ("verdict", *verdict, 630.0),
    ]


def test_verification_window_override_5_s_minimum() -> None:
    # verification_s is clamped to 5-60 s: 1 s means 5 s. Readings every 3 s
    # from 100, growing fast (two steady ones would be a spike waiting for its
    # third): a 1 s window would be decided by the one at 103.
    rig = Rig([("smoke", 1, {"verification_s": 1.0})])
    rows = series([(0, 100, 0.1)], "obscuration", temperature=21.0)
    rows += [(100.0 + 3 * i, {"obscuration": 5.0 + i, "temperature": 21.0}) for i in range(100)]
    ch = rig.feed({0: rows})
    assert summary(ch, "fire")[:2] == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "fast_growth", 105.0),
    ]


# --- Fast growth: >= 4 %/m per minute over two consecutive intervals -------------
# The optical channel alone: it names the verdict of a signal that persisted to
# the window's end, it never confirms before it (a cooking burst grows as fast).
def _fast(levels: Sequence[float]) -> list[Row]:
    rows = series([(0, 600, 0.1)], "obscuration", temperature=21.0)
    rows += [
        (600.0 + 10 * i, {"obscuration": x, "temperature": 21.0}) for i, x in enumerate(levels)
    ]
    after = 600.0 + 10 * len(levels)
    return rows + series([(after, after + 300, levels[-1])], "obscuration", temperature=21.0)


def test_fast_growth_that_persists_is_confirmed_at_the_window_end() -> None:
    # 600: 1.0 (+5.4 %/m/min), 610: 3.5 (alarm, +15 %/m/min twice: fast growth)...
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([1.0, 3.5, 6.0, 8.5, 11.0, 13.5])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "confirmed", "fast_growth", 640.0),
    ]


def test_fast_growth_burst_that_falls_back_is_an_aerosol() -> None:
    # The same rise, then back under 3 %/m before 640: a cooking burst.
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([1.0, 3.5, 6.0, 5.0, 2.0, 0.5, 0.1])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "suppressed", "aerosol_decay", 640.0),
    ]


def test_spray_emptying_fast_at_the_window_end_is_an_aerosol() -> None:
    # Up to 20 %/m, then -48 and -36 %/m per minute on the last two readings
    # of the window, still above 3 %/m at 640: a spray on its way out.
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([1.0, 3.5, 20.0, 12.0, 6.0, 5.0, 4.0, 3.5, 3.5, 3.5, 3.5])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "suppressed", "aerosol_decay", 640.0),
        # Still at the alarm level a window (30 s) later: it opens again, and
        # persists: a fire.
        ("open", "pending", "obscuration", 670.0),
        ("verdict", "confirmed", "obscuration", 700.0),
    ]


# --- Smoke that ebbs while the fire burns ------------------------------------
# A recheck's fires (2026-12-07) against a rule, withdrawn, that suppressed a
# smoke-only signal still at the level but sinking at the window's end (as
# cooking fumes do once the pan is off): a flare settling to a steady level
# over minutes, and a smouldering fire's puffs in a draught, were suppressed
# window after window and confirmed 4-11 min late, or never. On one optical
# channel the ebb of fumes and of a fire look alike for minutes; persistence
# at the level confirms, whatever the slope.
_FLARE_SETTLES = [9.96, 9.34, 8.78, 8.34, 7.9, 7.5, 7.1, 6.8, 6.5, 6.2, 5.9, 5.7, 5.5, 5.2, 5.0]
_DRAUGHT_PUFFS = [3.56, 8.0, 7.63, 7.18, 6.74, 6.29, 5.85, 5.4, 4.96, 4.51, 4.07, 3.62]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize(
    ("levels", "reason"), [(_FLARE_SETTLES, "obscuration"), (_DRAUGHT_PUFFS * 3, "fast_growth")]
)
def test_smoke_that_ebbs_at_the_level_while_the_fire_burns_is_confirmed_at_the_window_end(
    reference: bool, levels: list[float], reason: str
) -> None:
    rig = Rig([("smoke", 1)], reference=reference)
    ch = rig.feed({0: _fast(levels)})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 600.0),
        ("verdict", "confirmed", reason, 630.0),
    ]


def test_one_fast_fall_is_not_a_decay() -> None:
    # Falling fast on the last reading only (from 20 to 12): not yet emptying,
    # nor known to stay. The window gets its second part; the next reading,
    # at the level and not falling, confirms.
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([1.0, 3.5, 9.0, 20.0, 12.0, 12.0])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "confirmed", "fast_growth", 650.0),
    ]


def test_a_spray_judged_after_one_fast_fall_is_an_aerosol() -> None:
    # The third outside check's spray: bursts up to 17 %/m, one fast fall at
    # the window's end (640 s), then emptying: at the end of the second part
    # (670 s) it is still falling fast, on two readings running.
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([1.0, 8.3, 13.8, 17.1, 12.7, 9.6, 7.3, 5.5, 4.2, 3.1, 2.4, 1.8])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "suppressed", "aerosol_decay", 670.0),
    ]


def test_slow_growth_that_persists_is_an_obscuration_alarm() -> None:
    # +0.5 %/m per 10 s is 3 %/m per minute, under 4: not fast growth.
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: _fast([2.5, 3.0, 3.5, 4.0, 4.5, 5.0])})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 610.0),
        ("verdict", "confirmed", "obscuration", 640.0),
    ]


# --- Latching and clearing -------------------------------------------------------------
def test_cleared_fire_still_burning_opens_again() -> None:
    """An operator clears a confirmed fire while the detector still reads 5 %/m:
    the next reading opens a new alarm, and it is confirmed 30 s later."""
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: series([(0, 100, 0.1), (100, 200, 5.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "obscuration", 130.0),
    ]
    rig.engine.clear(0, "fire")
    ch = rig.feed({0: series([(200, 300, 5.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 200.0),
        ("verdict", "confirmed", "obscuration", 230.0),
    ]


def test_confirmed_fire_latches_whatever_the_device_sends() -> None:
    rig = Rig([("smoke", 1)])
    rows = series(
        [(0, 100, 0.1), (100, 200, 5.0), (200, 900, 0.1), (900, 1000, 5.0)],
        "obscuration",
        temperature=21.0,
    )
    ch = rig.feed({0: rows}, events=[(0, 500.0, "restore")])
    assert summary(ch, "fire") == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "obscuration", 130.0),
    ]
    assert rig.engine.open_alarms()[(0, "fire")] == "confirmed"


def test_cleared_electrical_still_high_opens_again() -> None:
    rig = Rig([("electrical", 1)])
    ch = rig.feed({0: series([(0, 100, 10.0), (100, 200, 400.0)], "residual_current")})
    assert summary(ch, "electrical")[-1][:3] == ("verdict", "confirmed", "residual_current")
    rig.engine.clear(0, "electrical")
    ch = rig.feed({0: series([(200, 300, 400.0)], "residual_current")})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 200.0),
        ("verdict", "confirmed", "residual_current", 220.0),
    ]


# --- Restored at start-up --------------------------------------------------------------
def test_restored_pending_fire_is_resolved_by_its_window() -> None:
    """A fire opened pending at t=0 before a restart: the device's readings after
    the restart resolve the same alarm (confirmed at 0 + 30 s), opening nothing new."""
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "fire", "pending", T0, "obscuration")
    assert rig.engine.open_alarms() == {(0, "fire"): "pending"}
    ch = rig.feed({0: series([(10, 100, 5.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire") == [("verdict", "confirmed", "obscuration", 30.0)]


def test_restored_pending_fire_gone_is_a_transient() -> None:
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "fire", "pending", T0, "obscuration")
    ch = rig.feed({0: series([(10, 100, 0.1)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire") == [("verdict", "suppressed", "transient", 30.0)]


def test_restored_confirmed_fire_latches() -> None:
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "fire", "confirmed", T0, "obscuration")
    ch = rig.feed({0: series([(10, 300, 5.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire") == []  # the open alarm goes on; nothing new
    assert rig.engine.open_alarms() == {(0, "fire"): "confirmed", (0, "pre_alarm"): "confirmed"}


@pytest.mark.parametrize("verdict", ["confirmed", "pending"])
def test_restored_electrical_alarm_is_kept(verdict: str) -> None:
    rig = Rig([("electrical", 1)])
    rig.engine.restore_alarm(0, "electrical", verdict, T0, "residual_current")
    assert rig.engine.open_alarms() == {(0, "electrical"): verdict}
    ch = rig.feed({0: series([(10, 100, 400.0)], "residual_current")})
    if verdict == "confirmed":
        assert summary(ch, "electrical") == []  # latched: no second alarm
    else:  # persisted 20 s since it opened at 0
        assert summary(ch, "electrical") == [("verdict", "confirmed", "residual_current", 20.0)]
    assert rig.engine.open_alarms() == {(0, "electrical"): "confirmed"}


def test_restored_fault_clears_on_restore() -> None:
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "fault", "confirmed", T0, "device_fault")
    ch = rig.feed(
        {0: series([(10, 100, 0.1)], "obscuration", temperature=21.0)},
        events=[(0, 50.0, "restore")],
    )
    assert summary(ch, "fault") == [("clear", "confirmed", "restore", 50.0)]


def test_restored_panel_alarms_never_end_by_time() -> None:
    """A panel point's pending fire (reason `panel_alarm`, docs/contract-extension.md)
    and a monitor's pending electrical alarm restored at start-up wait for
    corroboration or a person: 10 min of the devices' own readings decide nothing."""
    rig = Rig([("smoke", 1), ("electrical", 2)])
    rig.engine.restore_alarm(0, "fire", "pending", T0, "panel_alarm")
    rig.engine.restore_alarm(1, "electrical", "pending", T0, "panel_alarm")
    ch = rig.feed(
        {
            0: series([(10, 600, 0.1)], "obscuration", temperature=21.0),
            1: series([(10, 600, 5.0)], "current"),
        }
    )
    assert ch == []
    assert rig.engine.open_alarms() == {(0, "fire"): "pending", (1, "electrical"): "pending"}


def test_restored_pending_electrical_alarm_ends_at_its_window() -> None:
    """Restored pending at t=0, then readings without residual current or cable
    temperature (neither above nor below): confirmed when its 30 s window ends."""
    rig = Rig([("electrical", 2)])
    rig.engine.restore_alarm(0, "electrical", "pending", T0, "cable_overheat")
    ch = rig.feed({0: series([(10, 100, 5.0)], "current")})
    assert [(c.action, c.verdict, c.reason, (c.at_ms - T0) / S, c.detail) for c in ch] == [
        ("verdict", "confirmed", "cable_overheat", 30.0, {"persisted_s": 30.0})
    ]


def test_restored_pending_electrical_alarm_of_a_silent_device_is_resolved() -> None:
    """Restored pending at t=0, and nothing ever arrives from the device: it is
    judged silent on arrival time (3 x 10 s past its deadline) and confirmed
    at its window's end."""
    rig = Rig([("electrical", 2)])
    rig.engine.restore_alarm(0, "electrical", "pending", T0, "residual_current")
    ch = rig.engine.advance(T0 + 3_600 * S)
    assert [(c.verdict, c.reason, (c.at_ms - T0) / S) for c in ch] == [
        ("confirmed", "residual_current", 30.0)
    ]


def test_restored_self_test_fail_clears_on_self_test_pass() -> None:
    """An evac_fault opened by `self_test_fail` before a restart is restored
    with its cause: the next `self_test_pass` clears it (as it would have
    without the restart), not only a `restore` event."""
    rig = Rig([("evac", 1)])
    rig.engine.restore_alarm(0, "evac_fault", "confirmed", T0, "self_test_fail")
    assert rig.engine.open_alarms() == {(0, "evac_fault"): "confirmed"}
    ok = [(float(t), {"battery": 90.0, "mains": 1.0, "lamp_ok": 1.0}) for t in range(0, 120, 60)]
    ch = rig.feed({0: ok}, events=[(0, 90.0, "self_test_pass")])
    assert summary(ch, "evac_fault") == [("clear", "confirmed", "condition_gone", 90.0)]
    assert rig.engine.open_alarms() == {}


def test_self_test_fail_clears_on_self_test_pass_only() -> None:
    """README table, evac: `self_test_fail` is an `evac_fault`; an emergency
    (mains lost, `emergency_start`/`emergency_end`) is a state and clears
    nothing; the next `self_test_pass` clears it."""
    rig = Rig([("evac", 1)])
    events = [
        (0, 10.0, "self_test_fail"),
        (0, 20.0, "emergency_start"),
        (0, 30.0, "emergency_end"),
        (0, 40.0, "self_test_pass"),
    ]
    ch = rig.feed({0: []}, events=events)
    assert summary(ch, "evac_fault") == [
        ("open", "confirmed", "self_test_fail", 10.0),
        ("clear", "confirmed", "condition_gone", 40.0),
    ]
    assert [c.detail for c in ch] == [{"event": "self_test_fail"}, {"event": "self_test_pass"}]


def test_restored_device_fault_does_not_clear_on_self_test_pass() -> None:
    rig = Rig([("evac", 1)])
    rig.engine.restore_alarm(0, "evac_fault", "confirmed", T0, "device_fault")
    ch = rig.feed({0: []}, events=[(0, 90.0, "self_test_pass"), (0, 100.0, "restore")])
    assert summary(ch, "evac_fault") == [("clear", "confirmed", "restore", 100.0)]


def test_suppressed_alarm_is_not_restored() -> None:
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "fire", "suppressed", T0, "transient")
    assert rig.engine.open_alarms() == {}


# --- Electrical: persist 20 s ----------------------------------------------------------
@pytest.mark.parametrize(
    ("high_samples", "expected"),
    [
        (
            2,
            [
                ("open", "pending", "residual_current", 100.0),
                ("verdict", "suppressed", "transient", 130.0),  # 10 s after it went under
            ],
        ),
        (
            3,
            [
                ("open", "pending", "residual_current", 100.0),
                ("verdict", "confirmed", "residual_current", 120.0),
            ],
        ),
    ],
)
def test_electrical_persist_20_s(
    high_samples: int, expected: list[tuple[str, str, str, float]]
) -> None:
    stop = 100 + 10 * high_samples
    rig = Rig([("electrical", 1)])
    rows = series([(0, 100, 50.0), (100, stop, 400.0), (stop, 300, 50.0)], "residual_current")
    assert summary(rig.feed({0: rows}), "electrical") == expected


@pytest.mark.parametrize(("value", "opens"), [(299.0, False), (300.0, True)])
def test_residual_current_300_ma(value: float, opens: bool) -> None:
    rig = Rig([("electrical", 1)])
    ch = rig.feed({0: series([(0, 100, 50.0), (100, 300, value)], "residual_current")})
    assert bool(summary(ch, "electrical")) is opens


@pytest.mark.parametrize(("value", "opens"), [(69.5, False), (70.0, True)])
def test_cable_temperature_70_c(value: float, opens: bool) -> None:
    rig = Rig([("electrical", 1)])
    ch = rig.feed({0: series([(0, 100, 30.0), (100, 300, value)], "cable_temperature")})
    assert [c[2] for c in summary(ch, "electrical")][:1] == (["cable_overheat"] if opens else [])


# --- Call points -------------------------------------------------------------------------
def test_call_point_confirms_at_once_and_confirms_the_zone() -> None:
    rig = Rig([("mcp", 2), ("smoke", 2), ("smoke", 3)])
    # Device 1 (zone 2) and device 2 (zone 3) open pending at 150; the call point
    # of zone 2 is pressed at 160.
    rows1 = series([(0, 150, 0.1), (150, 300, 5.0)], "obscuration", temperature=21.0)
    ch = rig.feed({1: rows1, 2: rows1}, events=[(0, 160.0, "activated"), (0, 200.0, "reset")])
    assert summary(ch, "fire", 0) == [("open", "confirmed", "call_point", 160.0)]
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 150.0),
        ("verdict", "confirmed", "call_point", 160.0),
    ]
    assert summary(ch, "fire", 2)[1][1:] == ("confirmed", "obscuration", 180.0)  # its own window
    assert rig.engine.open_alarms()[(0, "fire")] == "confirmed"  # reset clears nothing
    by_cp = [c for c in ch if c.slot == 1 and c.action == "verdict"]
    assert [(c.related, c.detail) for c in by_cp] == [((0,), {"event": "activated"})]


def test_device_fire_alarm_event_is_evidence_not_a_verdict() -> None:
    rig = Rig([("smoke", 1)])
    ch = rig.feed(
        {0: series([(0, 300, 0.1)], "obscuration", temperature=21.0)},
        events=[(0, 100.0, "fire_alarm")],
    )
    assert summary(ch, "fire") == [
        ("open", "pending", "device_alarm", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
    ]


def test_device_fire_alarm_event_is_zone_activity() -> None:
    """A's own `fire_alarm` at 100 s (its readings clean) is zone activity at
    once: B, same zone, alarming at 110 s is confirmed by coincidence, and A
    with it."""
    rig = Rig([("smoke", 4), ("smoke", 4)])
    b = series([(0, 110, 0.1), (110, 120, 5.0), (120, 300, 0.1)], "obscuration", temperature=21.0)
    ch = rig.feed(
        {0: series([(0, 300, 0.1)], "obscuration", temperature=21.0), 1: b},
        events=[(0, 100.0, "fire_alarm")],
    )
    assert summary(ch, "fire", 0) == [
        ("open", "pending", "device_alarm", 100.0),
        ("verdict", "confirmed", "coincidence", 110.0),
    ]
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 110.0),
        ("verdict", "confirmed", "coincidence", 110.0),
    ]


@pytest.mark.parametrize(
    ("event_s", "b_verdict"),
    [
        (115.0, ("verdict", "suppressed", "transient", 150.0)),
        (170.0, ("verdict", "suppressed", "transient", 205.0)),  # exactly 60 s after: kept
        (171.0, ("verdict", "confirmed", "coincidence", 176.0)),  # over 60 s: its own activity
    ],
)
def test_fire_alarm_event_keeps_the_nuisance_signature_of_the_last_60_s(
    event_s: float, b_verdict: tuple[str, str, str, float]
) -> None:
    """A, multi-criteria: cooking aerosol (5 %/m, no CO, no heat) at 100 and
    110 s, a nuisance signature that corroborates nothing; then its own
    `fire_alarm` event. Within 60 s of that signed activity the event's zone
    activity keeps the signature: B (smoke, same zone) alarming 5 s later is
    not confirmed by coincidence (a transient); 61 s later it is."""
    rig = Rig([("multi", 4), ("smoke", 4)])
    clean = {"temperature": 21.0, "co": 0.0, "humidity": 40.0}
    a = series([(0, 100, 0.1), (100, 120, 5.0), (120, 400, 0.1)], "obscuration", **clean)
    tb = event_s + 5
    b = series(
        [(0, tb, 0.1), (tb, tb + 10, 5.0), (tb + 10, 400, 0.1)], "obscuration", temperature=21.0
    )
    ch = rig.feed({0: a, 1: b}, events=[(0, event_s, "fire_alarm")])
    assert summary(ch, "fire", 1) == [("open", "pending", "obscuration", tb), b_verdict]


@pytest.mark.parametrize(
    ("event_s", "expected"),
    [
        # 1 ms before the window's end: evidence in the open window, no new alarm.
        (
            129.999,
            [
                ("open", "pending", "obscuration", 100.0),
                ("verdict", "suppressed", "transient", 130.0),
            ],
        ),
        # 1 ms after: the window is over (a transient); the event opens a new
        # one, and with no reading in it, it is confirmed (the detector silent).
        (
            130.001,
            [
                ("open", "pending", "obscuration", 100.0),
                ("verdict", "suppressed", "transient", 130.0),
                ("open", "pending", "device_alarm", 130.001),
                ("verdict", "confirmed", "device_alarm", 160.001),
            ],
        ),
    ],
)
def test_fire_alarm_event_at_the_edge_of_a_window(
    event_s: float, expected: list[tuple[str, str, str, float]]
) -> None:
    """A: 5 %/m at 100 s, clean at 110 and 120 s, then silent until 200 s; its
    window ends at 130 s. Its own `fire_alarm` event comes at `event_s`."""
    rig = Rig([("smoke", 4)])
    a = series(
        [(0, 100, 0.1), (100, 110, 5.0), (110, 130, 0.1), (200, 300, 0.1)],
        "obscuration",
        temperature=21.0,
    )
    ch = rig.feed({0: a}, events=[(0, event_s, "fire_alarm")])
    assert summary(ch, "fire") == expected


def test_an_event_at_the_deadline_closes_the_window() -> None:
    """README "Load invariance": a window closes on the device's own clock, its
    next reading *or event* at or after the deadline. An electrical monitor at
    400 mA at 100 s (pending, window to 130 s), then readings without residual
    current or cable temperature (neither above nor below), then only a
    `fault` event at 130 s and nothing more: the window ends then, the
    condition never seen gone (confirmed)."""
    rig = Rig([("electrical", 4)])
    rows = [
        (100.0, {"residual_current": 400.0}),
        (110.0, {"current": 5.0}),
        (120.0, {"current": 5.0}),
    ]
    ch = rig.feed({0: rows}, events=[(0, 130.0, "fault")])
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 100.0),
        ("verdict", "confirmed", "residual_current", 130.0),
    ]


# --- Evac: a low battery on mains is a fault only 24 h after the last reading on battery
@pytest.mark.parametrize("battery", [20.0, 29.0])
def test_evac_recharge_grace_24_h(battery: float) -> None:
    """Mains lost from 0 to 1 h (readings every 10 min, the last on battery at
    50 min); back on mains the battery reads `battery` % (< 30): a fault
    24 h after 50 min, not before."""
    rows: list[Row] = []
    for t in range(0, 30 * H, 600):
        mains = 0.0 if t < H else 1.0
        # 50 % on battery, steady: no depletion (that rule is its own, below 30 %).
        charge = 50.0 if t < H else battery
        rows.append((float(t), {"battery": charge, "mains": mains, "lamp_ok": 1.0}))
    rig = Rig([("evac", 1)])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    assert summary(ch, "evac_fault") == [("open", "confirmed", "battery_low", 3000.0 + 24 * H)]


def test_evac_battery_low_clears_at_35_pct() -> None:
    rows: list[Row] = [
        (float(t), {"battery": b, "mains": 1.0, "lamp_ok": 1.0})
        for t, b in [(0, 20.0), (600, 33.0), (1200, 35.0)]
    ]
    rig = Rig([("evac", 1)])
    ch = rig.feed({0: rows}, batch_s=600.0)
    assert summary(ch, "evac_fault") == [
        ("open", "confirmed", "battery_low", 0.0),
        ("clear", "confirmed", "condition_gone", 1200.0),
    ]


@pytest.mark.parametrize(("last_s", "opens"), [(290.0, False), (300.0, True)])
def test_evac_projection_is_trusted_after_5_min_on_battery(last_s: float, opens: bool) -> None:
    """README table, evac: the discharge rate is measured over >= 5 min. Mains
    lost at 0 s at 100 %, 90 % at `last_s`: 10 % in 5 min is 50 min of
    autonomy, short of the 90 min rating, but only from 5 min on battery."""
    rig = Rig([("evac", 1)])
    rows = [
        (0.0, {"battery": 100.0, "mains": 0.0, "lamp_ok": 1.0}),
        (last_s, {"battery": 90.0, "mains": 0.0, "lamp_ok": 1.0}),
    ]
    ch = rig.feed({0: rows})
    want = [("open", "confirmed", "battery_depleting", last_s)] if opens else []
    assert summary(ch, "evac_fault") == want


@pytest.mark.parametrize(("rated_min", "opens"), [(30.0, False), (31.0, True)])
def test_evac_projection_equal_to_the_rating_is_enough(rated_min: float, opens: bool) -> None:
    """Mains lost at 0 s at 40 %, 32 % at 6 min: 8 % in 6 min, so the 32 % left
    last 24 min more, 30 min in all. Short of a 31 min rating (depleting),
    not of a 30 min one (the charge is above the 30 % low level)."""
    rig = Rig([("evac", 1, {"rated_duration_min": rated_min})])
    rows = [
        (0.0, {"battery": 40.0, "mains": 0.0, "lamp_ok": 1.0}),
        (360.0, {"battery": 32.0, "mains": 0.0, "lamp_ok": 1.0}),
    ]
    ch = rig.feed({0: rows})
    want = [("open", "confirmed", "battery_depleting", 360.0)] if opens else []
    assert summary(ch, "evac_fault") == want


def test_evac_on_battery_is_a_state() -> None:
    rows: list[Row] = [
        (float(t), {"battery": 60.0, "mains": 0.0, "lamp_ok": 1.0}) for t in range(0, 30 * H, 3600)
    ]
    rig = Rig([("evac", 1)])
    assert rig.feed({0: rows}, batch_s=3600.0) == []


# --- Found by mutation testing (make mutation): rules a mutant could break unseen ----
def test_restored_call_point_fire_still_confirms_its_zone() -> None:
    """A call point's confirmed fire restored at start-up: a detector of its zone
    that alarms afterwards is confirmed at once (call_point), one of another zone is not."""
    rig = Rig([("mcp", 2), ("smoke", 2), ("smoke", 3)])
    rig.engine.restore_alarm(0, "fire", "confirmed", T0, "call_point")
    rows = series([(0, 100, 0.1), (100, 200, 5.0)], "obscuration", temperature=21.0)
    ch = rig.feed({1: rows, 2: rows})
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "confirmed", "call_point", 100.0),
    ]
    assert [c.related for c in ch if c.slot == 1 and c.action == "verdict"] == [(0,)]
    assert summary(ch, "fire", 2)[1][1:] == ("confirmed", "obscuration", 130.0)


def test_restored_pending_fire_is_confirmed_by_a_call_point_of_its_zone() -> None:
    rig = Rig([("smoke", 4), ("mcp", 4)])
    rig.engine.restore_alarm(0, "fire", "pending", T0, "obscuration")
    ch = rig.feed(
        {0: series([(20, 100, 0.1)], "obscuration", temperature=21.0)},
        events=[(1, 10.0, "activated")],
    )
    assert summary(ch, "fire", 0) == [("verdict", "confirmed", "call_point", 10.0)]


def test_cleared_call_point_no_longer_confirms_its_zone() -> None:
    """Once a person clears the call point's fire, a detector of its zone is
    judged on its own again (here: a one-sample spike, a transient)."""
    rig = Rig([("mcp", 2), ("smoke", 2)])
    rig.feed(
        {1: series([(0, 50, 0.1)], "obscuration", temperature=21.0)},
        events=[(0, 10.0, "activated")],
    )
    rig.engine.clear(0, "fire")
    rows = series(
        [(50, 100, 0.1), (100, 110, 5.0), (110, 300, 0.1)], "obscuration", temperature=21.0
    )
    ch = rig.feed({1: rows})
    assert summary(ch, "fire", 1) == [
        ("open", "pending", "obscuration", 100.0),
        ("verdict", "suppressed", "transient", 130.0),
    ]


def test_cleared_pre_alarm_still_present_opens_again() -> None:
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: series([(0, 60, 0.1), (60, 100, 2.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "pre_alarm") == [("open", "confirmed", "obscuration", 60.0)]
    rig.engine.clear(0, "pre_alarm")
    ch = rig.feed({0: series([(100, 150, 2.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "pre_alarm") == [("open", "confirmed", "obscuration", 100.0)]


def test_restored_pre_alarm_is_not_opened_twice_and_clears() -> None:
    rig = Rig([("smoke", 1)])
    rig.engine.restore_alarm(0, "pre_alarm", "confirmed", T0, "obscuration")
    ch = rig.feed({0: series([(10, 60, 2.0), (60, 100, 1.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "pre_alarm") == [("clear", "confirmed", "condition_gone", 60.0)]


@pytest.mark.parametrize("typ", ["fault", "evac_fault"])
def test_cleared_fault_still_present_opens_again(typ: str) -> None:
    kind, rows = (
        (
            "evac",
            [(float(t), {"battery": 90.0, "mains": 1.0, "lamp_ok": 0.0}) for t in range(0, 60, 10)],
        )
        if typ == "evac_fault"
        else ("smoke", series([(0, 60, 0.1)], "obscuration", temperature=21.0))
    )
    rig = Rig([(kind, 1)])
    events = [] if typ == "evac_fault" else [(0, 5.0, "fault")]
    ch = rig.feed({0: rows[:3]}, events=events)
    assert [c[:2] for c in summary(ch, typ)] == [("open", "confirmed")]
    rig.engine.clear(0, typ)
    later = [] if typ == "evac_fault" else [(0, 40.0, "fault")]
    ch = rig.feed({0: rows[3:]}, events=later)
    assert [c[:2] for c in summary(ch, typ)] == [("open", "confirmed")]


def test_restored_windows_without_a_stored_reason() -> None:
    rig = Rig([("smoke", 1), ("electrical", 1)])
    rig.engine.restore_alarm(0, "fire", "pending", T0)
    rig.engine.restore_alarm(1, "electrical", "pending", T0)
    ch = rig.feed(
        {
            0: series([(10, 60, 5.0)], "obscuration", temperature=21.0),
            1: series([(10, 60, 400.0)], "residual_current"),
        }
    )
    assert summary(ch, "fire") == [("verdict", "confirmed", "restored", 30.0)]
    assert summary(ch, "electrical") == [("verdict", "confirmed", "residual_current", 20.0)]


def test_electrical_confirmation_carries_its_evidence() -> None:
    rig = Rig([("electrical", 1)])
    ch = rig.feed({0: series([(0, 100, 50.0), (100, 200, 400.0)], "residual_current")})
    confirmed = [c for c in ch if c.action == "verdict"]
    assert confirmed[0].detail["residual_current"] == 400.0


def test_call_point_pressed_twice_is_one_alarm() -> None:
    rig = Rig([("mcp", 1)])
    ch = rig.feed({}, events=[(0, 10.0, "activated"), (0, 20.0, "activated")])
    assert summary(ch, "fire") == [("open", "confirmed", "call_point", 10.0)]
    assert ch[0].detail == {"event": "activated"}


@pytest.mark.parametrize(
    ("kind", "event", "typ"),
    [
        ("smoke", "fault", "fault"),
        ("evac", "self_test_fail", "evac_fault"),
        ("evac", "fault", "evac_fault"),
    ],
)
def test_fault_events_open_at_their_time(kind: str, event: str, typ: str) -> None:
    rig = Rig([(kind, 1)])
    ch = rig.feed({}, events=[(0, 30.0, event)])
    reason = "self_test_fail" if event == "self_test_fail" else "device_fault"
    assert summary(ch, typ) == [("open", "confirmed", reason, 30.0)]
    assert ch[0].detail == {"event": event}


def test_electrical_reading_without_its_values_says_nothing() -> None:
    """A reading with only `current` (no residual current, no cable temperature)
    neither suppresses nor confirms a pending electrical alarm."""
    rig = Rig([("electrical", 1)])
    rows: list[Row] = [(float(t), {"residual_current": 50.0}) for t in range(0, 100, 10)]
    rows += [(100.0, {"residual_current": 400.0}), (110.0, {"current": 5.0})]
    rows += [(float(t), {"residual_current": 400.0}) for t in range(120, 200, 10)]
    ch = rig.feed({0: rows})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 100.0),
        ("verdict", "confirmed", "residual_current", 120.0),
    ]
    assert ch[0].detail["residual_current"] == 400.0


def test_electrical_transient_then_a_new_condition() -> None:
    rig = Rig([("electrical", 1)])
    rows = series(
        [(0, 100, 50.0), (100, 110, 400.0), (110, 200, 50.0), (200, 300, 400.0)], "residual_current"
    )
    ch = rig.feed({0: rows})
    assert summary(ch, "electrical") == [
        ("open", "pending", "residual_current", 100.0),
        ("verdict", "suppressed", "transient", 120.0),  # 10 s after it went under
        ("open", "pending", "residual_current", 200.0),
        ("verdict", "confirmed", "residual_current", 220.0),
    ]
    assert ch[1].detail["residual_current"] == 50.0


@pytest.mark.parametrize(("raw", "fires"), [(3.15, False), (3.25, True)])
def test_drift_tracks_clean_air_at_the_edge_of_the_band(raw: float, fires: bool) -> None:
    """0.5 %/m above the baseline is still clean air (the band is inclusive)."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.5, "temperature": 21.0}) for t in range(0, 2 * H, 600)
    ]
    rows += [(float(2 * H), {"obscuration": raw, "temperature": 21.0})]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    assert bool([c for c in ch if c.alarm_type == "fire"]) is fires


def test_drift_recovers_1_per_hour_after_cleaning() -> None:
    """Contamination creeping 0.1 %/m per hour for 13 h (baseline 1.3), then the
    detector is cleaned (0.0): the baseline comes down by at most 1.0 in the
    next hour (1.3 -> 0.3), so 3.1 %/m raw reads 2.8: below the alarm level."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.1 * (t // H) + 0.1, "temperature": 21.0})
        for t in range(0, 13 * H, 600)
    ]
    rows += [
        (float(t), {"obscuration": 0.0, "temperature": 21.0}) for t in range(13 * H, 14 * H, 600)
    ]
    rows += [(float(14 * H), {"obscuration": 3.1, "temperature": 21.0})]
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    assert [c for c in ch if c.alarm_type == "fire"] == []
    assert rig.engine.open_alarms() == {(0, "pre_alarm"): "confirmed"}


def test_drift_limit_reached_exactly_is_a_fault() -> None:
    """drift_limit 0.2: clean air at 0.3 moves the baseline 0.1, then 0.2 = the
    limit: a fault at the second hour, not the third."""
    rows: list[Row] = [
        (float(t), {"obscuration": 0.3, "temperature": 21.0}) for t in range(0, 4 * H, 600)
    ]
    rig = Rig([("smoke", 1, {"drift_limit": 0.2})])
    ch = rig.feed({0: rows}, batch_s=3600.0)
    assert summary(ch, "fault") == [("open", "confirmed", "drift_limit", 2.0 * H)]


def test_alarm_at_exactly_3_percent_is_an_obscuration_alarm() -> None:
    rig = Rig([("smoke", 1)])
    ch = rig.feed({0: series([(0, 60, 0.1), (60, 200, 3.0)], "obscuration", temperature=21.0)})
    assert summary(ch, "fire")[0] == ("open", "pending", "obscuration", 60.0)
    assert ch[0].detail["obscuration"] == 3.0  # the drift-compensated value, with its baseline
    assert ch[0].detail["baseline"] == 0.0


def test_pre_alarm_smoke_with_heat_rise_is_combined_evidence() -> None:
    """2 %/m (pre-alarm, below the 3 %/m alarm) with the ceiling warming 6 °C/min
    (heat rise >= 5, on two consecutive readings): an alarm on combined
    evidence, confirmed at once by the heat rise."""
    rows: list[Row] = []
    for t in range(0, 300, 10):
        warm = max(0.0, t - 150) * 6.0 / 60.0
        rows.append(
            (float(t), {"obscuration": 2.0 if t >= 100 else 0.1, "temperature": 21.0 + warm})
        )
    rig = Rig([("smoke", 1)])
    fire = summary(rig.feed({0: rows}), "fire")
    assert fire[0][:3] == ("open", "pending", "combined")
    assert fire[1][:3] == ("verdict", "confirmed", "rate_of_rise")
    assert fire[0][3] == fire[1][3]


def test_evidence_of_pre_alarm_and_drift_fault() -> None:
    rig = Rig([("smoke", 1, {"drift_limit": 0.2})])
    rows: list[Row] = [
        (float(t), {"obscuration": 0.3, "temperature": 21.0}) for t in range(0, 3 * H, 600)
    ]
    rows += [(float(3 * H), {"obscuration": 2.0, "temperature": 21.0})]
    rows += [(float(3 * H + 10), {"obscuration": 0.3, "temperature": 21.0})]
    ch = rig.feed({0: rows}, batch_s=3600.0)
    by = {(c.alarm_type, c.action): c.detail for c in ch}
    assert by[("fault", "open")]["obscuration"] == pytest.approx(0.1)  # 0.3 over a 0.2 baseline
    assert by[("pre_alarm", "open")]["obscuration"] == pytest.approx(1.8)
    assert by[("pre_alarm", "clear")]["obscuration"] == pytest.approx(0.1)
