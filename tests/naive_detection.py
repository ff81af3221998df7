"""The slow, obvious reference of detection/: one loop step per reading, dicts.

Independent of `detection/`: it shares no verdict code with it. The condition
of each reading is re-derived here reading by reading, without numpy, and the
alarm lifecycle is its own plain-Python state machine (`RuleBook`) written
from the written rules (README "Detection", contract section 6), with its own
literal constants, each with a comment naming where it is written. It imports
only the data containers (`detection.records`) and the contract's vocabulary
(`firesafe.contract`). What the engine-vs-reference tests check is that the
vectorised kernels, the rows the engine skips, its zone ordering and its
state machine give the answers these rules give.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from detection.records import AlarmChange, Events, Readings
from firesafe import contract

NONE = -(2**62)
RI = contract.READING_INDEX
SMOKE, HEAT, MULTI, MCP, ELECTRICAL, EVAC = range(6)
RATE_NAMES = ("temperature", "obscuration", "co", "humidity")
# Flag bits, spelled out again (must equal detection.kernel.Flag).
PRE, PRE_CLEAR, ALARM, EDGE, BELOW, HEATB, COB, FAST, STEAM, DRIFT = (1 << i for i in range(10))
RC, CABLE, ELEC_BELOW, LAMP_FAIL, LAMP_OK, BATT_LOW, BATT_OK, HEAT_RAW, FAST_RAW = (
    1 << i for i in range(10, 19)
)
COX, DENSE, BATT_DEPL, BATT_CHARGED, CO_RAW = 1 << 19, 1 << 20, 1 << 21, 1 << 22, 1 << 23
FALL_RAW, FALL, THICK, DROP, WARM = 1 << 24, 1 << 25, 1 << 26, 1 << 27, 1 << 28
GROWING = 1 << 29
JUMP = 1 << 30

# --- The written rules, as literal numbers -----------------------------------
# README "Detection", table "Rules per kind" (defaults; registry overrides,
# clamped to the written ranges).
DEFAULTS: dict[str, dict[str, float]] = {
    "smoke": {
        "obscuration_alarm": 3.0,
        "obscuration_pre_alarm": 1.5,
        "drift_limit": 1.5,
        "fast_growth_per_min": 4.0,
        "heat_rise_c_per_min": 5.0,
        "verification_s": 30.0,
    },
    "heat": {
        "static_c": 58.0,
        "rate_of_rise_c_per_min": 8.3,
        "heat_rise_c_per_min": 5.0,
        "verification_s": 30.0,
    },
    "multi": {  # "smoke's and heat's, plus ..."
        "obscuration_alarm": 3.0,
        "obscuration_pre_alarm": 1.5,
        "drift_limit": 1.5,
        "fast_growth_per_min": 4.0,
        "static_c": 58.0,
        "rate_of_rise_c_per_min": 8.3,
        "heat_rise_c_per_min": 5.0,
        "co_ppm": 30.0,
        "co_rise_ppm_per_min": 10.0,
        "steam_rh": 95.0,
        "steam_rh_rise_per_min": 10.0,
        "verification_s": 30.0,
    },
    "mcp": {},
    "electrical": {
        "residual_current_ma": 300.0,
        "cable_temperature_c": 70.0,
        "persist_s": 20.0,
        "verification_s": 30.0,  # README: "alarm within 30 s of a sustained condition"
    },
    "evac": {"battery_low_pct": 30.0, "rated_duration_min": 90.0},
}
CLAMPS: dict[str, tuple[float, float]] = {
    "verification_s": (5.0, 60.0),  # README table: `verification_s` 30 (5-60)
    "residual_current_ma": (20.0, 1000.0),  # README table: 300 (20-1000)
    "rated_duration_min": (30.0, 180.0),  # README table: 90 (30-180)
    # README: "alarm within 30 s of a sustained condition": persistence <= 30 s.
    "persist_s": (0.0, 30.0),
    # README table: the ranges a threshold may be set in.
    "obscuration_alarm": (0.5, 20.0),
    "obscuration_pre_alarm": (0.1, 20.0),
    "fast_growth_per_min": (0.5, 60.0),
    "static_c": (40.0, 160.0),
    "rate_of_rise_c_per_min": (3.0, 30.0),
    "heat_rise_c_per_min": (1.0, 30.0),
    "co_ppm": (5.0, 500.0),
    "co_rise_ppm_per_min": (0.5, 100.0),
    "steam_rh_rise_per_min": (1.0, 50.0),
    "steam_rh": (50.0, 100.0),
    "cable_temperature_c": (45.0, 140.0),
    "battery_low_pct": (5.0, 80.0),
}
MIN_MS = 60_000.0  # rates are per minute
# README "The alarm rules are tested on their own": 60 s coincidence.
COINCIDENCE_MS = 60_000
# Same line: 5 min steam memory (steam seen up to 5 min before a window opened).
STEAM_MEMORY_MS = 300_000
# Same line: pre-alarm clears below 1.2 %/m, i.e. 0.8 of the 1.5 level.
PRE_CLEAR_FRACTION = 0.8
# Same line: rates over >= 20 s.
RATE_SPAN_MS = 20_000
# Same line: drift <= 0.1 %/m per hour (one epoch = one hour of event time).
DRIFT_EPOCH_MS = 3_600_000
DRIFT_UP = 0.1
# Not in the README (detection/params.py's documentation, reported): the
# baseline follows an hour's minimum only within 0.5 %/m of it (clean air),
# and falls by at most 1.0 %/m per hour after cleaning.
DRIFT_BAND = 0.5
DRIFT_DOWN = 1.0
# Same README line: 24 h recharge grace (README table, evac: EN 60598-2-22).
RECHARGE_GRACE_MS = 24 * 3_600_000
# A reading dated further ahead of the device's clock and the arrival clock is
# quarantined; an event, taken at the arrival clock.
FUTURE_MS = 30_000
# README table, evac: "cleared once mains is back and the charge is over low + 5 %".
BATTERY_MARGIN = 5.0
# README table, evac: discharge rate "measured over >= 5 min".
DISCHARGE_SPAN_MS = 300_000
# README "Verdicts", `reverified`: a smoke detector alarming again within 60 s
# of a window suppressed as `transient` or `aerosol_decay` is confirmed at once.
REVERIFY_MS = 60_000
# README "Verdicts", `smoke_puffs`: a smoke detector whose pre-alarm opened at
# least twice in the 5 minutes before an alarm opened, leaving out the 30 s
# just before it, is confirmed where it would be `transient` or `aerosol_decay`.
PUFFS_LOOKBACK_MS = 300_000
PUFFS_LEAD_MS = 30_000
PUFFS_MIN = 2
# README "Verdicts": an electrical condition is gone once its readings stayed
# under both limits for 10 s; back over one of them before that, it persists.
ELEC_CLEAR_MS = 10_000
# README "Verdicts": a condition back within 3 reporting intervals of a
# `transient` is the same intermittent fault, confirmed at once.
ELEC_AGAIN = 3
# README "Verdicts": a pre-alarm that cleared straight into clean air (under
# 0.5 %/m, the drift compensation's clean band) since the first puff, or since
# the suppressed window opened, makes the alarms separate visits.
CLEAN_AIR = 0.5
# README "Verdicts": `transient` is "at most two samples at alarm level".
SPIKE_SAMPLES = 2
# README "Verdicts": a neighbour corroborates "once its own activity lasted two
# readings", and CO "on two consecutive readings".
PARTNER_READINGS = 2
# Not in the README (detection/params.py's documentation, reported): the
# look-back of a rate (8 samples within 60 s), a temperature step faster than
# 60 °C/min being EMI rather than heat rise, CO above clean air at 10 ppm, the
# aerosol-only alarm level of a multi-criteria detector at 20 %/m (its
# independent evidence, README "aerosol_signature") and its thick level at
# 10 %/m (one more window, never past 60 s in all, to bring heat or CO).
LOOKBACK_SAMPLES = 8
LOOKBACK_MS = 60_000
HEAT_STEP_MAX = 60.0
CO_CLEAN_AIR = 10.0
AEROSOL_ONLY = 20.0
AEROSOL_THICK = 10.0
# README "Verdicts", `combined`: a multi-criteria detector's ceiling warming by
# >= 3 °C a minute at the end of a window its aerosol persisted through.
WARMING = 3.0
WINDOW_MAX_MS = 60_000


def thresholds_of(kind: str, overrides: Mapping[str, float]) -> dict[str, float]:
    out = dict(DEFAULTS[kind])
    for name, value in overrides.items():
        if name in out and math.isfinite(value):
            lo, hi = CLAMPS.get(name, (-math.inf, math.inf))
            out[name] = min(max(float(value), lo), hi)
    if "drift_limit" in out:  # EN 54-7 4.8 b): a threshold at most 1.6x its own
        out["drift_limit"] = min(out["drift_limit"], 0.6 * out["obscuration_alarm"])
    return out


def evidence(
    vals: Sequence[float], comp: float, base: float, rate_t: float
) -> dict[str, float | str]:
    """What an alarm carries as evidence: the reading's finite values by name,
    the compensated obscuration and its baseline, the temperature rate."""
    out: dict[str, float | str] = {
        name: float(v) for name, v in zip(contract.READINGS, vals, strict=True) if math.isfinite(v)
    }
    if math.isfinite(comp):
        out["obscuration"] = float(comp)
        out["baseline"] = float(base)
    if math.isfinite(rate_t):
        out["temperature_rate"] = float(rate_t)
    return out


@dataclass
class Dev:
    kind: int
    zone: int
    thr: dict[str, float]
    last_ts: int = NONE
    last_event_ts: int = NONE
    last_flags: int = 0
    b: float = 0.0
    ep: int = NONE
    anchor: int = NONE
    m: float = math.nan
    drift: bool = False
    last_off: int = NONE  # evac: latest reading on battery
    on_batt: bool = False
    dis_t0: int = NONE
    dis_b0: float = math.nan
    hist: list[tuple[int, list[float]]] = field(default_factory=list)
    flag_hist: list[tuple[int, int]] = field(default_factory=list)  # (ts, flags) of hist
    interval_ms: int = 10_000
    last_arrival: int = NONE
    q_off: int = 0
    q_run: int = 0
    q_skew: int = 0
    quarantined: int = 0


class NaiveConfig:
    def __init__(self, devs: dict[int, Dev]) -> None:
        self.devs = devs

    def kind(self, slot: int) -> int:
        return self.devs[slot].kind

    def zone(self, slot: int) -> int:
        return self.devs[slot].zone

    def thr(self, slot: int, name: str) -> float:
        return self.devs[slot].thr.get(name, math.nan)

    def interval_ms(self, slot: int) -> int:
        return self.devs[slot].interval_ms


def ge(a: float, b: float) -> bool:
    return a >= b  # False with NaN on either side


def fmin(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


# --- The alarm lifecycle, from the written rules ---------------------------------
FIRE_KINDS = (SMOKE, HEAT, MULTI)
# README "Verdicts", `aerosol_signature`: a multi-criteria detector's aerosol
# counts as smoke only with independent evidence: heat, CO (above clean air or
# rising), or an aerosol dense enough to alarm on its own, or fast growth.
INDEPENDENT = HEATB | COB | COX | DENSE | FAST
# Corroboration a detector brings itself (README "Verdicts": `rate_of_rise`
# heat rise, `co_rise`), in the order the reasons are named. Fast growth is
# not one: it only names a verdict reached by persistence.
OWN_CORROBORATION = ((HEATB, "rate_of_rise"), (COB, "co_rise"))
# After a suppression the lingering signal does not open again: a new rising
# edge, own corroboration, or (multi) independent evidence that was not
# already there when it was suppressed.
LINGER = COX | DENSE | THICK | WARM
FAR = 2**62  # a window that never ends


@dataclass
class FireWindow:
    opened: int
    ends: int
    why: str  # the condition that opened it: the reason if it is confirmed by time
    at_level: int = 0  # readings at alarm level in it (a device's own event is not one)
    readings: int = 0
    latest_at_level: bool = False
    independent: bool = False
    grew_fast: bool = False  # a reading in it showed fast growth
    falling: bool = False  # the latest reading was falling fast (two running)
    thick: bool = False  # multi: a reading in it was at the thick aerosol level
    growing: bool = False  # multi: the latest reading showed fast growth
    co_seen: bool = False  # multi: a reading in it had CO above clean air
    longer: bool = False  # it got its second part already (thick aerosol or hovering)
    latest_below: bool = False  # the latest reading was back under the pre-alarm level
    before_below: bool = False  # the reading before the latest was
    latest_dropping: bool = False  # ... or falling by >= 4 %/m a minute at pre-alarm level
    hovering: bool = False  # its second part came because it hovered under the level
    warming: bool = False  # multi: the latest reading's ceiling warmed by >= 3 °C a minute
    still_hot: bool = False  # heat: the reading a lone sample waited for within 5 °C of the level
    out_of_clean_air: bool = False  # its first reading came after one under the pre-alarm level


@dataclass
class DevState:
    fire: str = ""  # "" | "pending" | "confirmed"
    window: FireWindow | None = None
    needs_edge: bool = False  # suppressed: the same lingering signal does not reopen
    lingering: int = 0  # LINGER bits present when suppressed, not yet gone
    suppressed_at: int | None = None  # its latest fire's window suppressed it then
    reopen_at: int = FAR  # judged falling at alarm level: still there then, it opens again
    reverify_until: int = NONE  # smoke: a new alarm up to then is confirmed at once
    pre_opened: list[int] = field(default_factory=list)  # when its pre-alarm opened
    cleared_clean_at: int = NONE  # when its pre-alarm last cleared straight into clean air
    reverify_since: int = FAR  # the suppressed window that reverification refers to
    windows_judged: list[tuple[int, int]] = field(default_factory=list)  # suppressed: spans
    last_reading_at: int = NONE
    flags: int = 0  # the latest reading's condition
    streak: int = 0  # consecutive readings at pre-alarm or alarm level
    active_at: int | None = None  # zone activity: latest time
    active_signed: bool = False  # ... and whether it was a nuisance signature
    active_weak: bool = False  # ... or only at pre-alarm level
    active_detail: dict[str, float | str] | None = None  # its latest active reading
    steam_at: int | None = None
    pre: bool = False
    call_point: bool = False  # a confirmed call point: corroborates its zone
    elec: str = ""
    elec_since: int = 0
    elec_why: str = ""
    elec_gone_at: int = FAR  # under both limits since a reading: gone then unless high first
    elec_gone_detail: dict[str, float | str] = field(default_factory=dict)  # that reading's
    elec_alone: bool = False  # only the reading that opened it so far
    elec_again_until: int = NONE  # judged transient: a condition back by then is the same
    elec_open_amps: float = math.nan  # load current of the reading that opened it
    faults: set[str] = field(default_factory=set)
    fault_at: int = -FAR  # README "Clearing": a restore older than the fault is not its


class RuleBook:
    """Per-device alarm lifecycle (README "Detection", contract section 6),
    fed one reading (as condition bits) or event at a time."""

    def __init__(self, cfg: NaiveConfig) -> None:
        self.cfg = cfg
        self.st: dict[int, DevState] = {}
        self.out: list[AlarmChange] = []

    def _s(self, slot: int) -> DevState:
        return self.st.setdefault(slot, DevState())

    def _say(
        self,
        slot: int,
        typ: str,
        action: str,
        verdict: str,
        reason: str,
        at: int,
        detail: Mapping[str, float | str],
        related: tuple[int, ...] = (),
    ) -> None:
        self.out.append(AlarmChange(slot, typ, action, verdict, reason, at, dict(detail), related))

    def _window_ms(self, slot: int) -> int:
        return int(self.cfg.thr(slot, "verification_s") * 1000)

    # faults: one alarm per device, open while any cause is present ----------
    def _fault(
        self,
        slot: int,
        at: int,
        detail: Mapping[str, float | str],
        add: str = "",
        gone: Sequence[str] = (),
        reason: str = "condition_gone",
    ) -> None:
        s = self._s(slot)
        typ = "evac_fault" if self.cfg.kind(slot) == EVAC else "fault"
        was = bool(s.faults)
        if add:
            s.faults.add(add)
        s.faults.difference_update(gone)
        if not was and s.faults:
            s.fault_at = at
            self._say(slot, typ, "open", "confirmed", add, at, detail)
        if was and not s.faults:
            self._say(slot, typ, "clear", "confirmed", reason, at, detail)

    # fire ------------------------------------------------------------------
    def _zone(self, slot: int) -> list[int]:
        z = self.cfg.zone(slot)
        return sorted(x for x in self.st if self.cfg.zone(x) == z)

    def _corroboration(self, slot: int, ts: int) -> tuple[str, tuple[int, ...]]:
        """README "Verdicts": a call point of the zone, or a second detector of
        the zone at the alarm level (not pre-alarm) within 60 s whose own signal
        is not a nuisance signature."""
        zone = self._zone(slot)
        cps = tuple(x for x in zone if self.st[x].call_point)
        if cps:
            return "call_point", cps
        partners = []
        for x in zone:
            o = self.st[x]
            if x == slot or o.active_at is None or o.active_signed or o.active_weak:
                continue
            if 0 <= ts - o.active_at <= COINCIDENCE_MS:  # (a neighbour's row shown late:
                # its later activity had not happened at `ts` in order)
                partners.append(x)
        return ("coincidence", tuple(partners)) if partners else ("", ())

    def _confirm(
        self,
        slot: int,
        at: int,
        reason: str,
        detail: Mapping[str, float | str],
        related: tuple[int, ...] = (),
    ) -> None:
        s = self._s(slot)
        s.fire, s.window = "confirmed", None
        self._say(slot, "fire", "verdict", "confirmed", reason, at, detail, related)

    def _check_zone(self, slot: int, ts: int, detail: Mapping[str, float | str]) -> None:
        """Zone activity at `ts`: each pending fire of the zone whose window is
        still open is confirmed if the zone corroborates it."""
        for x in self._zone(slot):
            if ts - self.st[x].last_reading_at <= 300_000:  # (a clock the zone waits for)
                self.due(x, ts - 1)  # a window over before this moment ends first (maybe longer)
            w = self.st[x].window
            if self.st[x].fire != "pending" or w is None or ts >= w.ends or ts < w.opened:
                continue  # (a window opened after this moment: in order it came later)
            reason, related = self._corroboration(x, ts)
            if reason == "coincidence":
                # each device's alarm shows its own latest active reading
                self._confirm(x, ts, reason, self.st[x].active_detail or detail, related)
            elif reason:
                self._confirm(x, ts, reason, detail, related)
            if reason != "coincidence":
                continue
            # Contract section 6: "a fire confirmed by coincidence confirms the
            # alarms of every device that took part": a partner still pending,
            # or one suppressed by its window within 60 s of this moment.
            took_part = {x, *related}
            for y in related:
                o = self.st[y]
                others = tuple(sorted(took_part - {y}))
                if o.fire == "pending" and o.window is not None and o.window.ends <= ts:
                    self._end_of_window(y)  # its own verdict first: its window is over
                own = o.active_detail or detail
                if o.fire == "pending":
                    self._confirm(y, ts, "coincidence", own, others)
                elif (
                    o.fire == ""
                    and o.suppressed_at is not None
                    and abs(ts - o.suppressed_at) <= COINCIDENCE_MS
                ):
                    o.fire, o.window, o.suppressed_at = "confirmed", None, None
                    self._say(y, "fire", "open", "confirmed", "coincidence", ts, own, others)

    def _open(self, slot: int, ts: int, why: str, detail: Mapping[str, float | str]) -> None:
        s = self._s(slot)
        s.fire, s.needs_edge, s.suppressed_at, s.reopen_at = "pending", False, None, FAR
        s.reverify_until = NONE
        s.window = FireWindow(ts, ts + self._window_ms(slot), why)
        self._say(slot, "fire", "open", "pending", why, ts, detail)

    def _end_of_window(self, slot: int) -> None:
        """README "Verdicts", at the end of the verification window."""
        s = self._s(slot)
        w = s.window
        assert w is not None
        detail: dict[str, float | str] = {
            "samples_above": float(w.at_level),
            "window_s": (w.ends - w.opened) / 1000.0,
        }
        window = self._window_ms(slot)
        more = min(window, WINDOW_MAX_MS - window)
        if s.steam_at is not None and s.steam_at >= w.opened - STEAM_MEMORY_MS:
            why = "steam_signature"
        elif (
            w.readings > 0
            and (
                not (w.latest_at_level or w.latest_below or w.latest_dropping)
                or (w.latest_at_level and w.latest_dropping and not w.falling)
                # under the level at pre-alarm after CO above clean air in the
                # window: a smouldering fire's turbulence
                or (
                    self.cfg.kind(slot) == MULTI
                    and w.co_seen
                    and not (w.latest_at_level or w.latest_below)
                )
            )
            and not w.longer
            and more > 0
        ):
            # README "Verdicts": hovering at pre-alarm level, or at the level
            # after one fast fall: one more window
            w.ends, w.longer, w.hovering = w.ends + more, True, True
            return
        elif w.readings > 0 and not w.latest_at_level and w.still_hot:
            # README "Verdicts": the ceiling stayed within 5 °C of the static level
            self._confirm(slot, w.ends, self._persisted(w), detail)
            return
        elif w.readings > 0 and not w.latest_at_level:
            why = "transient" if w.at_level <= SPIKE_SAMPLES else "aerosol_decay"
        elif w.at_level <= SPIKE_SAMPLES and w.readings >= 2 and w.before_below:
            why = "transient"  # a lone sample at the end after a clean one: a second spike
        elif w.falling:
            why = "aerosol_decay"  # still at the level, emptying fast: on its way out
        elif self.cfg.kind(slot) == MULTI and w.readings > 0 and not w.independent and w.warming:
            self._confirm(slot, w.ends, "combined", detail)  # persisted, and the ceiling warms
            return
        elif self.cfg.kind(slot) == MULTI and w.readings > 0 and not w.independent:
            if (w.thick or w.growing) and not w.longer and more > 0:
                w.ends, w.longer = w.ends + more, True  # waits for heat or CO
                return
            why = "aerosol_signature"
        else:  # persisted, or no reading at all (the detector went silent)
            self._confirm(slot, w.ends, self._persisted(w), detail)
            return
        lo, hi = w.opened - PUFFS_LOOKBACK_MS, w.opened - PUFFS_LEAD_MS
        puffs = [t for t in s.pre_opened if lo <= t <= hi]
        smoky = self.cfg.kind(slot) == SMOKE and len(puffs) >= PUFFS_MIN
        smoky = smoky and s.cleared_clean_at < min(puffs)
        if why in ("transient", "aerosol_decay") and smoky:
            self._confirm(slot, w.ends, "smoke_puffs", detail)  # README "Verdicts"
            return
        s.fire, s.window, s.needs_edge = "", None, True
        if w.falling:
            s.reopen_at = w.ends + self._window_ms(slot)
        elif why == "transient" and w.latest_at_level:  # a lone last sample: its next
            s.reopen_at = w.ends  # reading at the level opens again
        else:
            s.reopen_at = FAR
        s.lingering = s.flags & LINGER
        s.suppressed_at = w.ends
        s.windows_judged.append((w.opened, w.ends))
        if why in ("transient", "aerosol_decay") and not w.falling:
            # README "Verdicts": not after a window judged emptying fast at the level
            s.reverify_until = w.ends + REVERIFY_MS
            s.reverify_since = w.opened
        self._say(slot, "fire", "verdict", "suppressed", why, w.ends, detail)

    def _trigger(self, slot: int, detail: Mapping[str, float | str]) -> str:
        def over(name: str, thr: str) -> bool:
            v = detail.get(name)
            return isinstance(v, float) and v >= self.cfg.thr(slot, thr)

        if over("obscuration", "obscuration_alarm"):
            return "obscuration"
        if over("temperature", "static_c"):
            return "static_heat"
        if over("temperature_rate", "rate_of_rise_c_per_min"):
            return "rate_of_rise"
        return "combined"

    @staticmethod
    def _persisted(w: FireWindow) -> str:
        """README "Verdicts": persistence keeps the opening reason, or names
        `fast_growth` when the optical signal grew fast."""
        named = w.grew_fast and w.why in ("obscuration", "device_alarm")
        return "fast_growth" if named else w.why

    @staticmethod
    def _sample(w: FireWindow, flags: int) -> None:
        w.readings += 1
        w.latest_at_level = bool(flags & ALARM)
        w.at_level += 1 if flags & ALARM else 0
        w.independent = w.independent or bool(flags & INDEPENDENT)
        w.grew_fast = w.grew_fast or bool(flags & FAST)
        w.falling = bool(flags & FALL)
        w.thick = w.thick or bool(flags & THICK)
        w.growing = bool(flags & GROWING)
        w.co_seen = w.co_seen or bool(flags & COX)
        w.before_below = w.latest_below
        w.latest_below = bool(flags & BELOW)
        w.latest_dropping = bool(flags & DROP)
        w.warming = bool(flags & WARM)

    def _own_corroboration(
        self, slot: int, at: int, flags: int, detail: Mapping[str, float | str]
    ) -> None:
        for bit, reason in OWN_CORROBORATION:
            if flags & bit:
                self._confirm(slot, at, reason, detail)
                return

    def _fire_reading(
        self, slot: int, ts: int, flags: int, detail: Mapping[str, float | str]
    ) -> None:
        s = self._s(slot)
        kind = self.cfg.kind(slot)
        active = bool(flags & (PRE | ALARM))
        s.streak = s.streak + 1 if active else 0
        s.last_reading_at = max(s.last_reading_at, ts)
        if active:
            s.active_detail = dict(detail)
        if active and s.streak >= PARTNER_READINGS:
            s.active_at = ts
            s.active_signed = kind == MULTI and not flags & INDEPENDENT
            s.active_weak = not flags & ALARM
        if flags & STEAM and not flags & JUMP:  # README "Verdicts": EMI is no steam
            s.steam_at = ts
        before, s.flags = s.flags, flags
        s.lingering &= flags
        if kind in (SMOKE, MULTI):
            if flags & PRE and not s.pre:
                s.pre = True
                if not flags & JUMP:
                    s.pre_opened.append(ts)
                self._say(slot, "pre_alarm", "open", "confirmed", "obscuration", ts, detail)
            elif s.pre and flags & PRE_CLEAR:
                s.pre = False
                if cast("float", detail.get("obscuration", math.nan)) < CLEAN_AIR:
                    s.cleared_clean_at = ts
                self._say(slot, "pre_alarm", "clear", "confirmed", "condition_gone", ts, detail)
            if flags & DRIFT:
                self._fault(slot, ts, detail, add="drift_limit")
            else:
                self._fault(slot, ts, detail, gone=("drift_limit",))
        fresh = flags & LINGER & ~s.lingering if kind == MULTI else 0
        if s.steam_at is not None and ts - s.steam_at <= STEAM_MEMORY_MS:
            fresh &= ~WARM  # README "Verdicts": a shower's warm air is not new evidence
        new_signal = bool(flags & (EDGE | HEATB | COB | FAST)) or bool(fresh)
        new_signal = new_signal or ts >= s.reopen_at
        if s.fire == "" and flags & ALARM and (not s.needs_edge or new_signal):
            again = kind == SMOKE and flags & EDGE and ts <= s.reverify_until
            again = again and not flags & JUMP and s.cleared_clean_at < s.reverify_since
            self._open(slot, ts, self._trigger(slot, detail), detail)
            if again:  # README "Verdicts": alarm verification's confirmation period
                self._confirm(slot, ts, "reverified", detail)
        w = s.window
        if s.fire == "pending" and w is not None and ts >= w.opened:
            if w.readings == 0:  # its first reading: out of clean air, or not
                w.out_of_clean_air = not before & (PRE | ALARM)
            # README "Verdicts": the reading one heat sample at the level waited for
            lone = w.out_of_clean_air and w.latest_at_level and w.at_level == w.readings == 1
            lone = kind == HEAT and lone and not w.grew_fast and ts >= w.ends
            self._sample(w, flags)
            if lone:
                t = detail.get("temperature")
                w.still_hot = isinstance(t, float) and t >= self.cfg.thr(slot, "static_c") - 5.0
            if ts > w.ends:  # README "Verdicts": the next reading after one sample decides
                w.ends = ts
            self._own_corroboration(slot, ts, flags, detail)
            if s.fire == "pending" and w.longer and flags & INDEPENDENT:
                # the second window waits only for evidence: confirmed when it comes
                self._confirm(slot, ts, self._persisted(w), detail)
            elif (
                s.fire == "pending"
                and w.hovering
                and flags & ALARM
                and not flags & DROP
                and (kind != MULTI or w.independent)
            ):
                # back at the alarm level after hovering under it
                self._confirm(slot, ts, self._persisted(w), detail)
        if active:
            self._check_zone(slot, ts, detail)

    # electrical ------------------------------------------------------------
    def _elec_reading(
        self, slot: int, ts: int, flags: int, detail: Mapping[str, float | str]
    ) -> None:
        s = self._s(slot)
        high = bool(flags & (RC | CABLE))
        if s.elec == "" and high:
            s.elec, s.elec_since, s.elec_gone_at = "pending", ts, FAR
            s.elec_why = "residual_current" if flags & RC else "cable_overheat"
            s.elec_alone = True
            amps = detail.get("current")
            s.elec_open_amps = amps if isinstance(amps, float) else math.nan
            self._say(slot, "electrical", "open", "pending", s.elec_why, ts, detail)
            if ts <= s.elec_again_until:  # README "Verdicts": an intermittent fault
                s.elec = "confirmed"
                self._say(slot, "electrical", "verdict", "confirmed", s.elec_why, ts, detail)
        if s.elec != "pending":
            return
        # README "Verdicts": one sample and no reading in the window, or a monitor
        # reporting more slowly than every 10 s: the next reading decides
        decides = s.elec_alone and (
            ts >= s.elec_since + self._window_ms(slot) or self.cfg.interval_ms(slot) > ELEC_CLEAR_MS
        )
        if ts > s.elec_since:
            s.elec_alone = False
        if decides and not high:
            # README "Verdicts": still near a limit (80 % of the setting, 5 °C of
            # the cable's limit), the condition stays
            rc, cable = detail.get("residual_current"), detail.get("cable_temperature")
            high = isinstance(rc, float) and rc >= 0.8 * self.cfg.thr(slot, "residual_current_ma")
            high = high or (
                isinstance(cable, float)
                and cable >= self.cfg.thr(slot, "cable_temperature_c") - 5.0
            )
        if high:
            s.elec_gone_at = FAR  # README "Verdicts": back before 10 s under: the same fault
            if ts - s.elec_since >= self.cfg.thr(slot, "persist_s") * 1000:
                s.elec = "confirmed"
                self._say(slot, "electrical", "verdict", "confirmed", s.elec_why, ts, detail)
        elif flags & ELEC_BELOW and decides:
            s.elec, s.elec_again_until = "", self._again_until(slot, ts, detail)
            self._say(slot, "electrical", "verdict", "suppressed", "transient", ts, dict(detail))
        elif flags & ELEC_BELOW and s.elec_gone_at == FAR:
            s.elec_gone_at, s.elec_gone_detail = ts + ELEC_CLEAR_MS, dict(detail)

    def _again_until(self, slot: int, at: int, after: Mapping[str, float | str]) -> int:
        """README "Verdicts": a recurring condition's memory, none after a motor's
        start (its one reading drew twice the next one's load current or more)."""
        s = self._s(slot)
        amps = after.get("current")
        if isinstance(amps, float) and amps > 0 and s.elec_open_amps >= 2.0 * amps:
            return NONE
        return at + ELEC_AGAIN * self.cfg.interval_ms(slot)

    # entry points -------------------------------------------------------------
    def deadline(self, slot: int) -> int | None:
        s = self.st.get(slot)
        if s is None:
            return None
        ends = []
        if s.window is not None:
            ends.append(s.window.ends)
        if s.elec == "pending":
            ends.append(min(s.elec_since + self._window_ms(slot), s.elec_gone_at))
        return min(ends, default=None)

    def due(self, slot: int, now: int, quiet: bool = False) -> None:
        """The device's own clock reached `now`: its windows ended by then resolve
        (up to two steady samples out of clean air wait for the next reading,
        unless `quiet`)."""
        s = self.st.get(slot)
        if s is None:
            return
        while s.window is not None and s.window.ends <= now:  # a longer one may be over too
            w = s.window
            # (two samples of smoke, one of heat: README "Verdicts")
            optical = self.cfg.kind(slot) in (SMOKE, MULTI) and w.why in (
                "obscuration",
                "device_alarm",
            )
            spike_sized = w.at_level == w.readings <= (2 if optical else 1) and not w.grew_fast
            if not quiet and w.out_of_clean_air and w.latest_at_level and spike_sized:
                break
            self._end_of_window(slot)
        end = s.elec_since + self._window_ms(slot) if s.elec == "pending" else FAR
        if s.elec == "pending" and s.elec_gone_at <= min(now, end):
            s.elec = ""
            s.elec_again_until = self._again_until(slot, s.elec_gone_at, s.elec_gone_detail)
            detail = s.elec_gone_detail
            self._say(
                slot, "electrical", "verdict", "suppressed", "transient", s.elec_gone_at, detail
            )
            s.elec_gone_at = FAR
        if s.elec == "pending" and end <= now and (quiet or not s.elec_alone):
            s.elec = "confirmed"
            detail = {"persisted_s": (end - s.elec_since) / 1000.0}
            self._say(slot, "electrical", "verdict", "confirmed", s.elec_why, end, detail)

    def silent(self, slot: int) -> None:
        while (dl := self.deadline(slot)) is not None:
            self.due(slot, dl, quiet=True)
            if self.deadline(slot) == dl:
                break

    def pending_slots(self) -> list[int]:
        return sorted(x for x, s in self.st.items() if s.fire == "pending" or s.elec == "pending")

    def row(self, slot: int, ts: int, flags: int, detail: Mapping[str, float | str]) -> None:
        self.due(slot, ts - 1)
        kind = self.cfg.kind(slot)
        if kind in FIRE_KINDS:
            self._fire_reading(slot, ts, flags, detail)
        elif kind == ELECTRICAL:
            self._elec_reading(slot, ts, flags, detail)
        elif kind == EVAC:
            for bad, good, cause in (
                (LAMP_FAIL, LAMP_OK, "lamp_failure"),
                (BATT_LOW, BATT_OK, "battery_low"),
                (BATT_DEPL, BATT_CHARGED, "battery_depleting"),
            ):
                if flags & bad:
                    self._fault(slot, ts, detail, add=cause)
                elif flags & good:
                    self._fault(slot, ts, detail, gone=(cause,))
        self.due(slot, ts)  # a reading at a window's last ms is still in it

    def event(self, slot: int, ts: int, name: str, zone_effect: bool = True) -> None:
        self.due(slot, ts - 1)
        kind = self.cfg.kind(slot)
        s = self._s(slot)
        detail: dict[str, float | str] = {"event": name}
        if name == "fire_alarm" and kind in FIRE_KINDS:
            # Evidence and zone activity (keeping a signature seen within 60 s,
            # or on its latest reading within 60 s, lasting or not).
            s.active_signed = (
                s.active_at is not None
                and s.active_signed
                and abs(ts - s.active_at) <= COINCIDENCE_MS
            ) or (
                kind == MULTI
                and 0 <= ts - s.last_reading_at <= COINCIDENCE_MS
                and bool(s.flags & (PRE | ALARM))
                and not s.flags & INDEPENDENT
            )
            s.active_at, s.active_weak = ts, False
            if s.fire == "":
                self._open(slot, ts, "device_alarm", detail)
            self._check_zone(slot, ts, detail)
        elif name == "activated" and kind == MCP:
            if s.fire != "confirmed":
                s.fire = "confirmed"
                self._say(slot, "fire", "open", "confirmed", "call_point", ts, detail)
            if zone_effect:
                self.call_point_zone(slot, ts)
        elif name == "fault":
            self._fault(slot, ts, detail, add="device_fault")
        elif name == "restore" and ts >= s.fault_at:  # not one older than the fault
            self._fault(slot, ts, detail, gone=tuple(s.faults), reason="restore")
        elif name == "self_test_fail" and kind == EVAC:
            self._fault(slot, ts, detail, add="self_test_fail")
        elif name == "self_test_pass" and kind == EVAC:
            self._fault(slot, ts, detail, gone=("self_test_fail",))
        self.due(slot, ts)

    def call_point_zone(self, slot: int, ts: int) -> None:
        s = self._s(slot)
        if s.fire == "confirmed":
            s.call_point = True
            self._check_zone(slot, ts, {"event": "activated"})

    def late_alarm_event(
        self, slot: int, ts: int, history: Sequence[tuple[int, int]], key: int
    ) -> None:
        """README "Load invariance": a `fire_alarm` that arrives after the
        device's readings moved past it is judged against those readings, in
        its place in the device's arrival order (`key`: behind a later event
        of the device, that event's time)."""
        s = self._s(slot)
        if self.cfg.kind(slot) not in FIRE_KINDS:
            return
        detail: dict[str, float | str] = {"event": "fire_alarm"}  # as if in order
        # Its zone activity as it stood at `ts` (recomputed from its readings
        # before `ts`), then its later activity back as the latest.
        latest = (s.active_at, s.active_signed, s.active_weak)
        streak, at, signed = 0, None, False
        before: tuple[int, int] | None = None  # its last reading before `ts`
        for t, flags in history:
            if t >= ts:
                break
            streak = streak + 1 if flags & (PRE | ALARM) else 0
            if streak >= PARTNER_READINGS:
                at, signed = t, self.cfg.kind(slot) == MULTI and not flags & INDEPENDENT
            before = (t, flags)
        s.active_at, s.active_weak = ts, False
        s.active_signed = (at is not None and signed and ts - at <= COINCIDENCE_MS) or (
            self.cfg.kind(slot) == MULTI
            and before is not None
            and ts - before[0] <= COINCIDENCE_MS
            and bool(before[1] & (PRE | ALARM))
            and not before[1] & INDEPENDENT
        )
        if s.fire != "" or any(a < ts <= e or a <= key <= e for a, e in s.windows_judged):
            self._check_zone(slot, ts, detail)  # it came during an alarm: evidence only
            if latest[0] is not None and latest[0] > ts:
                s.active_at, s.active_signed, s.active_weak = latest
            return
        self._open(slot, ts, "device_alarm", detail)
        w = s.window
        assert w is not None
        for t, flags in history:
            if t < ts or s.fire != "pending":
                continue
            if t > w.ends:
                break
            self._sample(w, flags)
            self._own_corroboration(slot, t, flags, detail)
        if s.fire == "pending":
            self._check_zone(slot, ts, detail)
        if s.fire == "pending" and w.readings == 0 and history and history[-1][0] >= w.ends:
            # It reported past the window and none of those readings was at the
            # alarm level (one would have opened its own alarm): judged on them,
            # as a signal back in clean air, not one hovering at pre-alarm level.
            w.readings, w.latest_below = 1, True
        if latest[0] is not None and latest[0] > ts:
            s.active_at, s.active_signed, s.active_weak = latest

    def clear(self, slot: int, typ: str) -> None:
        s = self._s(slot)
        if typ == "fire":
            s.fire, s.window, s.needs_edge, s.call_point = "", None, False, False
            s.suppressed_at = None
        elif typ == "pre_alarm":
            s.pre = False
        elif typ == "electrical":
            s.elec = ""
        elif typ in ("fault", "evac_fault"):
            s.faults.clear()

    def restore(self, slot: int, typ: str, verdict: str, opened_ms: int, reason: str = "") -> None:
        if verdict == "suppressed":
            return
        s = self._s(slot)
        if typ == "fire" and verdict == "pending":
            s.fire = "pending"
            s.window = FireWindow(
                opened_ms, opened_ms + self._window_ms(slot), reason or "restored"
            )
        elif typ == "fire":
            s.fire, s.window = "confirmed", None
            s.call_point = self.cfg.kind(slot) == MCP
        elif typ == "pre_alarm":
            s.pre = True
        elif typ == "electrical":
            s.elec, s.elec_since, s.elec_why = verdict, opened_ms, reason or "residual_current"
            s.elec_gone_at = FAR
        elif typ in ("fault", "evac_fault"):
            # A cause a reading or event can remove keeps its name; the rest
            # need a `restore` event.
            s.faults.add(
                reason
                if reason
                in (
                    "drift_limit",
                    "lamp_failure",
                    "battery_low",
                    "battery_depleting",
                    "self_test_fail",
                )
                else "device_fault"
            )
            s.fault_at = opened_ms

    def open_alarms(self) -> dict[tuple[int, str], str]:
        out: dict[tuple[int, str], str] = {}
        for slot, s in self.st.items():
            if s.fire:
                out[(slot, "fire")] = s.fire
            if s.pre:
                out[(slot, "pre_alarm")] = "confirmed"
            if s.elec:
                out[(slot, "electrical")] = s.elec
            if s.faults:
                out[(slot, "evac_fault" if self.cfg.kind(slot) == EVAC else "fault")] = "confirmed"
        return out


class NaiveEngine:
    def __init__(self) -> None:
        self.devs: dict[int, Dev] = {}
        self.machine = RuleBook(NaiveConfig(self.devs))
        self.late_readings = 0
        self.late_events = 0
        self.quarantined = 0
        # Zone order: detectors' items wait until every live detector of the
        # zone has reported up to them (arrival-time silence frees a zone).
        self.clock = NONE  # arrival clock
        self.queue: dict[int, list[tuple[int, int, int, int, object]]] = {}
        self.shown: dict[int, int] = {}
        self.seq = 0

    def configure(
        self,
        slots: Sequence[int],
        kinds: Sequence[int],
        zones: Sequence[int],
        thresholds: Sequence[Mapping[str, float]],
        intervals_ms: Sequence[int] | None = None,
    ) -> None:
        for n, (s, k, z, t) in enumerate(zip(slots, kinds, zones, thresholds, strict=True)):
            thr = thresholds_of(contract.KINDS[int(k)], t)
            d = self.devs.get(int(s))
            if d is None:
                d = self.devs[int(s)] = Dev(int(k), int(z), thr)
            else:
                d.kind, d.zone, d.thr = int(k), int(z), thr
            iv = int(intervals_ms[n]) if intervals_ms is not None else 0
            d.interval_ms = (
                iv if iv > 0 else round(contract.DEFAULT_INTERVAL_S[contract.KINDS[d.kind]] * 1000)
            )

    # --- one reading ---------------------------------------------------------
    def _baseline(self, d: Dev, ts: int, obs: float) -> tuple[float, bool]:
        if d.anchor == NONE:
            d.anchor = ts  # epochs are hours of the device's own stream
        e = (ts - d.anchor) // DRIFT_EPOCH_MS
        if e > d.ep:
            delta = d.m - d.b
            if delta <= DRIFT_BAND:
                target = d.b + min(max(delta, -DRIFT_DOWN), DRIFT_UP)
                limit = d.thr["drift_limit"]
                if target >= limit:
                    d.b, d.drift = limit, True
                else:
                    d.b, d.drift = max(target, 0.0), False
            d.ep = e
            d.m = math.nan
        b, dr = d.b, d.drift
        d.m = fmin(d.m, obs)
        return b, dr

    def _rates(self, d: Dev, ts: int, x: list[float]) -> tuple[list[float], list[float]]:
        nan4 = [math.nan] * 4
        ref = None
        for ht, hv in d.hist:  # oldest first
            if ht >= ts - LOOKBACK_MS:
                ref = (ht, hv)
                break
        rate = nan4
        if ref is not None and ts - ref[0] >= RATE_SPAN_MS:
            span = float(ts - ref[0])
            rate = [(a - r) * MIN_MS / span for a, r in zip(x, ref[1], strict=True)]
        step = nan4
        if d.hist:
            pt, pv = d.hist[-1]
            if pt >= ts - LOOKBACK_MS and ts > pt:
                dt = float(ts - pt)
                step = [(a - r) * MIN_MS / dt for a, r in zip(x, pv, strict=True)]
        d.hist.append((ts, x))
        if len(d.hist) > LOOKBACK_SAMPLES:
            d.hist.pop(0)
        return rate, step

    def _flags(
        self,
        d: Dev,
        ts: int,
        v: list[float],
        comp: float,
        drift: bool,
        rate: list[float],
        step: list[float],
    ) -> int:
        t = d.thr.get
        k = d.kind
        has_obs = k in (SMOKE, MULTI)
        fire = k in (SMOKE, HEAT, MULTI)
        nan = math.nan
        f = 0
        if has_obs:
            pre = t("obscuration_pre_alarm", nan)
            if ge(comp, pre):
                f |= PRE
            if comp < pre * PRE_CLEAR_FRACTION:
                f |= PRE_CLEAR
            if drift:
                f |= DRIFT
        heat_raw = (
            fire and ge(rate[0], t("heat_rise_c_per_min", nan)) and not abs(step[0]) > HEAT_STEP_MAX
        )
        steam = k == MULTI and (
            ge(rate[3], t("steam_rh_rise_per_min", nan))
            or ge(v[RI["humidity"]], t("steam_rh", nan))
        )
        # README "Verdicts": a heat rise with a humidity jump on the same
        # reading is steam, not fire (a fire dries the air it heats).
        heat_raw = heat_raw and not steam
        warm = (
            k == MULTI and ge(rate[0], WARMING) and not abs(step[0]) > HEAT_STEP_MAX and not steam
        )
        f |= WARM if warm else 0
        fast_raw = has_obs and ge(step[1], t("fast_growth_per_min", nan))
        heat = heat_raw and bool(d.last_flags & HEAT_RAW)
        alarm_obs = has_obs and ge(comp, t("obscuration_alarm", nan))
        # README "Verdicts", `reverified`: not on a reading whose temperature
        # jumped faster than any fire heats a ceiling (every channel: EMI).
        f |= JUMP if alarm_obs and abs(step[0]) > HEAT_STEP_MAX else 0
        fast = fast_raw and alarm_obs and bool(d.last_flags & FAST_RAW)
        # README "Verdicts", `aerosol_decay`: at alarm level and falling by
        # >= 4 %/m a minute (the fast-growth rate), on two readings running.
        fall_raw = alarm_obs and ge(-step[1], t("fast_growth_per_min", nan))
        fall = fall_raw and bool(d.last_flags & FALL_RAW)
        cox = k == MULTI and ge(v[RI["co"]], CO_CLEAN_AIR)
        dense = k == MULTI and ge(comp, AEROSOL_ONLY)
        thick = k == MULTI and ge(comp, AEROSOL_THICK)
        if k == MULTI:
            # README "Verdicts": on a multi, fast growth under the dense level
            # only earns an aerosol its second window
            f |= GROWING if fast else 0
            fast = fast and dense  # multi: fast growth counts only for dense aerosol
        co = k == MULTI and (
            ge(v[RI["co"]], t("co_ppm", nan)) or ge(rate[2], t("co_rise_ppm_per_min", nan))
        )
        temp = v[RI["temperature"]]
        alarm = (
            alarm_obs
            or (
                k in (HEAT, MULTI)
                and (ge(temp, t("static_c", nan)) or ge(rate[0], t("rate_of_rise_c_per_min", nan)))
            )
            or (has_obs and ge(comp, t("obscuration_pre_alarm", nan)) and (heat or co))
        )
        f |= HEAT_RAW if heat_raw else 0
        f |= FAST_RAW if fast_raw else 0
        f |= HEATB if heat else 0
        f |= FAST if fast else 0
        f |= FALL_RAW if fall_raw else 0
        f |= FALL if fall else 0
        # README "Verdicts", hovering: at pre-alarm level and falling as fast
        # is an aerosol on its way out, not a signal that hovers.
        pre_level = has_obs and ge(comp, t("obscuration_pre_alarm", nan))
        f |= DROP if pre_level and ge(-step[1], t("fast_growth_per_min", nan)) else 0
        f |= CO_RAW if co else 0
        f |= COB if co and d.last_flags & CO_RAW else 0
        f |= STEAM if steam else 0
        f |= COX if cox else 0
        f |= DENSE if dense else 0
        f |= THICK if thick else 0
        if alarm:
            f |= ALARM
            if not d.last_flags & ALARM:
                f |= EDGE
        known = math.isfinite(comp) if has_obs else math.isfinite(temp)
        if fire and not alarm and known and (not has_obs or comp < t("obscuration_pre_alarm", nan)):
            f |= BELOW
        if k == ELECTRICAL:
            rc, cable = v[RI["residual_current"]], v[RI["cable_temperature"]]
            hi_rc = ge(rc, t("residual_current_ma", nan))
            hi_cable = ge(cable, t("cable_temperature_c", nan))
            f |= (RC if hi_rc else 0) | (CABLE if hi_cable else 0)
            if not hi_rc and not hi_cable and (math.isfinite(rc) or math.isfinite(cable)):
                f |= ELEC_BELOW
        if k == EVAC:
            lamp, batt, mains = v[RI["lamp_ok"]], v[RI["battery"]], v[RI["mains"]]
            low = t("battery_low_pct", nan)
            if mains == 0.0:
                d.last_off = ts
                if not d.on_batt or math.isnan(d.dis_b0):
                    d.dis_t0, d.dis_b0 = ts, batt
            if not math.isnan(mains):
                d.on_batt = mains == 0.0
            if mains == 0.0:
                # On battery: depleting when low, or when the autonomy projected
                # from the discharge so far falls short of the rated duration.
                elapsed = ts - d.dis_t0
                drop = d.dis_b0 - batt
                short = False
                if elapsed >= DISCHARGE_SPAN_MS and drop > 0:
                    per_ms = drop / float(elapsed)
                    autonomy_min = (elapsed + batt / per_ms) / 60_000
                    short = autonomy_min < t("rated_duration_min", nan)
                f |= BATT_DEPL if batt < low or short else 0
            if mains == 1.0 and batt >= low + BATTERY_MARGIN:
                f |= BATT_CHARGED
            # A low charge counts only on mains (1 or unknown) and once the
            # recharge grace after the last reading on battery is over.
            charged = ts - d.last_off >= RECHARGE_GRACE_MS
            f |= LAMP_FAIL if lamp < 0.5 else 0
            f |= LAMP_OK if lamp >= 0.5 else 0
            f |= BATT_LOW if batt < low and mains != 0.0 and charged else 0
            f |= BATT_OK if batt >= low + BATTERY_MARGIN else 0
        return f

    # --- per batch -------------------------------------------------------------------
    def _plausible(self, d: Dev, ts: int, arrival: int, clock: int) -> bool:
        """Quarantine, reading by reading (30 s ahead; 3 agreeing readings = skew,
        remembered)."""
        if ts <= max(clock, arrival + d.q_skew) + FUTURE_MS:
            d.q_run = 0
            return True
        off = ts - arrival
        run = d.q_run + 1 if d.q_run > 0 and abs(off - d.q_off) <= 60_000 else 1
        d.q_off = off
        if run >= 3:
            d.q_run = 0
            d.q_skew = off
            return True
        d.q_run = run
        d.quarantined += 1
        self.quarantined += 1
        return False

    def process(
        self, readings: Readings, events: Events, arrival_ms: int | None = None
    ) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        self.machine.out = out
        items: list[tuple[int, int, int, int, object]] = []
        ev_list = list(
            zip(events.slot.tolist(), events.ts.tolist(), events.code.tolist(), strict=True)
        )
        rd_list = list(
            zip(readings.slot.tolist(), readings.ts.tolist(), readings.values.tolist(), strict=True)
        )
        # Arrival bookkeeping: every message of a known slot counts.
        for slot, ts, _ in [*rd_list, *ev_list]:
            d = self.devs.get(slot)
            if d is not None:
                d.last_arrival = arrival_ms if arrival_ms is not None else max(d.last_arrival, ts)
            self.clock = max(self.clock, arrival_ms if arrival_ms is not None else ts)
        if arrival_ms is not None:
            for slot, ts, _ in rd_list:  # a new newest on time: the clock is back
                d = self.devs.get(slot)
                if d is not None and d.last_ts < ts <= arrival_ms + FUTURE_MS:
                    d.q_skew = 0
            quarantine_clock: dict[int, int] = {}
            kept = []
            for row in rd_list:
                d = self.devs.get(row[0])
                if d is not None:
                    clock = max(d.last_ts, quarantine_clock.get(row[0], NONE))
                    if not self._plausible(d, row[1], arrival_ms, clock):
                        continue
                    quarantine_clock[row[0]] = max(quarantine_clock.get(row[0], NONE), row[1])
                kept.append(row)
            rd_list = kept
        # Events: quarantine and lateness, in arrival order.
        fresh: list[tuple[int, int, str, int]] = []  # slot, ts, name, key
        for slot, ts, code in ev_list:
            d = self.devs.get(slot)
            if d is None or not 0 <= code < len(contract.EVENT_TYPES):
                continue
            name = contract.EVENT_TYPES[code]
            if name not in contract.KIND_EVENTS[contract.KINDS[d.kind]]:
                continue
            if (
                arrival_ms is not None
                and ts > max(d.last_event_ts, d.last_ts, arrival_ms + d.q_skew) + FUTURE_MS
            ):
                # Dated ahead: taken at the arrival clock (counted, unless a fire alarm).
                if name not in ("activated", "fire_alarm", "panel_fire", "panel_test"):
                    d.quarantined += 1
                    self.quarantined += 1
                ts = arrival_ms
            if ts < d.last_event_ts:
                if name not in ("activated", "fire_alarm", "panel_fire"):
                    self.late_events += 1
                    continue
                # A fire alarm is never dropped as late; dated far behind (a
                # clock reset: 10 min behind its events, or a day behind its
                # readings), it is taken at the device's newest time.
                newest = max(d.last_event_ts, d.last_ts)
                if ts < d.last_event_ts - 600_000 or ts < d.last_ts - 86_400_000:
                    ts = newest
            # A late call point press keeps its arrival place (its own ts is used).
            key = max(d.last_event_ts, ts)
            d.last_event_ts = key
            fresh.append((slot, ts, name, key))
        merged: list[tuple[int, int, str, int]] = []
        for slot, ts, name, key in fresh:
            d = self.devs[slot]
            shown = self._shown(slot)
            if name == "fire_alarm" and d.kind in (SMOKE, HEAT, MULTI) and ts <= shown:
                # The machine has seen its readings past it: judged against them now.
                hist = [h for h in d.flag_hist if h[0] <= shown]
                self.machine.late_alarm_event(slot, ts, hist, key)
            else:
                merged.append((slot, ts, name, key))
        for n, (slot, ts, vals) in enumerate(rd_list):
            d = self.devs.get(slot)
            if d is None:
                continue
            if ts <= d.last_ts:
                self.late_readings += 1
                continue
            if ts // 250 == d.last_ts // 250:
                continue  # a second reading in the same 250 ms of its clock: stored only
            d.last_ts = ts
            comp = base = math.nan
            drift = False
            if d.kind in (SMOKE, MULTI):
                base, drift = self._baseline(d, ts, vals[RI["obscuration"]])
                comp = vals[RI["obscuration"]] - base
            rate = step = [math.nan] * 4
            if d.kind in (SMOKE, HEAT, MULTI):
                rate, step = self._rates(d, ts, [vals[RI[c]] for c in RATE_NAMES])
            flags = self._flags(d, ts, vals, comp, drift, rate, step)
            if d.kind in (SMOKE, HEAT, MULTI):
                d.flag_hist.append((ts, flags))
                if len(d.flag_hist) > LOOKBACK_SAMPLES:
                    d.flag_hist.pop(0)
            d.last_flags = flags
            items.append((ts, 1, slot, n, (flags, evidence(vals, comp, base, rate[0]))))
        evitems = [(key, 0, slot, n, (ts, name)) for n, (slot, ts, name, key) in enumerate(merged)]
        now_items = []
        for it in [*evitems, *items]:  # the engine numbers events first, then rows
            self.seq += 1
            item = (it[0], it[1], it[2], self.seq, it[4])
            d = self.devs[it[2]]
            if d.kind in (SMOKE, HEAT, MULTI):
                self.queue.setdefault(d.zone, []).append(item)
            elif it[1] == 0 and cast("tuple[int, str]", it[4])[1] == "activated":
                # Confirmed at once; the zone effect in the zone's order.
                ts_, _ = cast("tuple[int, str]", it[4])
                self.machine.event(it[2], ts_, "activated", zone_effect=False)
                zone_item = (it[0], 0, it[2], self.seq, (ts_, "activated:zone"))
                self.queue.setdefault(d.zone, []).append(zone_item)
            else:
                now_items.append(item)
        now_items.sort(key=lambda it: it[:4])
        for item in now_items:
            self._show(item)
        self._release()
        for slot in self.machine.pending_slots():
            self.machine.due(slot, self._shown(slot))
        return out

    def _show(self, item: tuple[int, int, int, int, object]) -> None:
        ts, typ, slot, _, payload = item
        if typ == 0:
            assert isinstance(payload, tuple)
            if payload[1] == "activated:zone":
                self.machine.call_point_zone(slot, payload[0])
            else:
                self.machine.event(slot, payload[0], payload[1])
        else:
            flags, detail = cast("tuple[Any, Any]", payload)
            self.machine.row(slot, ts, flags, detail)

    def _zone_clock(self, zone: int) -> int:
        # How far each detector holds the zone: its newest ts, moving on with
        # arrival time once it was not heard for 10 s past its lag (nothing of
        # it on the way); one held 5 min behind the zone's lead is not waited for.
        held = [
            d.last_ts + max(self.clock - d.last_arrival - 10_000, 0)
            for d in self.devs.values()
            if d.zone == zone
            and d.kind in (SMOKE, HEAT, MULTI)
            and d.last_ts > NONE
            and self.clock - d.last_arrival < 3 * d.interval_ms
        ]
        if not held:
            return 2**62
        return min(t for t in held if t >= max(held) - 300_000)

    def _release(self) -> None:
        zones = {z for z, q in self.queue.items() if q}
        zones |= {
            self.devs[x].zone
            for x in self.machine.pending_slots()
            if self.devs[x].kind in (SMOKE, HEAT, MULTI)
        }
        ready = []
        for zone in zones:
            upto = self._zone_clock(zone)
            q = self.queue.get(zone, [])
            self.queue[zone] = [it for it in q if it[0] > upto]
            ready += [it for it in q if it[0] <= upto]
            self.shown[zone] = upto
        for item in sorted(ready, key=lambda it: it[:4]):
            self._show(item)

    def _shown(self, slot: int) -> int:
        d = self.devs[slot]
        if d.kind not in (SMOKE, HEAT, MULTI):
            return d.last_ts
        return min(d.last_ts, self.shown.get(d.zone, NONE))

    def advance(self, now_ms: int) -> list[AlarmChange]:
        """Silence on arrival time: 3 intervals without a message, counted past
        the moment the deadline would have arrived."""
        out: list[AlarmChange] = []
        self.machine.out = out
        self.clock = max(self.clock, now_ms)
        self._release()
        for slot in self.machine.pending_slots():
            self.machine.due(slot, self._shown(slot))
        for slot in self.machine.pending_slots():
            d = self.devs[slot]
            dl = self.machine.deadline(slot)
            if dl is None:
                continue
            if d.kind in (SMOKE, HEAT, MULTI) and self.shown.get(d.zone, NONE) < dl:
                continue
            quiet = 3 * d.interval_ms
            clock = max(d.last_ts, d.last_event_ts)
            if (
                now_ms - d.last_arrival >= quiet
                and now_ms >= d.last_arrival + max(dl - clock, 0) + quiet
            ):
                self.machine.silent(slot)
        return out

    def clear(self, slot: int, alarm_type: str) -> None:
        self.machine.clear(slot, alarm_type)

    def restore_alarm(
        self, slot: int, alarm_type: str, verdict: str, opened_ms: int, reason: str = ""
    ) -> None:
        self.machine.restore(slot, alarm_type, verdict, opened_ms, reason)

    def open_alarms(self) -> dict[tuple[int, str], str]:
        return self.machine.open_alarms()
