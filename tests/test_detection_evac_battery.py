"""Emergency lighting running down during a mains outage (issue 16 item 3)."""

from __future__ import annotations

import numpy as np

from detection import AlarmChange, Engine, Events, Readings
from firesafe import contract

RI = contract.READING_INDEX
NR = len(contract.READINGS)
EVAC = contract.KINDS.index("evac")
T0 = 1_764_072_000_000
MIN = 60_000


def run(thresholds: dict[str, float], minutes: int, drain_per_min: float) -> list[AlarmChange]:
    """Mains lost at minute 10 for `minutes`, charge from 100 % falling by
    `drain_per_min`; then mains back and recharging at 0.5 %/min."""
    eng = Engine(capacity=2)
    eng.configure([0], [EVAC], [0], [thresholds], [60_000])
    out: list[AlarmChange] = []
    batt = 100.0
    for m in range(0, 10 + minutes + 200):
        on_batt = 10 <= m < 10 + minutes
        if on_batt:
            batt = max(0.0, batt - drain_per_min)
        elif m >= 10 + minutes:
            batt = min(100.0, batt + 0.5)
        v = np.full((1, NR), np.nan)
        v[0, RI["battery"]] = round(batt, 1)
        v[0, RI["mains"]] = 0.0 if on_batt else 1.0
        v[0, RI["lamp_ok"]] = 1.0
        ts = T0 + m * MIN
        out += eng.process(
            Readings(np.zeros(1, np.int64), np.array([ts], np.int64), v), Events.empty(), ts
        )
    return [c for c in out if c.alarm_type == "evac_fault"]


def test_healthy_unit_in_a_short_outage_is_a_state() -> None:
    # 3 h unit (0.56 %/min), 40 min outage: projected 180 min >= 90, charge >= 30 %.
    assert run({}, 40, 100 / 180) == []


def test_weak_battery_is_depleting_once_its_projection_is_short() -> None:
    # A battery that would last 45 min against a 90 min rating: the projection
    # (elapsed + charge / rate) is trusted after 5 min on battery.
    got = [(c.action, c.reason, (c.at_ms - T0) // MIN) for c in run({}, 60, 100 / 45)]
    assert got[0] == ("open", "battery_depleting", 15)
    assert got[1][:2] == ("clear", "condition_gone")  # mains back, recharged to 35 %
    assert got[1][2] > 70


def test_rated_duration_is_a_registry_threshold() -> None:
    # The same 45 min battery in a building that needs 30 min: no fault until
    # the charge itself runs under 30 %: 100 - (100 / 45) x (m - 9) < 30 first at m = 41.
    got = [
        (c.action, c.reason, (c.at_ms - T0) // MIN)
        for c in run({"rated_duration_min": 30}, 60, 100 / 45)
    ]
    assert got[0] == ("open", "battery_depleting", 41)
