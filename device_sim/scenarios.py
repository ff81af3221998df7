"""The scenario library: physically plausible fires, nuisances and faults.

Each scenario draws its parameters from ranges (so a seed gives one concrete
instance), picks a zone that fits it, and returns an `Injection`: value
overlays on the affected devices, events the devices themselves send,
transport effects (offline, skew, duplicates...) and the ground-truth `Label`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_sim.estate import Device, Estate
from device_sim.physics import DEVICE_ALARM_TEMPERATURE
from firesafe.i18n import N_

MINUTE_S = 60.0


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth of one injected scenario (one JSON Lines row)."""

    scenario: str
    kind: str  # fire, nuisance, electrical, evac, fault, offline, transport, reject
    devices: tuple[str, ...]
    site: str
    building: str
    floor: str
    zone: str
    start_ms: int
    end_ms: int
    # The alarm type the platform should confirm; None: must not confirm any.
    expected_alarm_type: str | None
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kind": self.kind,
            "devices": list(self.devices),
            "site": self.site,
            "building": self.building,
            "floor": self.floor,
            "zone": self.zone,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "expected_alarm_type": self.expected_alarm_type,
            "params": dict(self.params),
        }


# Mutates the reading values of one sample; tau_s = seconds since this device's onset.
Shape = Callable[[float, dict[str, float]], None]


@dataclass(frozen=True, slots=True)
class Effect:
    device: int
    onset_ms: int
    end_ms: int
    shape: Shape


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    ts_ms: int
    device: int
    type: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StreamEffect:
    """What happens to a device's messages on the way (not to its physics).

    mode: drop (device silent), skew (clock off by `value` ms), duplicate
    (every message sent twice), delay (held up to `value` ms: reordering),
    corrupt (successive telemetry replaced by the bad inputs in `modes`),
    seq_jump (counter set to `value` at start: wrap-around), status (a
    retained `offline` at start and `online` at end: last will).
    """

    device: int
    start_ms: int
    end_ms: int
    mode: str
    value: float = 0.0
    modes: tuple[str, ...] = ()


@dataclass
class Injection:
    label: Label
    effects: list[Effect] = field(default_factory=list)
    events: list[ScheduledEvent] = field(default_factory=list)
    stream: list[StreamEffect] = field(default_factory=list)


@dataclass
class Context:
    """What a scenario builder may look at."""

    estate: Estate
    start_ms: int
    end_ms: int
    by_zone: dict[tuple[str, str, str, str], list[int]]
    used_zones: set[tuple[str, str, str, str]]
    used_devices: set[int]

    def device(self, i: int) -> Device:
        return self.estate.devices[i]

    def pick_zone(
        self, rng: np.random.Generator, ok: Callable[[list[Device]], bool]
    ) -> tuple[str, str, str, str] | None:
        """A random zone whose devices satisfy `ok`, preferring zones not used yet."""
        fits = [k for k, idx in self.by_zone.items() if ok([self.estate.devices[i] for i in idx])]
        fresh = [k for k in fits if k not in self.used_zones]
        pool = fresh or fits
        if not pool:
            return None
        key = pool[int(rng.integers(len(pool)))]
        self.used_zones.add(key)
        return key

    def pick_zone_of_type(
        self, rng: np.random.Generator, zone_type: str, ok: Callable[[list[Device]], bool]
    ) -> tuple[str, str, str, str] | None:
        """A zone of `zone_type` whose devices satisfy `ok`, else any zone whose do."""
        return self.pick_zone(rng, lambda ds: ok(ds) and ds[0].zone_type == zone_type) or (
            self.pick_zone(rng, ok)
        )

    def pick_devices(
        self, rng: np.random.Generator, kinds: Sequence[str], count: int = 1
    ) -> list[int]:
        cands = [i for i, d in enumerate(self.estate.devices) if d.kind in kinds]
        fresh = [i for i in cands if i not in self.used_devices]
        pool = fresh or cands
        if not pool:
            return []
        chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
        out = [pool[int(c)] for c in chosen]
        self.used_devices.update(out)
        return out

    def label(
        self,
        scenario: str,
        kind: str,
        devices: Sequence[int],
        start_ms: int,
        end_ms: int,
        expected: str | None,
        params: Mapping[str, Any],
    ) -> Label:
        first = self.device(devices[0])
        self.used_devices.update(devices)
        return Label(
            scenario=scenario,
            kind=kind,
            devices=tuple(self.device(i).id for i in devices),
            site=first.site,
            building=first.building,
            floor=first.floor,
            zone=first.zone,
            start_ms=start_ms,
            end_ms=min(end_ms, self.end_ms),
            expected_alarm_type=expected,
            params={k: _plain(v) for k, v in params.items()},
        )


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return round(float(value), 3)
    return value


Builder = Callable[[Context, np.random.Generator, int], Injection | None]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    expected: str | None
    nominal_s: float  # typical length, used to place it inside the run
    description: str
    build: Builder


DETECTORS = ("smoke", "heat", "multi")
SMOKE_SENSING = ("smoke", "multi")


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _detectors(ctx: Context, key: tuple[str, str, str, str]) -> list[int]:
    return [i for i in ctx.by_zone[key] if ctx.device(i).kind in DETECTORS]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# --- fires -------------------------------------------------------------------


def _fire(ctx: Context, rng: np.random.Generator, start: int, flaming: bool) -> Injection | None:
    # A smouldering fire gives a few degrees at most: only a zone that senses
    # smoke can see it (a heat-only zone would label a fire no detector can
    # report).
    sensing = DETECTORS if flaming else SMOKE_SENSING
    key = ctx.pick_zone(
        rng,
        lambda ds: sum(d.kind in DETECTORS for d in ds) >= 2 and any(d.kind in sensing for d in ds),
    ) or (ctx.pick_zone(rng, lambda ds: any(d.kind in sensing for d in ds)))
    if key is None:
        return None
    dets = _detectors(ctx, key)
    origin = dets[int(rng.integers(len(dets)))]
    others = [i for i in dets if i != origin]
    if flaming:
        # EN 54-7 TF4 (polyurethane) / TF5 (n-heptane): dense smoke within a
        # few minutes and a ceiling temperature rising 8-30 °C/min.
        growth_s = _u(rng, 120, 300)
        peak_obs = _u(rng, 25, 60)  # %/m
        rate_c_min = _u(rng, 8, 30)
        heat_delay_s = _u(rng, 20, 60)
        max_rise = _u(rng, 45, 110)  # ceiling jet well above the 57 °C A1 point
        co_peak = _u(rng, 20, 80)  # flaming combustion is relatively complete
        spread_s = (20.0, 120.0)
        burn_s = max(growth_s, heat_delay_s + 60 * max_rise / rate_c_min) + _u(rng, 120, 300)
    else:
        # EN 54-7 TF2 (wood) / TF3 (cotton) smouldering: obscuration grows
        # slowly over 10-40 min, almost no heat, a marked CO rise.
        growth_s = _u(rng, 600, 2400)
        peak_obs = _u(rng, 8, 30)
        rate_c_min = _u(rng, 0.05, 0.2)
        heat_delay_s = 0.0
        max_rise = _u(rng, 1.0, 4.0)
        co_peak = _u(rng, 50, 250)  # incomplete combustion
        spread_s = (120.0, 600.0)
        burn_s = growth_s + _u(rng, 300, 900)
    decay_s = 300.0  # extinguished: smoke clears over minutes

    def shape_for(attenuation: float) -> Shape:
        def shape(tau: float, v: dict[str, float]) -> None:
            fade = 1.0 if tau <= burn_s else math.exp(-(tau - burn_s) / (decay_s / 3))
            g = min(tau / growth_s, 1.0)
            smoke_frac = g * g if not flaming else 1.0 - math.exp(-3.0 * g)
            if "obscuration" in v:
                v["obscuration"] += attenuation * peak_obs * smoke_frac * fade
            if "co" in v:
                v["co"] += attenuation * co_peak * g**1.5 * fade
            if "temperature" in v:
                rise = min(max(tau - heat_delay_s, 0.0) * rate_c_min / 60, max_rise)
                v["temperature"] += attenuation * rise * fade
            if "humidity" in v and flaming:
                v["humidity"] -= 10 * g * fade  # hot gases dry the air

        return shape

    effects = [Effect(origin, start, start + _ms(burn_s + decay_s), shape_for(1.0))]
    end = start + _ms(burn_s + decay_s)
    for i in others:
        delay = _u(rng, *spread_s)
        # Neighbours see cooler, diluted smoke, but a flaming fire still
        # takes their ceiling over the A1 threshold.
        att = _u(rng, 0.8, 1.0) if flaming else _u(rng, 0.4, 0.9)
        onset = start + _ms(delay)
        effects.append(Effect(i, onset, onset + _ms(burn_s + decay_s), shape_for(att)))
        end = max(end, onset + _ms(burn_s + decay_s))
    name = "flaming_fire" if flaming else "smouldering_fire"
    params = {
        "model": "TF4/TF5" if flaming else "TF2/TF3",
        "origin": ctx.device(origin).id,
        "growth_s": growth_s,
        "peak_obscuration": peak_obs,
        "heat_rate_c_per_min": rate_c_min,
        "max_temperature_rise": max_rise,
        "co_peak_ppm": co_peak,
    }
    devices = [origin, *others]
    label = ctx.label(name, "fire", devices, start, end, "fire", params)
    return Injection(label, effects=effects)


def _flaming(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _fire(ctx, rng, start, flaming=True)


def _smouldering(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _fire(ctx, rng, start, flaming=False)


def _call_point(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ["mcp"])
    if not devs:
        return None
    reset_s = _u(rng, 120, 900)  # someone resets the glass with the key
    events = [
        ScheduledEvent(start, devs[0], "activated", "glass broken"),
        ScheduledEvent(start + _ms(reset_s), devs[0], "reset", None),
    ]
    label = ctx.label(
        "call_point", "fire", devs, start, start + _ms(reset_s), "fire", {"reset_after_s": reset_s}
    )
    return Injection(label, events=events)


# --- nuisances -----------------------------------------------------------------


def _bump(rise_s: float, hold_s: float, tau_decay_s: float, tau: float) -> float:
    """0 -> 1 over rise_s, held for hold_s, then exponential decay."""
    if tau < rise_s:
        return tau / rise_s
    if tau < rise_s + hold_s:
        return 1.0
    return math.exp(-(tau - rise_s - hold_s) / tau_decay_s)


def _cooking(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    def near_kitchen(ds: list[Device]) -> bool:
        return any(d.kind in SMOKE_SENSING for d in ds) and ds[0].zone_type in (
            "kitchen",
            "corridor",
            "office",
        )

    key = ctx.pick_zone_of_type(rng, "kitchen", near_kitchen)
    if key is None:
        return None
    devs = [i for i in ctx.by_zone[key] if ctx.device(i).kind in SMOKE_SENSING][:2]
    # Frying aerosol: a few %/m of large particles that settle and vent away.
    peak = _u(rng, 2.5, 9.0)
    rise_s, hold_s, decay_s = _u(rng, 60, 180), _u(rng, 60, 300), _u(rng, 90, 240)
    warm = _u(rng, 1.0, 4.0)

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        v["obscuration"] += peak * b
        v["temperature"] += warm * b
        if "humidity" in v:
            v["humidity"] += 8 * b
        if "co" in v:
            v["co"] += 3 * b  # a gas hob adds a little CO

    end = start + _ms(rise_s + hold_s + 5 * decay_s)
    effects = [Effect(i, start, end, shape) for i in devs]
    params = {"peak_obscuration": peak, "decay_s": decay_s}
    return Injection(
        ctx.label("cooking", "nuisance", devs, start, end, None, params), effects=effects
    )


def _steam(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    key = ctx.pick_zone_of_type(rng, "bathroom", lambda ds: any(d.kind == "multi" for d in ds))
    if key is None:
        return None
    devs = [i for i in ctx.by_zone[key] if ctx.device(i).kind in SMOKE_SENSING]
    # A shower: near-saturated air (> 90 %RH) whose droplets scatter light
    # like smoke, with a few degrees of warmth and no CO.
    target_rh = _u(rng, 93, 99)
    peak_obs = _u(rng, 1.5, 6.0)
    rise_s, hold_s, decay_s = _u(rng, 60, 150), _u(rng, 300, 900), _u(rng, 120, 300)
    warm = _u(rng, 2.0, 6.0)

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        if "humidity" in v:
            v["humidity"] += (target_rh - v["humidity"]) * b
        v["obscuration"] += peak_obs * b
        v["temperature"] += warm * b

    end = start + _ms(rise_s + hold_s + 5 * decay_s)
    effects = [Effect(i, start, end, shape) for i in devs]
    params = {"humidity_peak": target_rh, "peak_obscuration": peak_obs}
    return Injection(
        ctx.label("steam", "nuisance", devs, start, end, None, params), effects=effects
    )


def _dust(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, SMOKE_SENSING)
    if not devs:
        return None
    # Building work: dust contaminates one chamber over tens of minutes,
    # until maintenance cleans it.
    ramp_s, hold_s, rise = _u(rng, 1200, 3600), _u(rng, 600, 1800), _u(rng, 1.0, 3.0)

    def shape(tau: float, v: dict[str, float]) -> None:
        v["obscuration"] += rise * min(tau / ramp_s, 1.0)

    end = start + _ms(ramp_s + hold_s)
    params = {"drift_obscuration": rise, "ramp_s": ramp_s}
    return Injection(
        ctx.label("dust", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _spike(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, DETECTORS)
    if not devs:
        return None
    d = ctx.device(devs[0])
    # An insect crossing the optical chamber or an EMI burst: one sample.
    height = _u(rng, 8, 40) if "obscuration" in d.baseline else _u(rng, 40, 80)
    reading = "obscuration" if "obscuration" in d.baseline else "temperature"
    length_ms = d.interval_s * 1000  # exactly one sample falls in the window

    def shape(tau: float, v: dict[str, float]) -> None:
        v[reading] += height

    end = start + length_ms - 1
    params = {"reading": reading, "height": height}
    return Injection(
        ctx.label("spike", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _heat_nuisance(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ("heat", "multi", "smoke"))
    if not devs:
        return None
    base = ctx.device(devs[0]).baseline["temperature"]
    # Sun on a skylight or a fan heater: 0.2-1 °C/min, never near 57 °C and
    # far below the ~8 °C/min a rate-of-rise element reacts to.
    rate = _u(rng, 0.2, 1.0)
    rise = min(_u(rng, 10, 22), DEVICE_ALARM_TEMPERATURE - 10 - base)
    hold_s, decay_s = _u(rng, 600, 1800), _u(rng, 300, 900)
    ramp_s = 60 * rise / rate

    def shape(tau: float, v: dict[str, float]) -> None:
        v["temperature"] += rise * _bump(ramp_s, hold_s, decay_s, tau)

    end = start + _ms(ramp_s + hold_s + 4 * decay_s)
    params = {"rate_c_per_min": rate, "rise_c": rise}
    return Injection(
        ctx.label("heat_nuisance", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


# --- electrical ----------------------------------------------------------------

# IEC 60364-4-42: 300 mA residual current is the fire-protection RCD rating.
LEAKAGE_FIRE_MA = 300.0
# IEC 60364-5-52: PVC insulation is rated for a 70 °C conductor temperature.
PVC_MAX_C = 70.0


def _leakage(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ["electrical"])
    if not devs:
        return None
    # Insulation degrading (damp, damage): leakage creeps past 300 mA.
    peak = _u(rng, 1.2, 3.0) * LEAKAGE_FIRE_MA
    ramp_s, hold_s = _u(rng, 300, 1800), _u(rng, 600, 1800)

    def shape(tau: float, v: dict[str, float]) -> None:
        v["residual_current"] += (peak - v["residual_current"]) * min(tau / ramp_s, 1.0)

    end = start + _ms(ramp_s + hold_s)
    return Injection(
        ctx.label("leakage", "electrical", devs, start, end, "electrical", {"peak_ma": peak}),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _cable_overheat(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ["electrical"])
    if not devs:
        return None
    # Overload or a loose termination: current up 30-100 %, the cable heats
    # past its 70 °C insulation rating.
    overload = _u(rng, 1.3, 2.0)
    peak_c = _u(rng, PVC_MAX_C + 10, PVC_MAX_C + 45)
    ramp_s, hold_s = _u(rng, 600, 1800), _u(rng, 600, 1200)

    def shape(tau: float, v: dict[str, float]) -> None:
        g = min(tau / ramp_s, 1.0)
        v["current"] *= 1 + (overload - 1) * min(tau / 60, 1.0)
        v["cable_temperature"] += (peak_c - v["cable_temperature"]) * g

    end = start + _ms(ramp_s + hold_s)
    params = {"peak_cable_c": peak_c, "overload": overload}
    return Injection(
        ctx.label("cable_overheat", "electrical", devs, start, end, "electrical", params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _insulation_fault(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ["electrical"])
    if not devs:
        return None
    # Water reaching a junction box (a leak, a wash-down): an earth fault that
    # appears within seconds, not by slow creep, and stays until repaired.
    peak = _u(rng, 1.3, 3.0) * LEAKAGE_FIRE_MA
    onset_s, hold_s = _u(rng, 2, 10), _u(rng, 900, 1800)

    def shape(tau: float, v: dict[str, float]) -> None:
        v["residual_current"] += (peak - v["residual_current"]) * min(tau / onset_s, 1.0)

    end = start + _ms(onset_s + hold_s)
    params = {"peak_ma": peak, "onset_s": onset_s}
    return Injection(
        ctx.label("insulation_fault", "electrical", devs, start, end, "electrical", params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _motor_start(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ["electrical"])
    if not devs:
        return None
    # Direct-on-line motor start: 5-8 x inrush and a capacitive leakage blip
    # for one sample.
    inrush = _u(rng, 5, 8)
    blip = _u(rng, 100, 400)
    dip = _u(rng, 5, 15)  # volts lost to the inrush
    length_ms = ctx.device(devs[0]).interval_s * 1000

    def shape(tau: float, v: dict[str, float]) -> None:
        v["current"] *= inrush
        v["residual_current"] += blip
        v["voltage"] -= dip

    end = start + length_ms - 1
    params = {"inrush": inrush, "residual_blip_ma": blip}
    return Injection(
        ctx.label("motor_start", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


# --- evacuation devices ------------------------------------------------------

# EN 50172 / EN 1838: emergency lighting must run 1-3 h on battery; a 3 h
# unit loses 100 % in 180 min.
BATTERY_DRAIN_PER_S = 100.0 / (3 * 3600)
# Recharge to full within 24 h (EN 60598-2-22).
BATTERY_CHARGE_PER_S = 100.0 / (24 * 3600)


def _evac_fault(ctx: Context, rng: np.random.Generator, start: int, what: str) -> Injection | None:
    devs = ctx.pick_devices(rng, ["evac"])
    if not devs:
        return None
    repair_s = _u(rng, 1800, 7200)
    end = start + _ms(repair_s)
    low = _u(rng, 0, 15)

    def shape(tau: float, v: dict[str, float]) -> None:
        if what == "lamp":
            v["lamp_ok"] = 0.0
        else:
            v["battery"] = low + 0.1 * math.sin(tau)

    events = [
        ScheduledEvent(start, devs[0], "fault", f"{what} failure"),
        ScheduledEvent(end, devs[0], "restore", f"{what} replaced"),
    ]
    name = f"evac_{what}_failure"
    return Injection(
        ctx.label(name, "evac", devs, start, end, "evac_fault", {"repair_s": repair_s}),
        effects=[Effect(devs[0], start, end, shape)],
        events=events,
    )


def _lamp(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _evac_fault(ctx, rng, start, "lamp")


def _battery(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _evac_fault(ctx, rng, start, "battery")


def _self_test(
    ctx: Context, rng: np.random.Generator, start: int, passed: bool
) -> Injection | None:
    devs = ctx.pick_devices(rng, ["evac"])
    if not devs:
        return None
    # EN 50172 monthly function test: a short switch to battery.
    test_s = _u(rng, 30, 120)
    end = start + _ms(test_s)

    def shape(tau: float, v: dict[str, float]) -> None:
        v["mains"] = 0.0
        v["battery"] -= BATTERY_DRAIN_PER_S * tau
        if not passed:
            v["lamp_ok"] = 0.0

    result = "self_test_pass" if passed else "self_test_fail"
    events = [
        ScheduledEvent(start, devs[0], "emergency_start", "monthly test"),
        ScheduledEvent(end, devs[0], "emergency_end", "monthly test"),
        ScheduledEvent(end + 1, devs[0], result, None if passed else "lamp did not light"),
    ]
    name = "evac_self_test" if passed else "evac_self_test_fail"
    expected = None if passed else "evac_fault"
    return Injection(
        ctx.label(name, "evac", devs, start, end + 1, expected, {"test_s": test_s}),
        effects=[Effect(devs[0], start, end, shape)],
        events=events,
    )


def _self_test_pass(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _self_test(ctx, rng, start, passed=True)


def _self_test_fail(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _self_test(ctx, rng, start, passed=False)


def _mains_loss(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    seed_dev = ctx.pick_devices(rng, ["evac"])
    if not seed_dev:
        return None
    d0 = ctx.device(seed_dev[0])
    # A power cut takes out a whole building: all its emergency lights switch
    # to battery. A state, not an alarm (contract section 6).
    devs = [
        i
        for i, d in enumerate(ctx.estate.devices)
        if d.kind == "evac" and d.site == d0.site and d.building == d0.building
    ]
    outage_s = _u(rng, 300, 2400)
    end = start + _ms(outage_s)

    def shape(tau: float, v: dict[str, float]) -> None:
        if tau <= outage_s:
            v["mains"] = 0.0
            v["battery"] -= BATTERY_DRAIN_PER_S * tau
        else:
            v["battery"] -= BATTERY_DRAIN_PER_S * outage_s - BATTERY_CHARGE_PER_S * (tau - outage_s)

    recharge_s = BATTERY_DRAIN_PER_S * outage_s / BATTERY_CHARGE_PER_S
    effects = [Effect(i, start, end + _ms(recharge_s), shape) for i in devs]
    events = [ScheduledEvent(start, i, "emergency_start", "mains lost") for i in devs]
    events += [ScheduledEvent(end, i, "emergency_end", "mains restored") for i in devs]
    return Injection(
        ctx.label("mains_loss", "evac", devs, start, end, None, {"outage_s": outage_s}),
        effects=effects,
        events=events,
    )


# --- device faults and supervision ---------------------------------------------


def _detector_fault(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, DETECTORS)
    if not devs:
        return None
    repair_s = _u(rng, 600, 3600)
    end = start + _ms(repair_s)
    detail = ["chamber contaminated", "sensor open circuit", "head removed"][int(rng.integers(3))]
    events = [
        ScheduledEvent(start, devs[0], "fault", detail),
        ScheduledEvent(end, devs[0], "restore", None),
    ]
    return Injection(
        ctx.label("detector_fault", "fault", devs, start, end, "fault", {"detail": detail}),
        events=events,
    )


def _offline(ctx: Context, rng: np.random.Generator, start: int, will: bool) -> Injection | None:
    devs = ctx.pick_devices(rng, ("smoke", "heat", "multi", "electrical"))
    if not devs:
        return None
    interval_s = ctx.device(devs[0]).interval_s
    # Long enough that 3 x interval of silence (contract supervision) passes
    # comfortably, in event time.
    silent_s = interval_s * _u(rng, 6, 20)
    end = start + _ms(silent_s)
    mode = "status" if will else "drop"
    name = "offline_will" if will else "offline_silent"
    params = {"silent_s": silent_s, "last_will": will}
    return Injection(
        ctx.label(name, "offline", devs, start, end, "offline", params),
        stream=[StreamEffect(devs[0], start, end, mode)],
    )


def _offline_silent(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _offline(ctx, rng, start, will=False)


def _offline_will(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _offline(ctx, rng, start, will=True)


# --- transport ---------------------------------------------------------------


def _transport(
    ctx: Context, rng: np.random.Generator, start: int, name: str, mode: str, value: float
) -> Injection | None:
    devs = ctx.pick_devices(rng, ("smoke", "heat", "multi", "electrical"))
    if not devs:
        return None
    length_s = _u(rng, 600, 1800)
    end = start + _ms(length_s)
    params = {"mode": mode, "value": value}
    return Injection(
        ctx.label(name, "transport", devs, start, end, None, params),
        stream=[StreamEffect(devs[0], start, end, mode, value)],
    )


def _clock_skew(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    # An RTC that lost sync: off by 30 s to 2 h either way.
    skew = float(rng.choice([-1, 1])) * _u(rng, 30, 7200) * 1000
    return _transport(ctx, rng, start, "clock_skew", "skew", round(skew))


def _duplicates(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    # QoS 1 redelivery after a lost PUBACK: the same message twice.
    return _transport(ctx, rng, start, "duplicates", "duplicate", 0.0)


def _reorder(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    # A flaky link with retries: messages held back up to 2-4 intervals.
    return _transport(ctx, rng, start, "reorder", "delay", _u(rng, 20, 40) * 1000)


def _seq_wrap(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    # The uint32 counter about to wrap (a long-running device).
    return _transport(ctx, rng, start, "seq_wrap", "seq_jump", float(2**32 - 3))


# Each kind of bad input of contract section 3 (and the two registry checks
# of section 6), produced by a registered device's successive telemetry.
MALFORMED_MODES = (
    "invalid_json",
    "missing_ts",
    "non_finite",
    "non_numeric",
    "null_value",
    "bool_value",
    "too_large",
    "unknown_device",
    "site_mismatch",
    "bad_batch_reading",
)


def _malformed(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, ("smoke", "multi", "heat"))
    if not devs:
        return None
    d = ctx.device(devs[0])
    end = start + (len(MALFORMED_MODES) + 1) * d.interval_s * 1000
    params = {"modes": list(MALFORMED_MODES)}
    return Injection(
        ctx.label("malformed", "reject", devs, start, end, None, params),
        stream=[StreamEffect(devs[0], start, end, "corrupt", modes=MALFORMED_MODES)],
    )


LIBRARY: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "smouldering_fire",
            "fire",
            "fire",
            2400,
            N_("TF2/TF3-like: slow smoke, CO, little heat, spreads in the zone"),
            _smouldering,
        ),
        Scenario(
            "flaming_fire",
            "fire",
            "fire",
            900,
            N_("TF4/TF5-like: fast smoke, 8-30 °C/min heat past 57 °C, spreads in the zone"),
            _flaming,
        ),
        Scenario(
            "call_point",
            "fire",
            "fire",
            600,
            N_("a manual call point activated, later reset"),
            _call_point,
        ),
        Scenario(
            "cooking",
            "nuisance",
            None,
            900,
            N_("cooking aerosol near a kitchen that rises and decays"),
            _cooking,
        ),
        Scenario(
            "steam",
            "nuisance",
            None,
            1200,
            N_("shower steam: humidity > 90 %RH with some obscuration"),
            _steam,
        ),
        Scenario(
            "dust", "nuisance", None, 3600, N_("dust slowly contaminating one smoke chamber"), _dust
        ),
        Scenario("spike", "nuisance", None, 60, N_("insect or EMI: a single-sample spike"), _spike),
        Scenario(
            "heat_nuisance",
            "nuisance",
            None,
            3600,
            N_("sun or heater: slow warming far below 57 °C"),
            _heat_nuisance,
        ),
        Scenario(
            "leakage",
            "electrical",
            "electrical",
            2400,
            N_("residual current creeping past 300 mA"),
            _leakage,
        ),
        Scenario(
            "cable_overheat",
            "electrical",
            "electrical",
            2400,
            N_("overload: cable temperature past the 70 °C PVC rating"),
            _cable_overheat,
        ),
        Scenario(
            "motor_start",
            "nuisance",
            None,
            60,
            N_("motor inrush: one-sample current and leakage transient"),
            _motor_start,
        ),
        Scenario(
            "evac_lamp_failure",
            "evac",
            "evac_fault",
            3600,
            N_("exit sign lamp fails (fault event), repaired later"),
            _lamp,
        ),
        Scenario(
            "evac_battery_failure",
            "evac",
            "evac_fault",
            3600,
            N_("emergency battery fails (fault event), replaced later"),
            _battery,
        ),
        Scenario(
            "evac_self_test",
            "evac",
            None,
            120,
            N_("monthly function test that passes"),
            _self_test_pass,
        ),
        Scenario(
            "evac_self_test_fail",
            "evac",
            "evac_fault",
            120,
            N_("monthly function test that fails"),
            _self_test_fail,
        ),
        Scenario(
            "mains_loss",
            "evac",
            None,
            1800,
            N_("power cut: a building's exit signs run on battery"),
            _mains_loss,
        ),
        Scenario(
            "detector_fault",
            "fault",
            "fault",
            1800,
            N_("a detector reports a fault, later restored"),
            _detector_fault,
        ),
        Scenario(
            "offline_silent",
            "offline",
            "offline",
            200,
            N_("a device goes silent (no last will)"),
            _offline_silent,
        ),
        Scenario(
            "offline_will",
            "offline",
            "offline",
            200,
            N_("a device drops off: retained `offline` last will, then back online"),
            _offline_will,
        ),
        Scenario(
            "clock_skew",
            "transport",
            None,
            1200,
            N_("a device clock off by 30 s to 2 h"),
            _clock_skew,
        ),
        Scenario(
            "duplicates",
            "transport",
            None,
            1200,
            N_("every message sent twice (QoS 1 redelivery)"),
            _duplicates,
        ),
        Scenario(
            "reorder",
            "transport",
            None,
            1200,
            N_("messages delayed and delivered out of order"),
            _reorder,
        ),
        Scenario(
            "seq_wrap", "transport", None, 1200, N_("seq counter wrapping past 2^32"), _seq_wrap
        ),
        Scenario(
            "malformed",
            "reject",
            None,
            120,
            N_("one of each bad input of contract section 3"),
            _malformed,
        ),
        # Added after the original library: appended, so seeded runs keep their placement.
        Scenario(
            "insulation_fault",
            "electrical",
            "electrical",
            1800,
            N_("water in a junction box: an earth fault within seconds, held until repaired"),
            _insulation_fault,
        ),
    ]
}


# --- nuisance and fault families of issue 16 -------------------------------------
# Written from published behaviour, with ranges deliberately wider than the
# detection engine's own signatures (the quality bench scores them on seeds
# never used for tuning). Sources: UL 217 8th ed. cooking nuisance test
# (broiled hamburgers: the aerosol passes 1.5 %/ft, ~5 %/m, near the
# kitchen); NIST TN 1784 / Cleary 2014 nuisance source characterisation
# (toast, frying, showers: peaks of a few to >10 %/m, minutes of decay as
# the room air changes); EN 54-7 drift compensation (dust raises the
# clean-air value over weeks, a building site over hours); EMI bursts that
# hit every channel of a detector (and its neighbours) for one sample.


def _kitchen(ctx: Context, rng: np.random.Generator, start: int, kind: str) -> Injection | None:
    def fits(ds: list[Device]) -> bool:
        return any(d.kind == kind for d in ds)

    key = ctx.pick_zone_of_type(rng, "kitchen", fits)
    if key is None:
        return None
    devs = [i for i in ctx.by_zone[key] if ctx.device(i).kind == kind][:2]
    peak = _u(rng, 2.0, 14.0)  # %/m at the ceiling
    rise_s, hold_s, decay_s = _u(rng, 20, 150), _u(rng, 0, 180), _u(rng, 40, 300)
    heat = bool(rng.random() < 0.5)  # a hob or an oven right below, or not
    warm = _u(rng, 0.5, 6.0) if heat else 0.0
    steam_rh = _u(rng, 5, 25) if rng.random() < 0.6 else 0.0  # boiling water
    co = _u(rng, 0.0, 6.0) if rng.random() < 0.5 else 0.0  # a gas hob

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        v["obscuration"] += peak * b
        v["temperature"] += warm * b
        if "humidity" in v:
            v["humidity"] = min(100.0, v["humidity"] + steam_rh * b)
        if "co" in v:
            v["co"] += co * b

    end = start + _ms(rise_s + hold_s + 5 * decay_s)
    params = {
        "peak_obscuration": peak,
        "rise_s": rise_s,
        "decay_s": decay_s,
        "heat": warm,
        "humidity_rise": steam_rh,
        "co_ppm": co,
    }
    name = f"kitchen_{kind}"
    return Injection(
        ctx.label(name, "nuisance", devs, start, end, None, params),
        effects=[Effect(i, start, end, shape) for i in devs],
    )


def _kitchen_smoke(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _kitchen(ctx, rng, start, "smoke")


def _kitchen_multi(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    return _kitchen(ctx, rng, start, "multi")


def _bathroom_steam(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    key = ctx.pick_zone_of_type(rng, "bathroom", lambda ds: any(d.kind == "multi" for d in ds))
    if key is None:
        return None
    devs = [i for i in ctx.by_zone[key] if ctx.device(i).kind == "multi"][:2]
    # A shower or a bath: humidity climbs to 85-100 %RH within minutes, the
    # droplets scatter light like a light smoke, the room warms a few degrees.
    target_rh = _u(rng, 85, 100)
    peak_obs = _u(rng, 0.5, 10.0)
    rise_s, hold_s, decay_s = _u(rng, 30, 300), _u(rng, 120, 1200), _u(rng, 120, 600)
    warm = _u(rng, 1.0, 8.0)
    lag_s = _u(rng, 0, 90)  # droplets reach the chamber after the humidity

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        v["humidity"] += (target_rh - v["humidity"]) * b
        v["obscuration"] += peak_obs * _bump(rise_s, hold_s, decay_s, max(0.0, tau - lag_s))
        v["temperature"] += warm * b

    end = start + _ms(lag_s + rise_s + hold_s + 5 * decay_s)
    params = {"humidity_peak": target_rh, "peak_obscuration": peak_obs, "warm": warm}
    return Injection(
        ctx.label("bathroom_steam", "nuisance", devs, start, end, None, params),
        effects=[Effect(i, start, end, shape) for i in devs],
    )


def _dust_accumulation(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, SMOKE_SENSING)
    if not devs:
        return None
    # Building work next door: dust settles in one chamber over tens of
    # minutes to hours; no heat, no CO; noisier readings as particles move.
    ramp_s, rise = _u(rng, 600, 7200), _u(rng, 0.3, 4.0)
    hold_s = _u(rng, 600, 3600)
    jitter = _u(rng, 0.0, 0.15)

    def shape(tau: float, v: dict[str, float]) -> None:
        v["obscuration"] += rise * min(tau / ramp_s, 1.0) + jitter * math.sin(tau * 0.7)

    end = start + _ms(ramp_s + hold_s)
    params = {"drift_obscuration": rise, "ramp_s": ramp_s, "rate_per_min": 60 * rise / ramp_s}
    return Injection(
        ctx.label("dust_accumulation", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _insect(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, SMOKE_SENSING)
    if not devs:
        return None
    d = ctx.device(devs[0])
    # An insect walking through the optical chamber: 1-3 samples high, and
    # maybe back again a few minutes later.
    visits = int(rng.integers(1, 5))
    period = d.interval_s * 1000
    spans: list[tuple[int, int, float]] = []
    t = start
    for _ in range(visits):
        n = int(rng.integers(1, 4))
        spans.append((t, t + n * round(period) - 1, _u(rng, 2.0, 30.0)))
        t += _ms(_u(rng, 60, 600))

    def shape_for(height: float) -> Shape:
        def shape(tau: float, v: dict[str, float]) -> None:
            v["obscuration"] += height

        return shape

    effects = [Effect(devs[0], a, b, shape_for(h)) for a, b, h in spans]
    end = spans[-1][1]
    params = {"visits": visits, "max_height": max(h for _, _, h in spans)}
    return Injection(
        ctx.label("insect", "nuisance", devs, start, end, None, params), effects=effects
    )


def _emi_burst(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    key = ctx.pick_zone(rng, lambda ds: any(d.kind in DETECTORS for d in ds))
    if key is None:
        return None
    dets = _detectors(ctx, key)
    n = min(len(dets), int(rng.integers(1, 3)))
    devs = [dets[int(i)] for i in rng.choice(len(dets), n, replace=False)]
    # A welder, a radio or a switching load: every channel of the detector
    # jumps for one sample (possibly on a neighbour at the same moment).
    jump = {"obscuration": _u(rng, 5, 40), "temperature": _u(rng, 20, 80), "co": _u(rng, 50, 300)}
    length = round(min(ctx.device(i).interval_s for i in devs) * 1000) - 1

    def shape(tau: float, v: dict[str, float]) -> None:
        for name, x in jump.items():
            if name in v:
                v[name] += x

    params = {f"{k}_jump": x for k, x in jump.items()} | {"devices": n}
    return Injection(
        ctx.label("emi_burst", "nuisance", devs, start, start + length, None, params),
        effects=[Effect(i, start, start + length, shape) for i in devs],
    )


def _aerosol_spray(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    devs = ctx.pick_devices(rng, SMOKE_SENSING)
    if not devs:
        return None
    # Hairspray, deodorant, a cleaning spray or vapour blown at the head (a
    # nuisance source NFPA 72 A.17.7 and BS 5839-1 name): the optical chamber
    # fills within seconds, far above the alarm level and growing as fast as
    # any flaming fire, and empties again within tens of seconds; no heat, no
    # CO, some humidity from the propellant.
    peak = _u(rng, 4.0, 30.0)
    rise_s, hold_s, decay_s = _u(rng, 3, 25), _u(rng, 0, 10), _u(rng, 4, 12)

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        v["obscuration"] += peak * b
        if "humidity" in v:
            v["humidity"] = min(100.0, v["humidity"] + 4 * b)

    end = start + _ms(rise_s + hold_s + 6 * decay_s)
    params = {"peak_obscuration": peak, "rise_s": rise_s, "decay_s": decay_s}
    return Injection(
        ctx.label("aerosol_spray", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _cooking_burst(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    def fits(ds: list[Device]) -> bool:
        return any(d.kind in SMOKE_SENSING for d in ds)

    key = ctx.pick_zone_of_type(rng, "kitchen", fits)
    if key is None:
        return None
    devs = [i for i in ctx.by_zone[key] if ctx.device(i).kind in SMOKE_SENSING][:1]
    # Searing in a hot wok, a lid lifted off a pan, toast that burns: a puff of
    # cooking fumes reaches the head within tens of seconds, as fast as a
    # flaming fire's smoke, stops growing once the puff is out, and the hood
    # or an opened window takes it away within a minute or two; a little
    # warmth from the hob, no CO from an electric one.
    peak = _u(rng, 3.5, 12.0)
    rise_s, hold_s, decay_s = _u(rng, 8, 40), _u(rng, 0, 25), _u(rng, 15, 60)
    warm = _u(rng, 0.0, 1.5)

    def shape(tau: float, v: dict[str, float]) -> None:
        b = _bump(rise_s, hold_s, decay_s, tau)
        v["obscuration"] += peak * b
        v["temperature"] += warm * b

    end = start + _ms(rise_s + hold_s + 6 * decay_s)
    params = {"peak_obscuration": peak, "rise_s": rise_s, "hold_s": hold_s, "decay_s": decay_s}
    return Injection(
        ctx.label("cooking_burst", "nuisance", devs, start, end, None, params),
        effects=[Effect(devs[0], start, end, shape)],
    )


def _gusts(
    rng: np.random.Generator, seconds: float, corr_s: float, sigma: float
) -> Callable[[float], float]:
    """A draught's intermittency at a detector: exp of an Ornstein-Uhlenbeck
    process (mean 1, correlation time corr_s), sampled once a second."""
    n = int(seconds) + 2
    step = math.exp(-1.0 / corr_s)
    kicks = rng.standard_normal(n) * math.sqrt(1.0 - step * step)
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for k in range(1, n):
        x[k] = step * x[k - 1] + kicks[k]
    factor = np.exp(sigma * x - sigma * sigma / 2)

    def at(tau: float) -> float:
        return float(factor[min(max(int(tau), 0), n - 1)])

    return at


def _smouldering_draught(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    key = ctx.pick_zone(rng, lambda ds: any(d.kind in SMOKE_SENSING for d in ds))
    if key is None:
        return None
    dets = [i for i in _detectors(ctx, key) if ctx.device(i).kind in SMOKE_SENSING]
    # A smouldering fire (TF2/TF3-like: slow smoke, CO, hardly any heat) in a
    # room with ventilation or a draught: its weak, cool plume has little
    # buoyancy, so room air currents carry it to a detector in puffs instead of
    # a steady ceiling jet (the fifth outside check's turbulent smouldering
    # fires). The mean grows as a smouldering fire's does; around it the signal
    # crosses the alarm level and falls back for minutes before staying.
    growth_s = _u(rng, 600, 1800)
    peak_obs = _u(rng, 6, 20)
    co_peak = _u(rng, 40, 200)
    corr_s = _u(rng, 10, 40)
    sigma = _u(rng, 0.35, 0.7)
    burn_s = growth_s + _u(rng, 300, 900)
    decay_s = 300.0
    total_s = burn_s + decay_s

    def shape_for(attenuation: float) -> Shape:
        gust = _gusts(rng, total_s + 1, corr_s, sigma)

        def shape(tau: float, v: dict[str, float]) -> None:
            fade = 1.0 if tau <= burn_s else math.exp(-(tau - burn_s) / (decay_s / 3))
            g = min(tau / growth_s, 1.0)
            mean = attenuation * peak_obs * g * g * fade
            v["obscuration"] += mean * gust(tau)
            if "co" in v:
                v["co"] += attenuation * co_peak * g**1.5 * fade * (0.5 + 0.5 * gust(tau))
            if "temperature" in v:
                v["temperature"] += attenuation * 2.0 * g * fade

        return shape

    origin = dets[int(rng.integers(len(dets)))]
    effects = [Effect(origin, start, start + _ms(total_s), shape_for(1.0))]
    end = start + _ms(total_s)
    for i in dets:
        if i == origin:
            continue
        onset = start + _ms(_u(rng, 120, 600))
        att = _u(rng, 0.3, 0.8)
        effects.append(Effect(i, onset, onset + _ms(total_s), shape_for(att)))
        end = max(end, onset + _ms(total_s))
    params = {
        "model": "TF2/TF3 in a draught",
        "origin": ctx.device(origin).id,
        "growth_s": growth_s,
        "peak_obscuration": peak_obs,
        "gust_corr_s": corr_s,
        "gust_sigma": sigma,
    }
    devices = [origin, *[i for i in dets if i != origin]]
    label = ctx.label("smouldering_draught", "fire", devices, start, end, "fire", params)
    return Injection(label, effects=effects)


def _evac_weak_battery(ctx: Context, rng: np.random.Generator, start: int) -> Injection | None:
    seed_dev = ctx.pick_devices(rng, ["evac"])
    if not seed_dev:
        return None
    d0 = ctx.device(seed_dev[0])
    building = [
        i
        for i, d in enumerate(ctx.estate.devices)
        if d.kind == "evac" and d.site == d0.site and d.building == d0.building
    ]
    # A power cut; one unit's battery has aged and holds 15-75 min instead of
    # its rated duration (GB 51309: >= 30/60/90 min by building; the platform
    # checks 90 unless registered otherwise). The others are healthy 3 h units.
    outage_s = _u(rng, 1200, 3600)
    autonomy_s = _u(rng, 900, 4500)
    weak_drain = 100.0 / autonomy_s

    def shape_for(drain: float) -> Shape:
        def shape(tau: float, v: dict[str, float]) -> None:
            if tau <= outage_s:
                v["mains"] = 0.0
                v["battery"] = max(0.0, v["battery"] - drain * tau)
            else:
                low = max(0.0, v["battery"] - drain * outage_s)
                v["battery"] = min(100.0, low + BATTERY_CHARGE_PER_S * (tau - outage_s))

        return shape

    recharge_s = 100.0 / BATTERY_CHARGE_PER_S
    effects = [
        Effect(
            i,
            start,
            start + _ms(outage_s + recharge_s),
            shape_for(weak_drain if i == seed_dev[0] else BATTERY_DRAIN_PER_S),
        )
        for i in building
    ]
    end = start + _ms(outage_s)
    events = [ScheduledEvent(start, i, "emergency_start", "mains lost") for i in building]
    events += [ScheduledEvent(end, i, "emergency_end", "mains restored") for i in building]
    params = {"outage_s": outage_s, "autonomy_min": autonomy_s / 60}
    return Injection(
        ctx.label("evac_weak_battery", "evac", seed_dev, start, end, "evac_fault", params),
        effects=effects,
        events=events,
    )


LIBRARY.update(
    {
        s.name: s
        for s in [
            Scenario(
                "kitchen_smoke",
                "nuisance",
                None,
                1200,
                N_("cooking aerosol (with or without heat) on smoke-only detectors"),
                _kitchen_smoke,
            ),
            Scenario(
                "kitchen_multi",
                "nuisance",
                None,
                1200,
                N_("cooking aerosol, steam, some heat and CO on multi-criteria detectors"),
                _kitchen_multi,
            ),
            Scenario(
                "bathroom_steam",
                "nuisance",
                None,
                1800,
                N_("shower: humidity to 85-100 %RH, droplets, warm air"),
                _bathroom_steam,
            ),
            Scenario(
                "dust_accumulation",
                "nuisance",
                None,
                5400,
                N_("dust settling in a chamber over 10 min to 2 h, no heat or CO"),
                _dust_accumulation,
            ),
            Scenario(
                "insect",
                "nuisance",
                None,
                1800,
                N_("an insect in the chamber: 1-3 samples, a few visits"),
                _insect,
            ),
            Scenario(
                "emi_burst",
                "nuisance",
                None,
                60,
                N_("every channel jumps for one sample, on one or two detectors"),
                _emi_burst,
            ),
            Scenario(
                "aerosol_spray",
                "nuisance",
                None,
                120,
                N_(
                    "a spray at the detector: far above the alarm level within seconds, "
                    "gone in tens"
                ),
                _aerosol_spray,
            ),
            Scenario(
                "cooking_burst",
                "nuisance",
                None,
                420,
                N_(
                    "a puff of cooking fumes: grows as fast as a flaming fire, stops, "
                    "gone in minutes"
                ),
                _cooking_burst,
            ),
            Scenario(
                "evac_weak_battery",
                "evac",
                "evac_fault",
                3600,
                N_("power cut with one aged battery holding less than its rated duration"),
                _evac_weak_battery,
            ),
            Scenario(
                "smouldering_draught",
                "fire",
                "fire",
                2700,
                N_("a smouldering fire whose plume reaches the detectors in puffs (a draught)"),
                _smouldering_draught,
            ),
        ]
    }
)
