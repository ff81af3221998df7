"""Detection of panel states (events a GB/T 26875.3 gateway reports) and of
operators' verdicts, on the engine directly (pure, no I/O)."""

from __future__ import annotations

import numpy as np

from detection import AlarmChange, Engine, Events, Readings
from firesafe import contract

EV = {name: i for i, name in enumerate(contract.EVENT_TYPES)}
K = {name: i for i, name in enumerate(contract.ALL_KINDS)}
NR = len(contract.READINGS)
T0 = 1_764_072_000_000
HOUR = 3_600_000


def engine(kinds: list[str], zones: list[int]) -> Engine:
    e = Engine(capacity=8)
    e.configure(list(range(len(kinds))), [K[k] for k in kinds], zones, [{}] * len(kinds))
    return e


def events(e: Engine, *items: tuple[int, int, str]) -> list[AlarmChange]:
    """(slot, ms after T0, event name) -> the engine's alarm changes."""
    slot = np.array([s for s, _, _ in items], np.int64)
    ts = np.array([T0 + t for _, t, _ in items], np.int64)
    code = np.array([EV[n] for _, _, n in items], np.int16)
    none = np.empty(0, np.int64)
    return e.process(
        Readings(slot=none, ts=none, values=np.empty((0, NR))), Events(slot=slot, ts=ts, code=code)
    )


def brief(changes: list[AlarmChange]) -> list[tuple[int, str, str, str, str]]:
    return [(c.slot, c.alarm_type, c.action, c.verdict, c.reason) for c in changes]


def test_a_panel_detector_waits_for_corroboration_not_for_time() -> None:
    e = engine(["smoke", "smoke"], [0, 1])
    assert brief(events(e, (0, 0, "panel_fire"))) == [(0, "fire", "open", "pending", "panel_alarm")]
    assert e.advance(T0 + 24 * HOUR) == []  # a day later: still pending
    assert events(e, (0, 24 * HOUR, "panel_fire")) == []  # repeated: nothing new


def test_a_second_point_of_the_zone_confirms_both() -> None:
    e = engine(["smoke", "heat"], [0, 0])
    events(e, (0, 0, "panel_fire"))
    got = brief(events(e, (1, 20_000, "panel_fire")))
    assert (1, "fire", "open", "pending", "panel_alarm") in got
    assert (0, "fire", "verdict", "confirmed", "coincidence") in got
    assert (1, "fire", "verdict", "confirmed", "coincidence") in got


def test_a_call_point_of_the_zone_confirms_a_pending_detector() -> None:
    e = engine(["smoke", "mcp"], [0, 0])
    events(e, (0, 0, "panel_fire"))
    got = brief(events(e, (1, 5_000, "activated")))
    assert (1, "fire", "open", "confirmed", "call_point") in got
    assert (0, "fire", "verdict", "confirmed", "call_point") in got


def test_panel_reset_suppresses_pending_and_leaves_confirmed_latched() -> None:
    e = engine(["smoke", "mcp"], [0, 1])
    events(e, (0, 0, "panel_fire"))
    assert brief(events(e, (0, 60_000, "panel_reset"))) == [
        (0, "fire", "verdict", "suppressed", "panel_reset")
    ]
    events(e, (1, 0, "activated"))
    assert events(e, (1, 60_000, "reset")) == []
    assert events(e, (1, 61_000, "panel_reset")) == []  # not an mcp event: ignored
    assert e.machine.open_alarms() == {(1, "fire"): "confirmed"}
    # After the reset the detector can alarm again.
    assert brief(events(e, (0, 120_000, "panel_fire")))[0][3] == "pending"


def test_electrical_monitor_fire_bit_is_an_electrical_alarm() -> None:
    e = engine(["electrical"], [0])
    assert brief(events(e, (0, 0, "panel_fire"))) == [
        (0, "electrical", "open", "pending", "panel_alarm")
    ]
    assert e.advance(T0 + HOUR) == []
    assert brief(events(e, (0, 10_000, "panel_reset"))) == [
        (0, "electrical", "verdict", "suppressed", "panel_reset")
    ]


def test_gateway_kinds_take_fire_and_fault() -> None:
    e = engine(["point", "panel", "uitd"], [0, 1, 2])
    got = brief(events(e, (0, 0, "panel_fire"), (1, 0, "fault"), (2, 0, "fault")))
    assert (0, "fire", "open", "pending", "panel_alarm") in got
    assert (1, "fault", "open", "confirmed", "device_fault") in got
    assert (2, "fault", "open", "confirmed", "device_fault") in got
    assert brief(events(e, (1, 1_000, "restore")))[0][2] == "clear"


def test_operator_verdicts_are_followed() -> None:
    e = engine(["smoke", "smoke"], [0, 1])
    events(e, (0, 0, "panel_fire"), (1, 0, "panel_fire"))
    e.operator_verdict(0, "fire", "confirmed")
    e.operator_verdict(1, "fire", "suppressed")
    assert events(e, (0, 10_000, "panel_reset")) == []  # latched: the person confirmed it
    assert e.machine.open_alarms() == {(0, "fire"): "confirmed"}
    # The dismissed one alarms again as new.
    assert brief(events(e, (1, 20_000, "panel_fire")))[0][2:4] == ("open", "pending")


def test_a_verdict_overrides_what_the_engine_decided_meanwhile() -> None:
    """A detector's own alarm resolves by its window; a person's dismissal
    stored before ingest heard of it still wins."""
    e = engine(["smoke"], [0])
    events(e, (0, 0, "fire_alarm"))
    e.advance(T0 + HOUR)  # window over: the engine confirmed it
    assert e.machine.open_alarms() == {(0, "fire"): "confirmed"}
    e.operator_verdict(0, "fire", "suppressed")
    assert e.machine.open_alarms() == {}


def test_restored_panel_alarm_keeps_waiting() -> None:
    e = engine(["smoke"], [0])
    e.restore_alarm(0, "fire", "pending", T0, "panel_alarm")
    assert e.advance(T0 + 24 * HOUR) == []
    assert brief(events(e, (0, 1_000, "panel_reset"))) == [
        (0, "fire", "verdict", "suppressed", "panel_reset")
    ]


def test_a_panel_fire_dated_before_the_points_last_event_is_raised() -> None:
    """The outside check's lost fire: the panel reported the point normal
    (the gateway's whole state after a restart: a no-op `panel_reset`), then
    its fire with a time label 20 s older (a resend, a backlog). In event
    time the fire came first; it must open an alarm at its own time, in the
    same batch or in the next, never be dropped as late."""
    for together in (False, True):
        e = engine(["smoke", "smoke"], [0, 1])
        first = (0, 20_000, "panel_reset")
        fire = (0, 0, "panel_fire")
        got = events(e, first, fire) if together else [*events(e, first), *events(e, fire)]
        assert [(*b, c.at_ms) for b, c in zip(brief(got), got, strict=True)] == [
            (0, "fire", "open", "pending", "panel_alarm", T0)
        ], together
    assert e.late_events == 0


def test_alarm_events_dated_far_behind_the_device_are_taken_at_its_newest_time() -> None:
    """A clock reset to 2000-01-01 (a panel's or a detector's real-time clock
    after a power loss): the fire alarm, the panel's and the call point's, is
    raised, at the device's newest time rather than 26 years back (where a
    `since` filter would hide it); other late events stay dropped."""
    epoch = 946_684_800_000 - T0  # 2000-01-01, relative to T0
    e = engine(["smoke", "mcp", "multi", "heat"], [0, 1, 2, 3])
    events(e, (0, 0, "panel_reset"), (1, 0, "reset"), (2, 0, "restore"), (3, 0, "restore"))
    got = events(
        e,
        (0, epoch, "panel_fire"),
        (1, epoch + 1, "activated"),
        (2, epoch + 2, "fire_alarm"),
        (3, epoch + 3, "fault"),
    )
    assert sorted((*b, c.at_ms) for b, c in zip(brief(got), got, strict=True)) == [
        (0, "fire", "open", "pending", "panel_alarm", T0),
        (1, "fire", "open", "confirmed", "call_point", T0),
        (2, "fire", "open", "pending", "device_alarm", T0),
    ]
    assert e.late_events == 1  # the fault: a restore came after it


def test_a_panel_fire_is_shown_within_seconds_next_to_a_quiet_point() -> None:
    """Points report on change only, through one transmission device in order:
    nothing of a quiet neighbour is on its way, so its zone waits for it only
    ON_CHANGE_TRANSIT_SLACK_MS (the outside check saw a panel's fire reach REST
    10.7 s late next to a quiet point, 0.4 s alone)."""
    on_change = [366 * 86_400_000] * 2
    e = Engine(capacity=8)
    e.configure([0, 1], [K["smoke"], K["smoke"]], [0, 0], [{}, {}], on_change)
    none = np.empty(0, np.int64)
    empty = Readings(slot=none, ts=none, values=np.empty((0, NR)))

    def send(slot: int, at: int, name: str) -> list[AlarmChange]:
        ev = Events(np.array([slot]), np.array([T0 + at]), np.array([EV[name]], np.int16))
        return e.process(empty, ev, T0 + at + 300)  # 0.3 s from panel to ingest

    send(1, 0, "panel_reset")  # the neighbour's whole state, then quiet
    assert send(0, 60_000, "panel_fire") == []  # held for the zone's order, briefly
    assert e.advance(T0 + 61_000) == []
    shown = e.advance(T0 + 62_500)
    assert brief(shown) == [(0, "fire", "open", "pending", "panel_alarm")]
    assert shown[0].at_ms == T0 + 60_000


def test_a_walk_test_waits_for_a_person_and_corroborates_nothing() -> None:
    """A panel point's alarm in test mode (`panel_test`): pending with reason
    `panel_test` (told to no one: the notification trigger tells pending
    `panel_alarm`s only), never confirmed by time; two tested points of a zone
    and a tested call point are no coincidence, nor is a tested point with a
    real alarm (either way); the point still raised when test mode ends is a
    real one."""
    e = engine(["smoke", "heat", "mcp", "smoke"], [0, 0, 0, 0])
    assert brief(events(e, (0, 0, "panel_test"))) == [(0, "fire", "open", "pending", "panel_test")]
    assert sorted(brief(events(e, (1, 5_000, "panel_test"), (2, 6_000, "panel_test")))) == [
        (1, "fire", "open", "pending", "panel_test"),
        (2, "fire", "open", "pending", "panel_test"),
    ]
    assert e.advance(T0 + 24 * HOUR) == []
    assert brief(events(e, (2, 60_000, "panel_reset"))) == [
        (2, "fire", "verdict", "suppressed", "panel_reset")
    ]
    # Point 1 is still raised when its test ends: a real panel alarm now.
    assert brief(events(e, (1, 70_000, "panel_fire"))) == [
        (1, "fire", "verdict", "suppressed", "panel_test_ended"),
        (1, "fire", "open", "pending", "panel_alarm"),
    ]
    # A second real alarm of the zone: a coincidence of the two real ones only.
    got = brief(events(e, (3, 80_000, "panel_fire")))
    assert sorted(c for c in got if c[2] == "verdict") == [
        (1, "fire", "verdict", "confirmed", "coincidence"),
        (3, "fire", "verdict", "confirmed", "coincidence"),
    ]
    assert e.machine.open_alarms()[(0, "fire")] == "pending"


def test_an_electrical_monitor_under_test_waits_and_becomes_real_after_it() -> None:
    e = engine(["electrical"], [0])
    assert brief(events(e, (0, 0, "panel_test"))) == [
        (0, "electrical", "open", "pending", "panel_test")
    ]
    assert e.advance(T0 + HOUR) == []
    assert brief(events(e, (0, 10_000, "panel_fire"))) == [
        (0, "electrical", "verdict", "suppressed", "panel_test_ended"),
        (0, "electrical", "open", "pending", "panel_alarm"),
    ]


def test_restored_panel_test_alarm_keeps_waiting() -> None:
    e = engine(["smoke"], [0])
    e.restore_alarm(0, "fire", "pending", T0, "panel_test")
    assert e.advance(T0 + 24 * HOUR) == []
