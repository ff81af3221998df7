"""Clean-air behaviour of every reading: baseline, sensor noise and slow drift.

Values are computed for many devices at once (numpy); scenarios then bend the
few devices they affect. Units are the contract's (section 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from device_sim.contract import READINGS

FloatArray = NDArray[np.float64]

# One-sigma sensor noise per reading, of the order datasheets quote.
NOISE_SD: Mapping[str, float] = {
    "obscuration": 0.03,  # %/m, photoelectric chamber noise in clean air
    "temperature": 0.08,  # °C, thermistor resolution
    "co": 0.4,  # ppm, electrochemical cell noise
    "humidity": 0.6,  # %RH
    "residual_current": 1.0,  # mA, core-balance CT noise
    "cable_temperature": 0.15,  # °C
    "current": 0.4,  # A, load fluctuation
    "voltage": 0.8,  # V, grid fluctuation (EN 50160 allows ±10 %)
    "battery": 0.05,  # % charge estimate jitter
    "mains": 0.0,
    "lamp_ok": 0.0,
}
# Decimals a device reports (a real device does not send 17 digits).
DECIMALS: Mapping[str, int] = {
    "obscuration": 3,
    "temperature": 2,
    "co": 1,
    "humidity": 1,
    "residual_current": 1,
    "cable_temperature": 2,
    "current": 2,
    "voltage": 1,
    "battery": 1,
    "mains": 0,
    "lamp_ok": 0,
}
# Readings that are flags and are sent as JSON integers.
INTEGER_READINGS = frozenset({"mains", "lamp_ok"})
# Physical bounds (a sensor cannot read below zero obscuration, above 100 %RH...).
BOUNDS: Mapping[str, tuple[float, float]] = {
    "obscuration": (0.0, 100.0),
    "temperature": (-40.0, 200.0),
    "co": (0.0, 2000.0),
    "humidity": (0.0, 100.0),
    "residual_current": (0.0, 5000.0),
    "cable_temperature": (-40.0, 250.0),
    "current": (0.0, 1000.0),
    "voltage": (0.0, 300.0),
    "battery": (0.0, 100.0),
    "mains": (0.0, 1.0),
    "lamp_ok": (0.0, 1.0),
}
# Indoor temperature follows the day: ±0.5-2 °C (heating/occupancy cycle).
DIURNAL_AMPLITUDE_C = (0.5, 2.0)
DAY_MS = 86_400_000
# Dust slowly settles in a smoke chamber: up to ~0.05 %/m per day of service.
OBSCURATION_DRIFT_PER_DAY = (0.0, 0.05)
# Device's own alarm decision (what makes it send a `fire_alarm` event):
# EN 54-7 point detectors respond at roughly 0.05-0.2 dB/m, i.e. 1.1-4.5 %/m.
DEVICE_ALARM_OBSCURATION = 3.5  # %/m
# EN 54-5 class A1 heat detectors: static response 54-65 °C, typically 57 °C.
DEVICE_ALARM_TEMPERATURE = 57.0  # °C
# A detector alarms after this many consecutive samples above its threshold
# (its own filter against single-sample spikes).
DEVICE_ALARM_CONFIRM_SAMPLES = 2


class Physics:
    """Per-device baselines and drift parameters as columns indexed by device."""

    def __init__(self, baselines: list[Mapping[str, float]], seed: int) -> None:
        n = len(baselines)
        rng = np.random.default_rng([seed, 101])
        # Devices with the same reading names share a pattern (in practice: a kind).
        patterns: dict[tuple[str, ...], int] = {}
        self.pattern = np.array(
            [patterns.setdefault(tuple(b), len(patterns)) for b in baselines], dtype=np.int64
        )
        self.base: dict[str, FloatArray] = {name: np.zeros(n) for name in READINGS}
        for names, code in patterns.items():
            members = np.flatnonzero(self.pattern == code)
            rows = [baselines[i] for i in members.tolist()]
            for name in names:
                self.base[name][members] = [b[name] for b in rows]
        self.pattern_has: dict[str, NDArray[np.bool_]] = {
            name: np.array([name in names for names in patterns], dtype=np.bool_)
            for name in READINGS
        }
        self.has: dict[str, NDArray[np.bool_]] = {
            name: self.pattern_has[name][self.pattern] for name in READINGS
        }
        self.diurnal_amp = rng.uniform(*DIURNAL_AMPLITUDE_C, size=n)
        self.diurnal_phase = rng.uniform(0.0, 2 * math.pi, size=n)
        self.dust_per_ms = rng.uniform(*OBSCURATION_DRIFT_PER_DAY, size=n) / DAY_MS

    def plan(self, idx: NDArray[np.intp], own: NDArray[np.bool_] | None = None) -> Plan:
        """What sampling devices `idx` needs, gathered once: a tick's due devices
        repeat with the period of the reporting intervals, so a plan is reused."""
        pattern = self.pattern[idx]
        mine = idx if own is None else idx[own]
        draws = []
        for name in READINGS:
            has_all = self.pattern_has[name][pattern]
            has_own = has_all if own is None else has_all[own]
            at = np.flatnonzero(has_own)
            pick = None if own is None else np.flatnonzero(own[has_all])
            count = int(np.count_nonzero(has_all))
            draws.append(_Draw(name, NOISE_SD[name], count, pick, at, self.base[name][mine[at]]))
        return Plan(
            len(mine),
            draws,
            self.diurnal_amp[mine],
            self.diurnal_phase[mine],
            self.dust_per_ms[mine],
        )

    def sample(
        self,
        idx: NDArray[np.intp],
        t_ms: NDArray[np.int64],
        t0_ms: int,
        rng: np.random.Generator,
        own: NDArray[np.bool_] | None = None,
    ) -> dict[str, FloatArray]:
        """Clean-air readings of devices `idx` at times `t_ms`, or of `idx[own]` only."""
        return self.sample_plan(self.plan(idx, own), t_ms if own is None else t_ms[own], t0_ms, rng)

    @staticmethod
    def sample_plan(
        plan: Plan, t_ms: NDArray[np.int64], t0_ms: int, rng: np.random.Generator
    ) -> dict[str, FloatArray]:
        """Clean-air readings of a plan's own devices at times `t_ms`.

        Noise is drawn for every device the plan was made from that has the
        reading, own or not, so a device reads the same whichever share of the
        estate a publisher computes. A column holds 0 for devices without that
        reading (junk, never sent)."""
        # The angle of the day from the time of day: the same angle as from the
        # epoch, without sin() reducing a 10^5-radian argument.
        day_angle = (2 * math.pi / DAY_MS) * (t_ms % DAY_MS).astype(np.float64)
        out: dict[str, FloatArray] = {}
        for draw in plan.draws:
            col = np.zeros(plan.n)
            if draw.sd:
                noise = rng.standard_normal(draw.count)
                if draw.pick is not None:
                    noise = noise[draw.pick]
                col[draw.at] = draw.base + draw.sd * noise
            else:
                col[draw.at] = draw.base
            out[draw.name] = col
        diurnal = plan.amp * np.sin(day_angle + plan.phase)
        out["temperature"] += diurnal
        out["cable_temperature"] += diurnal
        out["humidity"] -= 2.0 * diurnal  # warmer air holds more water: RH falls
        out["obscuration"] += plan.dust * (t_ms - t0_ms)
        return out


@dataclass(frozen=True, slots=True)
class _Draw:
    name: str
    sd: float
    count: int  # noise values drawn (every device of the plan that has the reading)
    pick: NDArray[np.intp] | None  # which of them are the own devices' (None: all)
    at: NDArray[np.intp]  # where the own devices with the reading sit in a column
    base: FloatArray  # their baselines


@dataclass(frozen=True, slots=True)
class Plan:
    n: int  # own devices
    draws: list[_Draw]
    amp: FloatArray
    phase: FloatArray
    dust: FloatArray


def finish(name: str, column: FloatArray) -> list[float] | list[int]:
    """Clip to the physical range and round as the device would report it."""
    lo, hi = BOUNDS[name]
    clipped = np.clip(column, lo, hi)
    if name in INTEGER_READINGS:
        ints: list[int] = np.rint(clipped).astype(np.int64).tolist()
        return ints
    floats: list[float] = np.round(clipped, DECIMALS[name]).tolist()
    return floats
