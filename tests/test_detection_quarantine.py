"""One far-future reading must never blind a detector (issue 10 item 4)."""

from __future__ import annotations

import numpy as np

from detection import Engine, Events, Readings
from firesafe import contract

RI = contract.READING_INDEX
NR = len(contract.READINGS)
K = {n: i for i, n in enumerate(contract.KINDS)}
EV = {n: i for i, n in enumerate(contract.EVENT_TYPES)}
T0 = 1_764_072_000_000
YEAR_2100 = 4_102_444_800_000


def smoke(obs: float, temp: float = 21.0) -> np.ndarray:
    v = np.full((1, NR), np.nan)
    v[0, RI["obscuration"]] = obs
    v[0, RI["temperature"]] = temp
    return v


def feed(eng: Engine, slot: int, ts: int, v: np.ndarray, arrival: int) -> list[object]:
    r = Readings(np.array([slot], np.int64), np.array([ts], np.int64), v)
    out: list[object] = list(eng.process(r, Events.empty(), arrival))
    return out + list(eng.advance(arrival))


def test_a_reading_dated_2100_is_quarantined_and_a_real_fire_still_raised() -> None:
    eng = Engine(capacity=4)
    eng.configure([0, 1], [K["smoke"], K["smoke"]], [0, 1], [{}, {}], [10_000, 10_000])
    feed(eng, 0, T0, smoke(0.1), T0 + 50)
    assert feed(eng, 0, YEAR_2100, smoke(0.1), T0 + 5_050) == []
    assert eng.quarantined == 1
    assert int(eng.quarantine_count[0]) == 1
    assert int(eng.last_ts[0]) == T0  # the device's clock did not move
    # The other device's watermark is untouched too: its windows still close
    # on its own clock.
    changes = []
    for i in range(1, 12):  # a smouldering fire: 3.5 %/m and rising, CO-free
        ts = T0 + i * 10_000
        changes += feed(eng, 0, ts, smoke(3.5 + 0.2 * i), ts + 50)
    fire = [(c.action, c.verdict, c.reason) for c in changes if c.alarm_type == "fire"]  # type: ignore[attr-defined]
    assert fire == [("open", "pending", "obscuration"), ("verdict", "confirmed", "obscuration")]


def test_a_clock_that_is_really_ahead_is_accepted_after_three_agreeing_readings() -> None:
    eng = Engine(capacity=4)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    ahead = 2 * 3_600_000  # a device clock two hours fast
    for i in range(5):
        arrival = T0 + i * 10_000
        feed(eng, 0, arrival + ahead, smoke(0.1), arrival)
    assert eng.quarantined == 2  # the first two; the third agrees and is taken
    assert int(eng.last_ts[0]) == T0 + 4 * 10_000 + ahead


def test_a_far_future_event_is_taken_at_the_arrival_clock() -> None:
    """A call point's press, a panel point's fire (its only evidence) and a fault
    dated in 2100 are taken at the arrival clock; the fault is counted (the
    device's clock is suspect)."""
    eng = Engine(capacity=4)
    on_change = 366 * 86_400_000
    eng.configure(
        [0, 1, 2], [K["smoke"], K["mcp"], K["heat"]], [0, 0, 1], [{}, {}, {}],
        [10_000, 60_000, on_change],
    )  # fmt: skip
    ev = Events(
        np.array([0, 1, 2], np.int64),
        np.array([YEAR_2100, YEAR_2100, YEAR_2100], np.int64),
        np.array([EV["fault"], EV["activated"], EV["panel_fire"]], np.int16),
    )
    out = eng.process(Readings.empty(), ev, T0)
    assert sorted((c.slot, c.alarm_type, c.reason, c.at_ms) for c in out) == [
        (0, "fault", "device_fault", T0),  # taken at the arrival clock
        (1, "fire", "call_point", T0),
        (2, "fire", "panel_alarm", T0),
    ]
    assert eng.quarantined == 1
    # The smoke detector's later, plausible restore is not "late".
    ev2 = Events(
        np.array([0], np.int64), np.array([T0 + 1], np.int64), np.array([EV["restore"]], np.int16)
    )
    out = eng.process(Readings.empty(), ev2, T0 + 2)
    assert [(c.slot, c.alarm_type, c.action) for c in out] == [(0, "fault", "clear")]


def test_readings_a_day_ahead_between_real_ones_do_not_blind_the_detector() -> None:
    """The outside check's attack (anyone who may publish on the device's
    topic, or one device on two paths with different clocks): a block of
    readings dated a day ahead is taken as the device's clock (three agreeing),
    then one such reading after each real one. The real readings, on time by
    the arrival clock, win after three (the clock steps back to them) and the
    forged ones are quarantined from then on: the fire on the real ones is
    raised at the same moment and confirmed one reading period later (it
    was never raised before)."""

    def run(forged: bool) -> tuple[list[tuple[str, str, str, int]], Engine]:
        eng = Engine(capacity=1)
        eng.configure([0], [K["smoke"]], [0], [{}], [5_000])
        out: list[object] = []
        for i in range(3):
            out += feed(eng, 0, T0 + i * 5_000, smoke(0.1), T0 + i * 5_000 + 50)
        ahead = T0 + 86_400_000
        if forged:
            for i in range(4):
                out += feed(eng, 0, ahead + i * 1_000, smoke(0.1), T0 + 11_000 + i * 1_000)
        for i in range(24):  # a fire: 2 -> 20 %/m and 21 -> 39 °C in two minutes
            ts = T0 + 15_000 + i * 5_000
            out += feed(eng, 0, ts, smoke(min(2.0 + 0.8 * i, 20.0), 21.0 + 0.8 * i), ts + 50)
            if forged:
                out += feed(eng, 0, ahead + 5_000 + i * 1_000, smoke(0.1), ts + 100)
        fire = [
            (c.action, c.verdict, c.reason, c.at_ms - T0)  # type: ignore[attr-defined]
            for c in out
            if c.alarm_type == "fire"  # type: ignore[attr-defined]
        ]
        return fire, eng

    clean, _ = run(forged=False)
    assert clean == [
        ("open", "pending", "obscuration", 25_000),
        ("verdict", "confirmed", "rate_of_rise", 40_000),
    ]
    forged, eng = run(forged=True)
    assert forged == [
        ("open", "pending", "obscuration", 25_000),
        ("verdict", "confirmed", "rate_of_rise", 50_000),
    ]
    assert eng.clock_steps == 1
    assert eng.quarantined == 24


def test_one_reading_minutes_ahead_does_not_blind_a_detector() -> None:
    """An outside check's glitch: one reading 5 min ahead (a real-time clock
    hiccup), then a real fire. Accepted, it made every later reading late for
    5 min, kept out of detection, and the detector raised nothing. It is
    quarantined now (more than FUTURE_TOLERANCE_MS ahead), and the fire is
    confirmed as on a detector without the glitch."""

    def fire_on(glitch: bool) -> list[tuple[str, str, str, int]]:
        eng = Engine(capacity=4)
        eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
        feed(eng, 0, T0, smoke(0.1), T0 + 50)
        if glitch:
            assert feed(eng, 0, T0 + 5_000 + 300_000, smoke(0.1), T0 + 5_050) == []
        changes = []
        for i in range(1, 12):
            ts = T0 + i * 10_000
            changes += feed(eng, 0, ts, smoke(3.5 + 0.2 * i), ts + 50)
        return [
            (c.action, c.verdict, c.reason, c.at_ms)  # type: ignore[attr-defined]
            for c in changes
            if c.alarm_type == "fire"  # type: ignore[attr-defined]
        ]

    assert fire_on(glitch=True) == fire_on(glitch=False)
    assert fire_on(glitch=True)[-1][:2] == ("verdict", "confirmed")


def test_an_event_minutes_ahead_is_taken_on_a_device_that_sends_only_events() -> None:
    """A fire panel's point (on-change only, no readings by which a skewed clock
    is accepted) whose panel clock runs 5 min fast: its fault is raised, as
    before readings' quarantine went from 10 min to 2."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["heat"]], [0], [{}], [366 * 86_400_000])
    ev = Events(
        np.array([0], np.int64),
        np.array([T0 + 300_000], np.int64),
        np.array([EV["fault"]], np.int16),
    )
    out = eng.process(Readings.empty(), ev, T0)
    assert [(c.alarm_type, c.reason, c.at_ms) for c in out] == [("fault", "device_fault", T0)]


def test_an_event_minutes_ahead_does_not_make_the_next_real_one_late() -> None:
    """A recheck: a `restore` dated 5 min ahead, then the real `fault` at the
    right time, on a device that sends only events: the fault was dropped as
    late (nothing raised, nothing said). Taken at the arrival clock, the
    restore leaves the fault on time."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["heat"]], [0], [{}], [366 * 86_400_000])

    def event(ts: int, name: str, arrival: int) -> list[object]:
        ev = Events(
            np.array([0], np.int64), np.array([ts], np.int64), np.array([EV[name]], np.int16)
        )
        return list(eng.process(Readings.empty(), ev, arrival))

    assert event(T0 + 300_000, "restore", T0) == []
    out = event(T0 + 1_000, "fault", T0 + 1_000)
    assert [(c.alarm_type, c.action) for c in out] == [("fault", "open")]  # type: ignore[attr-defined]


def test_three_readings_minutes_ahead_then_the_real_clock_do_not_blind_a_detector() -> None:
    """A recheck: three readings 5 min ahead (a burst of a bad clock) were taken
    for a clock set ahead, and every real reading after them was late for 5
    min: a fire raised nothing. Three agreeing readings on time by the arrival
    clock, behind a newest that came from the future, take the clock as it is
    (as a clock corrected by NTP would be); the fire is confirmed."""

    def fire(glitch: bool) -> list[tuple[str, str, int]]:
        eng = Engine(capacity=4)
        eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
        feed(eng, 0, T0, smoke(0.1), T0 + 50)
        if glitch:
            for i in range(3):
                feed(eng, 0, T0 + 300_000 + i * 1_000, smoke(0.1), T0 + 1_000 + i * 1_000)
        changes = []
        for i in range(1, 15):
            ts = T0 + 5_000 + i * 10_000
            changes += feed(eng, 0, ts, smoke(3.5 + 0.2 * i), ts + 50)
        return [
            (c.action, c.verdict, c.at_ms)  # type: ignore[attr-defined]
            for c in changes
            if c.alarm_type == "fire"  # type: ignore[attr-defined]
        ]

    clean, glitched = fire(glitch=False), fire(glitch=True)
    assert clean[-1][:2] == glitched[-1][:2] == ("verdict", "confirmed")
    assert glitched[-1][2] - clean[-1][2] <= 30_000  # three readings to see the clock back


def _fire_times(glitch_ahead_ms: int | None) -> list[tuple[str, str, int]]:
    """A smoke detector every 10 s, one reading `glitch_ahead_ms` ahead of the
    arrival clock (a real-time clock hiccup), then a real fire."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["smoke"]], [0], [{}], [10_000])
    feed(eng, 0, T0, smoke(0.1), T0 + 50)
    if glitch_ahead_ms is not None:
        feed(eng, 0, T0 + 5_000 + glitch_ahead_ms, smoke(0.1), T0 + 5_050)
    changes = []
    for i in range(1, 20):
        ts = T0 + i * 10_000
        changes += feed(eng, 0, ts, smoke(3.5 + 0.2 * i), ts + 50)
    return [
        (c.action, c.verdict, c.at_ms)  # type: ignore[attr-defined]
        for c in changes
        if c.alarm_type == "fire"  # type: ignore[attr-defined]
    ]


def test_one_reading_a_little_ahead_delays_a_fire_by_at_most_a_window() -> None:
    """A recheck: one reading 1.5 min ahead (under the 2 min tolerance then)
    made the next 1.5 min of readings late, and the fire was confirmed 72 s
    after the same detector without the glitch. Whatever the glitch's size,
    the fire is confirmed at most FUTURE_TOLERANCE_MS later."""
    clean = _fire_times(None)
    assert clean[-1][:2] == ("verdict", "confirmed")
    for ahead in (10_000, 25_000, 40_000, 90_000, 119_000, 300_000):
        glitched = _fire_times(ahead)
        assert glitched[-1][:2] == ("verdict", "confirmed"), ahead
        assert glitched[-1][2] - clean[-1][2] <= 30_000, ahead


def test_a_slow_reporter_whose_clock_runs_ahead_is_quarantined_only_until_accepted() -> None:
    """A heat detector reporting every 60 s with its clock 45 s fast: once its
    clock is accepted (three agreeing readings), its later readings, each a
    minute after the last, are not quarantined again; back on time (NTP), it is
    judged on the arrival clock again, and a glitch ahead is quarantined."""
    eng = Engine(capacity=4)
    eng.configure([0], [K["heat"]], [0], [{}], [60_000])
    for i in range(8):
        arrival = T0 + i * 60_000
        feed(eng, 0, arrival + 45_000, smoke(0.0), arrival)
    assert eng.quarantined == 2
    assert int(eng.last_ts[0]) == T0 + 7 * 60_000 + 45_000
    for i in range(8, 12):  # corrected: on time, the first ones late behind the fast clock
        arrival = T0 + i * 60_000
        feed(eng, 0, arrival, smoke(0.0), arrival)
    assert int(eng.last_ts[0]) == T0 + 11 * 60_000
    arrival = T0 + 12 * 60_000
    feed(eng, 0, arrival + 45_000, smoke(0.0), arrival)  # one glitch: not the old skew
    assert eng.quarantined == 3


def test_a_monitor_whose_clock_stepped_back_forgets_its_last_transient() -> None:
    """An electrical condition back within three reporting intervals of a
    `transient` is confirmed at once (an intermittent fault), counted in the
    device's event time: after its clock stepped back an hour, every time on
    the new clock lay inside that memory, and an inrush blip was confirmed."""

    def elec(ma: float) -> np.ndarray:
        v = np.full((1, NR), np.nan)
        v[0, RI["residual_current"]] = ma
        return v

    eng = Engine(capacity=1)
    eng.configure([0], [K["electrical"]], [0], [{}], [60_000])
    out: list[object] = []
    for i, ma in enumerate([30.0, 450.0, 30.0]):  # a blip judged `transient` at 120 s
        out += feed(eng, 0, T0 + i * 60_000, elec(ma), T0 + i * 60_000 + 50)
    back = T0 - 3_600_000  # the clock reset an hour back, from 180 s of arrival on
    for i, ma in enumerate([30.0, 30.0, 30.0, 450.0, 30.0]):
        out += feed(eng, 0, back + i * 60_000, elec(ma), T0 + (3 + i) * 60_000 + 50)
    assert eng.clock_steps == 1
    verdicts = [
        (c.verdict, c.at_ms - back)  # type: ignore[attr-defined]
        for c in out
        if c.alarm_type == "electrical" and c.action == "verdict"  # type: ignore[attr-defined]
    ]
    assert verdicts == [("suppressed", 3_720_000), ("suppressed", 240_000)]


def test_a_detector_whose_clock_runs_ahead_is_not_held_back_by_its_zone() -> None:
    """A smoke detector whose clock runs minutes fast (accepted after three
    agreeing readings) beside an on-time one in its zone: its readings waited
    in the zone's event-time order until the neighbour's clock reached
    theirs, so its fire was confirmed as many minutes late, in arrival time,
    as its clock was fast. The zone is ordered on the platform's clock (its
    accepted lead taken off), while its alarms keep its own times."""

    def run(lead_s: int) -> list[tuple[str, str, int, int]]:
        eng = Engine(capacity=2)
        eng.configure([0, 1], [K["smoke"]] * 2, [1, 1], [{}, {}], [10_000, 10_000])
        out: list[tuple[str, str, int, int]] = []
        for i in range(100):
            arrival = T0 + i * 10_000
            obs = 0.2 if i < 60 else 0.2 + (i - 60) * 1.0  # a fire from 600 s on
            v = np.concatenate([smoke(obs), smoke(0.2)])
            r = Readings(
                np.array([0, 1], np.int64),
                np.array([arrival + lead_s * 1000, arrival], np.int64),
                v,
            )
            for c in [*eng.process(r, Events.empty(), arrival), *eng.advance(arrival)]:
                if c.alarm_type == "fire":
                    out.append((c.action, c.verdict, c.at_ms - T0, arrival - T0))
        return out

    on_time = run(0)
    assert on_time == [
        ("open", "pending", 630_000, 630_000),
        ("verdict", "confirmed", 660_000, 660_000),
    ]
    for lead in (60, 240):
        ahead = run(lead)
        # Its own times, raised as soon as its readings arrive.
        assert ahead == [
            ("open", "pending", 630_000 + lead * 1000, 630_000),
            ("verdict", "confirmed", 660_000 + lead * 1000, 660_000),
        ]
