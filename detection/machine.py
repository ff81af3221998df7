"""The alarm state machine: plain Python over the few rows that matter.

The numpy kernels (`detection.kernel`) reduce every reading to condition bits
(`Flag`); the engine shows this machine only the rows that can change
something (any counting bit set, or bits different from the device's previous
reading), plus every event. The machine is written so that a row whose
machine-visible bits equal the previous row's is a no-op, which is what
makes skipping those rows exact (the test suite checks it against a
reference that shows every row).

Alarm types and their lifecycle (contract section 6):

- `fire` (smoke, heat, multi, mcp): opens `pending` on an alarm-level reading
  or a detector's `fire_alarm` event; `confirmed` at once on corroboration
  (reasons `call_point`, `coincidence` with `related` slots, `rate_of_rise`
  [heat rise on two consecutive readings; on a multi-criteria detector not
  while its humidity jumps: steam], `co_rise`);
  otherwise resolved when the verification window ends (event time):
  `suppressed` with `steam_signature` (humidity jump seen, no corroboration),
  `transient` (<= 2 readings at alarm level and the latest one back under
  the pre-alarm level, or alone at it after a clean one: insects, EMI; one
  sample out of clean air with nothing after it in the window is judged on
  the device's next reading, counted, unless it went silent; a
  lone last sample re-arms, so a signal that stays opens again with its next
  reading; a signal hovering at pre-alarm level, or at the level after one
  fast fall, first gets a second part of its window, never past
  VERIFICATION_MAX_S, in which a reading at the level not falling confirms),
  `aerosol_decay` (>= 3 readings at alarm level, the latest one under it,
  or still at it but falling fast on two consecutive readings: cooking,
  sprays), `aerosol_signature` (multi: no independent
  evidence, unless the ceiling still warms at MULTI_WARM_C_PER_MIN at the
  window's end: `combined`; an aerosol that reached the thick level, or still
  grows fast at the window's end, first gets one more window, in all never
  past VERIFICATION_MAX_S, to bring heat or CO); else
  `confirmed` by persistence (the latest reading still at
  alarm level, or no reading at all: a silent detector) with the trigger's
  reason (`obscuration`, or `fast_growth` when the optical signal grew fast;
  `static_heat`, `rate_of_rise`, `combined`, `device_alarm`). A detector's
  own `fire_alarm` event opens a window and is zone activity, never a sample.
  A smoke-only detector alarming again (a new edge) within REVERIFY_S of a
  `transient` or `aerosol_decay` verdict is `confirmed` at once (`reverified`).
  One whose pre-alarm opened afresh PUFFS_MIN times in the PUFFS_LOOKBACK_S
  before its window (smoke arriving in puffs) is `confirmed` where the window
  would end `transient` or `aerosol_decay` (`smoke_puffs`).
  A neighbour's activity counts for `coincidence` at the alarm level (not
  pre-alarm), once it lasted two readings.
  A coincidence confirms every device that took part: a pending partner with
  it, and a partner whose own window suppressed it within COINCIDENCE_MS
  opens again, `confirmed`. A confirmed fire latches until `clear()`. After a
  suppression the next alarm opens on a new rising edge (or at once with
  corroboration), not on the same lingering signal; a signal judged falling
  but still at alarm level one window later opens again. A call point's
  `activated` opens a `confirmed` fire (`call_point`)
  and confirms the pending fires of its zone; `reset` clears nothing.
- `pre_alarm` (smoke, multi): informational; opens `confirmed` when the
  compensated obscuration reaches the pre-alarm level, clears (reason
  `condition_gone`) below PRE_ALARM_CLEAR_FRACTION of it.
- `electrical`: opens `pending` when residual current or cable temperature
  reaches its limit; `confirmed` (`residual_current` / `cable_overheat`) once
  the condition has lasted `persist_s`, or at the window's end if the device
  went quiet still above; `suppressed` (`transient`) at the first reading
  back below. Latches like a fire alarm.
- `fault` / `evac_fault` (evac devices): `confirmed` when raised, one alarm
  per device whatever the causes (`device_fault` event, `drift_limit`,
  `lamp_failure`, `battery_low`, `self_test_fail`); clears when every cause
  is gone (`restore` event: all causes, reason `restore`; lamp ok, battery
  back above low + margin, drift back under the limit, `self_test_pass`:
  reason `condition_gone`). Mains loss is a state, never an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from detection import params as p
from detection.kernel import (
    KIND_ELECTRICAL,
    KIND_EVAC,
    KIND_HEAT,
    KIND_MCP,
    KIND_MULTI,
    KIND_SMOKE,
    Flag,
)
from detection.records import AlarmChange
from firesafe.contract import READINGS

FIRE_KINDS: Final = (KIND_SMOKE, KIND_HEAT, KIND_MULTI)
OBS_KINDS: Final = (KIND_SMOKE, KIND_MULTI)
# A panel point's fire alarm (event `panel_fire`) waits for corroboration or a
# person, never for a clock: its window never ends by itself.
PANEL_FIRE_REASON: Final = "panel_alarm"
# One raised while its panel reports the point in test mode (event `panel_test`,
# a maintenance walk test): kept pending for a person, told to no one, neither
# evidence for its zone nor confirmed by it.
PANEL_TEST_REASON: Final = "panel_test"
PANEL_REASONS: Final = (PANEL_FIRE_REASON, PANEL_TEST_REASON)
# A walk test's alarm still raised when test mode ends: replaced by a real one.
TEST_ENDED_REASON: Final = "panel_test_ended"
NEVER: Final = 2**62
# Fault causes that a reading can remove (the rest need a `restore` event).
CONDITION_CAUSES: Final = frozenset(
    {"drift_limit", "lamp_failure", "battery_low", "battery_depleting"}
)
# Causes restored under their own name (an event removes `self_test_fail`).
RESTORABLE_CAUSES: Final = CONDITION_CAUSES | {"self_test_fail"}

_PRE: Final = int(Flag.PRE)
_ALARM: Final = int(Flag.ALARM)
_CORROB: Final = int(Flag.HEAT | Flag.CO | Flag.FAST)
# Independent evidence on a multi-criteria detector: anything but its optical
# channel (heat rise, CO above clean air or rising), or an aerosol dense enough
# to alarm on its own (MULTI_AEROSOL_ONLY_ALARM).
_EVIDENCE: Final = int(Flag.HEAT | Flag.CO | Flag.COX | Flag.DENSE | Flag.FAST)
# New evidence after a suppression re-arms a multi-criteria detector (a bit
# already present when it was suppressed does only once it went and came back).
_REARM: Final = int(Flag.COX | Flag.DENSE | Flag.THICK | Flag.WARM)
_PARTNER_RUN: Final = 2


def _aerosol_alone(flags: int) -> bool:
    """A multi-criteria detector's reading at pre-alarm or alarm level with no
    independent evidence: what its own `fire_alarm` event then signs."""
    return bool(flags & (_PRE | _ALARM)) and not flags & _EVIDENCE


# Pre-alarm openings kept for `_puffs` (a window may end up to
# VERIFICATION_MAX_S after it opened).
_PUFFS_KEPT_MS: Final = int((p.PUFFS_LOOKBACK_S + p.VERIFICATION_MAX_S) * 1000)
_JUDGED_KEPT: Final = 4  # suppressed windows remembered for late events


class DeviceConfig(Protocol):
    def kind(self, slot: int) -> int: ...
    def zone(self, slot: int) -> int: ...
    def thr(self, slot: int, name: str) -> float: ...
    def interval_ms(self, slot: int) -> int: ...


def row_detail(
    values: Sequence[float], comp: float, baseline: float, rate_t: float
) -> dict[str, float | str]:
    """Evidence of one reading: its finite values, named."""
    out: dict[str, float | str] = {}
    for name, v in zip(READINGS, values, strict=True):
        if math.isfinite(v):
            out[name] = float(v)
    if math.isfinite(comp):
        out["obscuration"] = float(comp)  # drift-compensated
        out["baseline"] = float(baseline)
    if math.isfinite(rate_t):
        out["temperature_rate"] = float(rate_t)  # °C/min over the look-back
    return out


@dataclass(slots=True)
class _Window:
    opened: int
    deadline: int
    reason: str  # what opened it
    n_above: int = 0  # readings at alarm level (a device's own event is not one)
    below: bool = False  # the latest reading was back under the pre-alarm level
    dropping: bool = False  # the latest reading fell fast (an aerosol on its way out)
    warm: bool = False  # multi: the latest reading's ceiling was warming
    last_alarm: bool = False  # the latest reading was at alarm level
    prev_below: bool = False  # the reading before it was back under the pre-alarm level
    rows: int = 0  # readings seen (a window opened by an event may have none)
    evidence: bool = False  # multi: independent evidence seen in the window
    fast: bool = False  # fast obscuration growth seen (judged at the window's end)
    falling: bool = False  # the latest reading was at alarm level and falling fast
    thick: bool = False  # multi: the aerosol reached the thick level
    growing: bool = False  # multi: the latest reading grew fast (Flag.GROWING)
    co_seen: bool = False  # multi: CO above clean air in it (Flag.COX)
    extended: bool = False  # the window got its second part (thick aerosol, hovering)
    hover: bool = False  # ... because the signal hovered, or dipped once, at its end
    # Its first reading came straight out of clean air (the one before it under
    # the pre-alarm level): until a second reading it is one sample, no verdict.
    from_clean: bool = False
    # How many steady samples out of clean air are still a spike: two of an
    # optical signal (an insect sits in the chamber), one of heat (no insect
    # heats a ceiling; an outside check saw a 30 s heat detector's static
    # heat confirmed a reading late).
    spike_rows: int = p.SPIKE_MAX_SAMPLES
    # A heat detector's reading that a lone sample waited for was within
    # HEAT_NEAR_C of its static level: the ceiling stayed hot.
    hot: bool = False

    @property
    def awaits_sample(self) -> bool:
        """Out of clean air, no more readings than a spike has (SPIKE_MAX_SAMPLES),
        all at the alarm level and not growing fast from one to the next, and
        nothing after them: a device reporting more slowly than the window fills
        (every 20-60 s) is judged on its next reading, not on a spike (an insect,
        EMI, a spray: outside checks saw one sample, then two steady ones on 30
        and 60 s detectors, confirmed). A fire's smoke grows from one to the next."""
        return (
            self.from_clean
            and self.last_alarm
            and not self.fast
            and self.n_above == self.rows <= self.spike_rows
        )

    @property
    def hovering(self) -> bool:
        """The latest reading was under the alarm level but at pre-alarm level,
        and not falling fast: neither back in clean air nor on its way out."""
        return self.rows > 0 and not (self.last_alarm or self.below or self.dropping)

    @property
    def persisted(self) -> str:
        """The reason of a signal confirmed by persistence: what opened the
        window, named `fast_growth` when the optical signal grew fast."""
        fast = self.fast and self.reason in ("obscuration", "device_alarm")
        return "fast_growth" if fast else self.reason

    @property
    def smouldering(self) -> bool:
        """Back under the alarm level but not under pre-alarm after a window
        that saw CO above clean air (a multi-criteria detector): falling fast
        or not, a fire's turbulence rather than a spent aerosol (cooking fumes
        and sprays bring no CO)."""
        return self.rows > 0 and self.co_seen and not (self.last_alarm or self.below)

    @property
    def dipping(self) -> bool:
        """The latest reading was at the alarm level after one fast fall (two
        running would be `falling`)."""
        return self.last_alarm and self.dropping and not self.falling


@dataclass(slots=True)
class _Device:
    fire: str = ""  # '' | 'pending' | 'confirmed'
    win: _Window | None = None
    armed: bool = True
    pre: bool = False
    elec: str = ""
    elec_opened: int = 0
    elec_deadline: int = 0
    # Under both limits since a reading: gone then, unless high again first
    # (params.ELECTRICAL_CLEAR_S).
    elec_clear_at: int = NEVER
    elec_clear_detail: Mapping[str, float | str] | None = None  # ... that reading's evidence
    elec_reason: str = ""
    # Its pending condition has only the reading that opened it so far: a
    # monitor reporting more slowly than the window is judged on its next one.
    elec_lone: bool = False
    elec_recur_until: int = -NEVER  # back by then: the same intermittent fault
    elec_open_current: float = math.nan  # the load current of the reading that opened it
    causes: set[str] = field(default_factory=set)
    fault_at: int = -NEVER  # when the current fault alarm opened
    last_steam: int = -(2**62)
    bits: int = 0  # flags of the latest reading shown
    run: int = 0  # consecutive readings at pre-alarm or alarm level
    sup_bits: int = 0  # re-arming bits already present when a fire was suppressed
    rearm_at: int = NEVER  # a signal judged decaying but still at alarm level re-arms then
    sup_at: int | None = None  # when its window suppressed the latest fire (coincidence)
    # Smoke: a new alarm until then confirms at once (alarm verification's
    # confirmation period, params.REVERIFY_S).
    reverify_until: int = -NEVER
    # When its pre-alarm opened recently (smoke arriving in puffs, params.PUFFS_*).
    pre_opens: list[int] = field(default_factory=list)
    # When its pre-alarm last cleared straight into clean air (params.CLEAN_AIR_OBS):
    # an insect leaving or a spike ending does, smoke in puffs leaves a haze.
    clean_at: int = -NEVER
    # (opened, deadline) of its recent suppressed windows: a late `fire_alarm`
    # event dated inside one was evidence for it, not a new alarm.
    judged: list[tuple[int, int]] = field(default_factory=list)
    last_row: int = -NEVER  # its newest reading shown
    replayed: _Window | None = None  # a pending window history rebuilt (see `settle_replay`)
    # Its latest reading at pre-alarm or alarm level: what a coincidence it takes
    # part in shows as its own evidence (not the other detector's reading).
    active_detail: Mapping[str, float | str] | None = None


def _at_least(detail: Mapping[str, float | str], name: str, level: float) -> bool:
    v = detail.get(name)
    return isinstance(v, float) and v >= level


class Machine:
    """Per-device alarm states plus zone bookkeeping; emits `AlarmChange`s into `out`."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg
        self.dev: dict[int, _Device] = {}
        # zone -> slot -> (ts of latest alarm/pre-alarm, that reading showed a
        # nuisance signature: see `_zone_corroboration`)
        self.act: dict[int, dict[int, tuple[int, bool, bool]]] = {}
        self.pending: dict[int, set[int]] = {}  # zone -> slots with a pending fire
        self.callpoints: dict[int, set[int]] = {}  # zone -> call points with an open fire
        self.elec_pending: set[int] = set()
        self.out: list[AlarmChange] = []

    def forget(self, slots: Sequence[int]) -> None:
        """Drop the alarm state and zone bookkeeping of these devices."""
        gone = set(slots)
        for slot in gone:
            self.dev.pop(slot, None)
        for book in (self.pending, self.callpoints):
            for members in book.values():
                members -= gone
        for seen in self.act.values():
            for slot in gone & seen.keys():
                del seen[slot]
        self.elec_pending -= gone

    def rezone(self, slot: int, old: int, new: int) -> None:
        """The device now belongs to zone `new`: move its zone bookkeeping there."""
        for book in (self.pending, self.callpoints):
            if slot in book.get(old, ()):
                book[old].discard(slot)
                book.setdefault(new, set()).add(slot)
        seen = self.act.get(old, {}).pop(slot, None)
        if seen is not None:
            self.act.setdefault(new, {})[slot] = seen

    # --- helpers -----------------------------------------------------------
    def _d(self, slot: int) -> _Device:
        d = self.dev.get(slot)
        if d is None:
            d = self.dev[slot] = _Device()
        return d

    def _emit(
        self,
        slot: int,
        typ: str,
        action: str,
        verdict: str,
        reason: str,
        at: int,
        detail: Mapping[str, float | str] | None = None,
        related: tuple[int, ...] = (),
    ) -> None:
        self.out.append(
            AlarmChange(slot, typ, action, verdict, reason, at, dict(detail or {}), related)
        )

    def _fault_type(self, slot: int) -> str:
        return "evac_fault" if self.cfg.kind(slot) == KIND_EVAC else "fault"

    def _causes(
        self,
        slot: int,
        at: int,
        add: str = "",
        remove: Sequence[str] = (),
        reason: str = "condition_gone",
        detail: Mapping[str, float | str] | None = None,
    ) -> None:
        d = self._d(slot)
        before = bool(d.causes)
        if add:
            d.causes.add(add)
        for c in remove:
            d.causes.discard(c)
        if not before and d.causes:
            d.fault_at = at
            self._emit(slot, self._fault_type(slot), "open", "confirmed", add, at, detail)
        elif before and not d.causes:
            self._emit(slot, self._fault_type(slot), "clear", "confirmed", reason, at, detail)

    def _trigger(self, slot: int, detail: Mapping[str, float | str]) -> str:
        """Which condition opened a fire alarm (from the evidence)."""
        thr = self.cfg.thr

        def val(name: str) -> float:
            v = detail.get(name)
            return v if isinstance(v, float) else math.nan

        if val("obscuration") >= thr(slot, "obscuration_alarm"):
            return "obscuration"
        if val("temperature") >= thr(slot, "static_c"):
            return "static_heat"
        if val("temperature_rate") >= thr(slot, "rate_of_rise_c_per_min"):
            return "rate_of_rise"
        return "combined"

    def _verify_ms(self, slot: int) -> int:
        return int(self.cfg.thr(slot, "verification_s") * 1000)

    # --- fire ----------------------------------------------------------------
    def _open_fire(
        self, slot: int, ts: int, reason: str, detail: Mapping[str, float | str]
    ) -> None:
        d = self._d(slot)
        d.fire = "pending"
        d.armed = True
        d.rearm_at = NEVER
        d.sup_at = None
        d.reverify_until = -NEVER
        optical = self.cfg.kind(slot) in OBS_KINDS and reason in ("obscuration", "device_alarm")
        spike_rows = p.SPIKE_MAX_SAMPLES if optical else 1
        d.win = _Window(ts, ts + self._verify_ms(slot), reason, spike_rows=spike_rows)
        self.pending.setdefault(self.cfg.zone(slot), set()).add(slot)
        self._emit(slot, "fire", "open", "pending", reason, ts, detail)

    def _confirm_fire(
        self,
        slot: int,
        at: int,
        reason: str,
        detail: Mapping[str, float | str],
        related: tuple[int, ...] = (),
    ) -> None:
        d = self._d(slot)
        d.fire = "confirmed"
        d.win = None
        self.pending.get(self.cfg.zone(slot), set()).discard(slot)
        self._emit(slot, "fire", "verdict", "confirmed", reason, at, detail, related)

    def _resolve_fire(self, slot: int) -> None:
        """The verification window has ended: decide from what it saw."""
        d = self._d(slot)
        w = d.win
        assert w is not None
        detail: dict[str, float | str] = {
            "samples_above": float(w.n_above),
            "window_s": (w.deadline - w.opened) / 1000.0,
        }
        if d.last_steam >= w.opened - p.STEAM_MEMORY_MS:
            verdict, reason = "suppressed", "steam_signature"
        elif (
            w.hovering or w.dipping or (self.cfg.kind(slot) == KIND_MULTI and w.smouldering)
        ) and self._extend(slot, w, hover=True):
            # Under the alarm level but still at pre-alarm level: not back to
            # clean air as a spike or a spent aerosol would be, but hovering
            # around the level as a turbulent smouldering fire does; or at the
            # level after one fast fall (a spray on its way out, or a fire's
            # turbulence). One more window; a reading at the alarm level in it
            # that is not falling fast confirms.
            return
        elif w.rows and not w.last_alarm and w.hot:
            # A heat detector's ceiling still within a few degrees of its
            # static level: it stayed hot (a fire at the edge of its plume),
            # where a blast of hot air or EMI falls back to the room's air.
            verdict, reason = "confirmed", w.persisted
        elif w.rows and not w.last_alarm:
            # Back under the alarm level by the window's end: a spike (insect,
            # EMI) or an aerosol that decays (cooking). Persistence means the
            # signal is still at alarm level when verification ends; the
            # device's own alarm event does not stand in for a reading.
            verdict = "suppressed"
            reason = "transient" if w.n_above <= p.SPIKE_MAX_SAMPLES else "aerosol_decay"
            if self._puffs(slot, w):
                verdict, reason = "confirmed", "smoke_puffs"
        elif w.n_above <= p.SPIKE_MAX_SAMPLES and w.rows >= 2 and w.prev_below:
            # One sample at the level at the window's end after a clean one (back
            # under the pre-alarm level), and at most one before: two unrelated
            # spikes (EMI, a puff of dust), not a signal that stayed. Should it
            # stay, its next reading opens again. After a reading that hovered
            # at pre-alarm level the signal never left: persistence.
            verdict, reason = "suppressed", "transient"
            if self._puffs(slot, w):
                verdict, reason = "confirmed", "smoke_puffs"
        elif w.falling:
            # Still at the alarm level but emptying as fast as a flaming fire
            # fills the chamber, on two consecutive readings: a spray or a puff
            # of fumes on its way out. If it is still there a window later, the
            # device opens again (`rearm_at`).
            verdict, reason = "suppressed", "aerosol_decay"
            if self._puffs(slot, w):
                verdict, reason = "confirmed", "smoke_puffs"
        elif self.cfg.kind(slot) == KIND_MULTI and w.rows and not w.evidence and w.warm:
            verdict, reason = "confirmed", "combined"
        elif self.cfg.kind(slot) == KIND_MULTI and w.rows and not w.evidence:
            # A thick aerosol with nothing else yet, or one still growing fast
            # at the window's end (a flaming fire's smoke, before its heat
            # reaches the ceiling; fumes stop growing): one more window for the
            # heat or CO a fire behind it brings (params: MULTI_AEROSOL_THICK).
            if (w.thick or w.growing) and self._extend(slot, w, hover=False):
                return
            verdict, reason = "suppressed", "aerosol_signature"
        else:
            # Fast growth is the optical channel alone: a cooking or steam burst
            # grows as fast as a flaming fire for a while, then falls back. It
            # names the verdict of a signal that persisted; it never confirms
            # before the window's end (only an independent channel does).
            verdict, reason = "confirmed", w.persisted
        if verdict == "confirmed":
            self._confirm_fire(slot, w.deadline, reason, detail)
            return
        self._suppress_fire(slot, w, reason, detail)

    def _suppress_fire(
        self, slot: int, w: _Window, reason: str, detail: Mapping[str, float | str]
    ) -> None:
        """The window ends suppressed: the device re-arms as its verdict says."""
        d = self._d(slot)
        d.fire = ""
        d.win = None
        d.armed = False
        d.sup_bits = d.bits & _REARM
        if w.falling:
            d.rearm_at = w.deadline + self._verify_ms(slot)
        elif reason == "transient" and w.last_alarm:  # a lone last sample: re-armed
            d.rearm_at = w.deadline
        else:
            d.rearm_at = NEVER
        d.sup_at = w.deadline
        d.judged = [*d.judged[-(_JUDGED_KEPT - 1) :], (w.opened, w.deadline)]
        if reason in ("transient", "aerosol_decay") and not w.falling:
            d.reverify_until = w.deadline + int(p.REVERIFY_S * 1000)
        self.pending.get(self.cfg.zone(slot), set()).discard(slot)
        self._emit(slot, "fire", "verdict", "suppressed", reason, w.deadline, detail)

    def _puffs(self, slot: int, w: _Window) -> bool:
        """A smoke-only detector that smoke has been reaching in puffs for
        minutes before this window (params.PUFFS_*): its passing signal is a
        smouldering fire's, not a transient."""
        if self.cfg.kind(slot) != KIND_SMOKE:
            return False
        d = self._d(slot)
        lo = w.opened - int(p.PUFFS_LOOKBACK_S * 1000)
        hi = w.opened - int(p.PUFFS_LEAD_S * 1000)
        puffs = [t for t in d.pre_opens if lo <= t <= hi]
        # Back in clean air since the first of them: separate visits (an
        # insect), not smoke that keeps reaching it.
        return len(puffs) >= p.PUFFS_MIN and d.clean_at < puffs[0]

    def _extend(self, slot: int, w: _Window, hover: bool) -> bool:
        """Give the window its second part (once, never past VERIFICATION_MAX_S
        in all); False when it had it already or there is no room."""
        verify = self._verify_ms(slot)
        more = min(verify, int(p.VERIFICATION_MAX_S * 1000) - verify)
        if w.extended or more <= 0:
            return False
        w.deadline += more
        w.extended = True
        w.hover = hover
        return True

    def _zone_corroboration(self, slot: int, ts: int) -> tuple[str, tuple[int, ...]]:
        """Corroboration from the zone: a call point, or a second detector at
        the alarm level within COINCIDENCE_MS whose own signal is not a nuisance
        signature (two-detector dependency, EN 54-2 7.12: a second alarm, not a
        pre-alarm; a neighbour at pre-alarm level sees the same spray or
        cooking fumes diluted, or sits there with a dusty chamber). Two
        multi-criteria detectors that both see an aerosol with no independent
        evidence (steam: humidity without heat or CO; cooking fumes or dust:
        obscuration without CO or heat) are one nuisance seen twice, not
        corroboration of each other. A smoke-only or heat detector shows no
        signature a reading can prove, so its alarm always counts (recall
        first)."""
        z = self.cfg.zone(slot)
        cps = self.callpoints.get(z)
        if cps:
            return "call_point", tuple(sorted(cps))
        partners = tuple(
            sorted(
                y
                for y, (t, signed, weak) in self.act.get(z, {}).items()
                # (activity after `ts`: a late row's neighbours moved on since;
                # in order it had not happened yet)
                if y != slot and 0 <= ts - t <= p.COINCIDENCE_MS and not signed and not weak
            )
        )
        if partners:
            return "coincidence", partners
        return "", ()

    def _zone_check(self, zone: int, ts: int, detail: Mapping[str, float | str]) -> None:
        """Confirm every pending fire of the zone that the zone now corroborates."""
        for x in sorted(self.pending.get(zone, ())):
            # A window that ended before `ts` is judged first (it may go on
            # hovering), however long its verdict waited to be noticed: every
            # reading of its device before `ts` has been shown (zone order),
            # unless its clock is so far behind that the zone does not wait for it.
            if ts - self._d(x).last_row <= p.ZONE_HOLD_MAX_MS:
                self.due(x, ts - 1)
            w = self._d(x).win
            if w is not None and w.reason == PANEL_TEST_REASON:
                continue  # a walk test's alarm waits for a person, corroborating nothing
            if w is None or w.deadline <= ts or w.opened > ts:
                continue  # its window is over (its own reading at the last ms may
                # already have resolved it; it resolves on its own), or opened
                # after this moment (a late neighbour's row: in order it came first)
            reason, related = self._zone_corroboration(x, ts)
            if reason == "coincidence":  # its own reading; a call point's press is the why
                self._confirm_fire(x, ts, reason, self._d(x).active_detail or detail, related)
            elif reason:
                self._confirm_fire(x, ts, reason, detail, related)
            if reason == "coincidence":
                self._confirm_partners(x, ts, related, detail)

    def _confirm_partners(
        self, slot: int, ts: int, partners: tuple[int, ...], detail: Mapping[str, float | str]
    ) -> None:
        """A fire confirmed by coincidence confirms the fire alarms of every
        device that took part (contract section 6): a partner still pending,
        and one whose window suppressed it within COINCIDENCE_MS of `ts` (its
        verification ended before the second detector's activity came): that
        one opens again, confirmed. A partner whose window is over but not yet
        resolved (its next reading was a no-op the engine skipped, or is still
        to come) gets its window's own verdict first, so the answer does not
        depend on when the window was closed."""
        group = {slot, *partners}
        for y in partners:
            d = self._d(y)
            related = tuple(sorted(group - {y}))
            own = d.active_detail or detail
            if d.fire == "pending" and d.win is not None and d.win.deadline <= ts:
                self._resolve_fire(y)
            if d.fire == "pending":
                self._confirm_fire(y, ts, "coincidence", own, related)
            elif d.fire == "" and d.sup_at is not None and abs(ts - d.sup_at) <= p.COINCIDENCE_MS:
                d.fire, d.sup_at = "confirmed", None
                self._emit(y, "fire", "open", "confirmed", "coincidence", ts, own, related)

    # --- entry points --------------------------------------------------------
    def due(self, slot: int, now: int, silent: bool = False) -> None:
        """Resolve the device's windows that ended at or before its time `now`;
        a lone sample's waits for the device's next reading unless it went
        `silent`."""
        d = self.dev.get(slot)
        if d is None:
            return
        while d.win is not None and d.win.deadline <= now:  # an extended window may
            if d.win.awaits_sample and not silent:
                break
            self._resolve_fire(slot)  # also be over by `now`
        if d.elec == "pending" and d.elec_clear_at <= min(now, d.elec_deadline):
            self._elec_gone(slot, d.elec_clear_at)
        if d.elec == "pending" and d.elec_deadline <= now and (silent or not d.elec_lone):
            self._elec_confirm(
                slot, d.elec_deadline, {"persisted_s": (d.elec_deadline - d.elec_opened) / 1000.0}
            )

    def pending_slots(self) -> list[int]:
        out = {s for z in self.pending.values() for s in z}
        out |= self.elec_pending
        return sorted(out)

    def deadline(self, slot: int) -> int | None:
        d = self.dev.get(slot)
        if d is None:
            return None
        ds = [d.win.deadline] if d.win is not None else []
        if d.elec == "pending":
            ds.append(min(d.elec_deadline, d.elec_clear_at))
        return min(ds) if ds else None

    def row(self, slot: int, ts: int, flags: int, detail: Mapping[str, float | str]) -> None:
        """One reading of a device (already known to matter)."""
        self.due(slot, ts - 1)  # windows that ended before this reading
        kind = self.cfg.kind(slot)
        if kind in FIRE_KINDS:
            self._fire_row(slot, kind, ts, flags, detail)
        elif kind == KIND_ELECTRICAL:
            self._elec_row(slot, ts, flags, detail)
        elif kind == KIND_EVAC:
            if flags & Flag.LAMP_FAIL:
                self._causes(slot, ts, add="lamp_failure", detail=detail)
            elif flags & Flag.LAMP_OK:
                self._causes(slot, ts, remove=("lamp_failure",), detail=detail)
            if flags & Flag.BATT_LOW:
                self._causes(slot, ts, add="battery_low", detail=detail)
            elif flags & Flag.BATT_OK:
                self._causes(slot, ts, remove=("battery_low",), detail=detail)
            if flags & Flag.BATT_DEPL:
                self._causes(slot, ts, add="battery_depleting", detail=detail)
            elif flags & Flag.BATT_CHARGED:
                self._causes(slot, ts, remove=("battery_depleting",), detail=detail)
        self.due(slot, ts)  # a reading at the window's last ms still counted

    def _fire_row(
        self, slot: int, kind: int, ts: int, flags: int, detail: Mapping[str, float | str]
    ) -> None:
        d = self._d(slot)
        zone = self.cfg.zone(slot)
        active = bool(flags & (_PRE | _ALARM))
        multi = kind == KIND_MULTI
        d.run = d.run + 1 if active else 0
        d.last_row = max(d.last_row, ts)
        if active:
            d.active_detail = detail
        if active and d.run >= _PARTNER_RUN:
            # Zone activity (a neighbour's corroboration) only once it lasted
            # two readings: a one-sample spike (EMI hitting several detectors,
            # an insect) corroborates nothing.
            signed = multi and not flags & _EVIDENCE
            self.act.setdefault(zone, {})[slot] = (ts, signed, not flags & _ALARM)
        if flags & Flag.STEAM and not flags & Flag.JUMP:  # (EMI jumps every channel)
            d.last_steam = ts
        prev_bits, d.bits = d.bits, flags
        d.sup_bits &= flags  # a re-arming bit that went away re-arms when it returns
        if kind in OBS_KINDS:
            if flags & _PRE and not d.pre:
                d.pre = True
                if not flags & Flag.JUMP:  # (EMI crosses it too, on every channel)
                    keep = ts - _PUFFS_KEPT_MS
                    d.pre_opens = [*(t for t in d.pre_opens if t >= keep), ts]
                self._emit(slot, "pre_alarm", "open", "confirmed", "obscuration", ts, detail)
            elif d.pre and flags & Flag.PRE_CLEAR:
                d.pre = False
                obs = detail.get("obscuration", math.nan)
                if isinstance(obs, float) and obs < p.CLEAN_AIR_OBS:
                    d.clean_at = ts  # straight back into clean air
                self._emit(slot, "pre_alarm", "clear", "confirmed", "condition_gone", ts, detail)
            if flags & Flag.DRIFT:
                self._causes(slot, ts, add="drift_limit", detail=detail)
            else:
                self._causes(slot, ts, remove=("drift_limit",), detail=detail)
        new = flags & _REARM & ~d.sup_bits if multi else 0
        if ts - d.last_steam <= p.STEAM_MEMORY_MS:
            new &= ~Flag.WARM  # a shower's warm air is no new evidence (steam memory)
        rearm = flags & (Flag.EDGE | _CORROB) or new
        rearm = rearm or ts >= d.rearm_at
        if d.fire == "" and flags & _ALARM and (d.armed or rearm):
            # (not a reading on which every channel jumped: EMI, which repeats)
            again = kind == KIND_SMOKE and flags & Flag.EDGE and ts <= d.reverify_until
            # (not after the signal went back to clean air since that window,
            # the latest judged, opened: a second visit, not smoke that never left)
            again = again and not flags & Flag.JUMP and d.clean_at < d.judged[-1][0]
            self._open_fire(slot, ts, self._trigger(slot, detail), detail)
            if again:
                # Alarm verification's confirmation period: the detector alarms
                # again soon after its window was judged a transient or a
                # passing aerosol (a smouldering fire's smoke in a draught).
                self._confirm_fire(slot, ts, "reverified", detail)
        # A reading older than the window (its event was processed first) is
        # not in it.
        in_window = d.fire == "pending" and d.win is not None and ts >= d.win.opened
        if in_window:
            assert d.win is not None
            if d.win.rows == 0:  # its first reading (the one that opened it, or after
                # the device's own alarm event): out of clean air, or not
                d.win.from_clean = not prev_bits & (_PRE | _ALARM)
            # (the reading a lone sample waited for: always shown, its alarm bit
            # flips; a later reading with the same bits would not be)
            deciding = kind == KIND_HEAT and d.win.awaits_sample and ts >= d.win.deadline
            self._window_row(d.win, flags)
            if deciding:
                near = self.cfg.thr(slot, "static_c") - p.HEAT_NEAR_C
                d.win.hot = _at_least(detail, "temperature", near)
            if ts > d.win.deadline:  # the reading a lone sample waited for decides now
                d.win.deadline = ts
            if flags & Flag.HEAT:
                self._confirm_fire(slot, ts, "rate_of_rise", detail)
            elif flags & Flag.CO:
                self._confirm_fire(slot, ts, "co_rise", detail)
            elif d.win.extended and flags & _EVIDENCE:
                # The second window waited only for this: the signal persisted
                # through the first one.
                self._confirm_fire(slot, ts, d.win.persisted, detail)
            elif (
                d.win.hover
                and flags & _ALARM
                and not flags & Flag.DROP
                and (not multi or d.win.evidence)
            ):
                # Back at the alarm level after hovering under it: it never
                # left (a multi-criteria detector still needs its evidence).
                self._confirm_fire(slot, ts, d.win.persisted, detail)
        if active:  # zone activity changed: the zone's pending fires may now coincide
            self._zone_check(zone, ts, detail)

    @staticmethod
    def _window_row(w: _Window, flags: int) -> None:
        """Count one reading of the device into its open verification window."""
        alarm = bool(flags & _ALARM)
        w.n_above += alarm
        w.prev_below = w.below
        w.last_alarm = alarm
        w.below = bool(flags & Flag.BELOW)
        w.dropping = bool(flags & Flag.DROP)
        w.warm = bool(flags & Flag.WARM)
        w.rows += 1
        w.evidence |= bool(flags & _EVIDENCE)
        w.fast |= bool(flags & Flag.FAST)
        w.falling = bool(flags & Flag.FALL)
        w.thick |= bool(flags & Flag.THICK)
        w.growing = bool(flags & Flag.GROWING)
        w.co_seen |= bool(flags & Flag.COX)

    def _elec_confirm(self, slot: int, at: int, detail: Mapping[str, float | str]) -> None:
        d = self._d(slot)
        d.elec = "confirmed"
        self.elec_pending.discard(slot)
        self._emit(slot, "electrical", "verdict", "confirmed", d.elec_reason, at, detail)

    def _elec_gone(self, slot: int, at: int) -> None:
        d = self._d(slot)
        d.elec = ""
        d.elec_clear_at = NEVER
        detail = dict(d.elec_clear_detail or {})
        # (not after a motor's start: params.INRUSH_CURRENT_RATIO)
        running = detail.get("current")
        inrush = isinstance(running, float) and 0 < running * p.INRUSH_CURRENT_RATIO <= (
            d.elec_open_current
        )
        recur = p.ELECTRICAL_RECUR_INTERVALS * self.cfg.interval_ms(slot)
        d.elec_recur_until = -NEVER if inrush else at + recur
        self.elec_pending.discard(slot)
        self._emit(slot, "electrical", "verdict", "suppressed", "transient", at, detail)

    def _elec_near(self, slot: int, detail: Mapping[str, float | str]) -> bool:
        """Still near a limit (params.ELECTRICAL_NEAR_FRACTION, CABLE_NEAR_C)."""
        rc = self.cfg.thr(slot, "residual_current_ma") * p.ELECTRICAL_NEAR_FRACTION
        cable = self.cfg.thr(slot, "cable_temperature_c") - p.CABLE_NEAR_C
        return _at_least(detail, "residual_current", rc) or _at_least(
            detail, "cable_temperature", cable
        )

    def _elec_row(self, slot: int, ts: int, flags: int, detail: Mapping[str, float | str]) -> None:
        d = self._d(slot)
        high = bool(flags & (Flag.RC | Flag.CABLE))
        if d.elec == "" and high:
            d.elec = "pending"
            d.elec_opened = ts
            d.elec_deadline = ts + self._verify_ms(slot)
            d.elec_clear_at = NEVER
            d.elec_reason = "residual_current" if flags & Flag.RC else "cable_overheat"
            d.elec_lone = True
            current = detail.get("current")
            d.elec_open_current = current if isinstance(current, float) else math.nan
            self.elec_pending.add(slot)
            self._emit(slot, "electrical", "open", "pending", d.elec_reason, ts, detail)
            if ts <= d.elec_recur_until:
                self._elec_confirm(slot, ts, detail)  # (params.ELECTRICAL_RECUR_INTERVALS)
        if d.elec != "pending":
            return
        # The reading after a lone sample decides, past the window's end or on
        # a monitor reporting more slowly than the clear period (an outside
        # check saw a 30 s monitor's inrush blip confirmed at the very reading
        # that showed it gone; a recheck, one reporting 2 s early).
        clear_ms = int(p.ELECTRICAL_CLEAR_S * 1000)
        waited = d.elec_lone and (ts >= d.elec_deadline or self.cfg.interval_ms(slot) > clear_ms)
        d.elec_lone = d.elec_lone and ts <= d.elec_opened
        if waited and not high and self._elec_near(slot, detail):
            high = True  # still near the limit: the condition hovers there, it stays
        if high:
            # (an intermittent fault comes back before it counts as gone:
            # still the same condition)
            d.elec_clear_at = NEVER
            if ts - d.elec_opened >= self.cfg.thr(slot, "persist_s") * 1000:
                self._elec_confirm(slot, ts, detail)
        elif flags & Flag.ELEC_BELOW and waited:
            d.elec_clear_detail = detail
            self._elec_gone(slot, ts)
        elif flags & Flag.ELEC_BELOW and d.elec_clear_at == NEVER:
            d.elec_clear_at = ts + clear_ms
            d.elec_clear_detail = detail

    def event(self, slot: int, ts: int, name: str, zone_effect: bool = True) -> None:
        """One device event (already past the lateness check).

        `zone_effect=False` (the engine): a call point's own confirmed alarm
        only; its effect on the zone's pending fires comes through
        `call_point_zone`, in the zone's event-time order."""
        self.due(slot, ts - 1)
        kind = self.cfg.kind(slot)
        d = self._d(slot)
        detail: dict[str, float | str] = {"event": name}
        if name in ("panel_fire", "panel_test", "panel_reset"):
            self._panel_event(slot, ts, name, kind)
        elif name == "fire_alarm" and kind in FIRE_KINDS:
            # The device's own decision: evidence, not a signature (the signature,
            # if any, is in its readings).
            prev = self.act.get(self.cfg.zone(slot), {}).get(slot)
            signed = prev is not None and prev[1] and abs(ts - prev[0]) <= p.COINCIDENCE_MS
            # (or its latest reading, lasting or not: one reading lost on the way
            # left the event unsigned, and cooking fumes confirmed by coincidence
            # in an outside check)
            signed = signed or (
                kind == KIND_MULTI
                and 0 <= ts - d.last_row <= p.COINCIDENCE_MS
                and _aerosol_alone(d.bits)
            )
            self.act.setdefault(self.cfg.zone(slot), {})[slot] = (ts, signed, False)
            if d.fire == "":
                self._open_fire(slot, ts, "device_alarm", detail)
            # A window already open keeps its counts: the event is evidence for
            # verification (zone activity), not a sample and not a verdict.
            self._zone_check(self.cfg.zone(slot), ts, detail)
        elif name == "activated" and kind == KIND_MCP:
            if d.fire != "confirmed":
                d.fire = "confirmed"
                self._emit(slot, "fire", "open", "confirmed", "call_point", ts, detail)
            if zone_effect:
                self.call_point_zone(slot, ts)
        elif name == "fault":
            self._causes(slot, ts, add="device_fault", detail=detail)
        elif name == "restore" and ts >= d.fault_at:
            # A restore dated before the fault opened (it arrived after the
            # device's readings had moved on) restored something else.
            self._causes(slot, ts, remove=tuple(d.causes), reason="restore", detail=detail)
        elif name == "self_test_fail" and kind == KIND_EVAC:
            self._causes(slot, ts, add="self_test_fail", detail=detail)
        elif name == "self_test_pass" and kind == KIND_EVAC:
            self._causes(slot, ts, remove=("self_test_fail",), detail=detail)
        # reset, emergency_start/end: states, not alarms.
        self.due(slot, ts)

    def call_point_zone(self, slot: int, ts: int) -> None:
        """A call point's press corroborates its zone: pending fires are
        confirmed (`call_point`), later ones at once. No-op once cleared."""
        if self._d(slot).fire != "confirmed":
            return
        zone = self.cfg.zone(slot)
        self.callpoints.setdefault(zone, set()).add(slot)
        self._zone_check(zone, ts, {"event": "activated"})

    def late_alarm_event(
        self, slot: int, ts: int, history: Sequence[tuple[int, int]], at: int
    ) -> None:
        """A detector's `fire_alarm` event that arrived after its readings had
        moved past its ts: judged as if it had come in order, against the
        device's readings since `ts` (`history`: (ts, flags) oldest first, the
        device's recent readings). A window that lies wholly in the past of a
        device that kept reporting is resolved at once, from those readings.
        `at`: its place in the device's arrival order (its ts, or the time of
        a later event of the device that came before it), where a batch that
        holds it with its readings shows it."""
        d = self._d(slot)
        if self.cfg.kind(slot) not in FIRE_KINDS:
            return
        detail: dict[str, float | str] = {"event": "fire_alarm"}  # as if in order
        zone = self.cfg.zone(slot)
        book = self.act.setdefault(zone, {})
        latest = book.get(slot)
        # Its zone activity as it stood at `ts`: what a neighbour's window
        # pending then saw (the event is evidence, not a signature).
        book[slot] = (ts, self._signed_before(slot, ts, history), False)
        if d.fire != "" or any(
            opened < ts <= deadline or opened <= at <= deadline for opened, deadline in d.judged
        ):
            # In order it came while an alarm of the device was open (still, or
            # in a window since judged, opened by the event it came behind at
            # the latest): evidence for the zone, nothing more.
            self._zone_check(zone, ts, detail)
        else:
            self._open_fire(slot, ts, "device_alarm", detail)
            w = d.win
            assert w is not None
            for t, flags in history:
                if t < ts or d.fire != "pending":
                    continue
                if t > w.deadline:
                    break
                self._window_row(w, flags)
                if flags & Flag.HEAT:
                    self._confirm_fire(slot, t, "rate_of_rise", detail)
                elif flags & Flag.CO:
                    self._confirm_fire(slot, t, "co_rise", detail)
            if d.fire == "pending":
                self._zone_check(zone, ts, detail)
            if d.fire == "pending" and w.rows == 0 and history and history[-1][0] >= w.deadline:
                # The device reported past the window without a reading in it
                # that the engine still holds: its readings were below alarm
                # (any alarm reading opens its own window); not a fire by the
                # event alone.
                w.rows, w.below = 1, True
        if latest is not None and latest[0] > ts:
            book[slot] = latest  # its later activity stays its latest

    def _signed_before(self, slot: int, ts: int, history: Sequence[tuple[int, int]]) -> bool:
        """Whether the device's zone activity just before `ts` (its readings at
        pre-alarm or alarm level, as `_fire_row` books them) was a nuisance
        signature, within COINCIDENCE_MS of `ts`."""
        multi = self.cfg.kind(slot) == KIND_MULTI
        run, last, signed = 0, -NEVER, False
        latest, latest_bits = -NEVER, 0
        for t, flags in history:
            if t >= ts:  # (a reading at `ts` itself comes after the event)
                break
            active = bool(flags & (_PRE | _ALARM))
            run = run + 1 if active else 0
            if active and run >= _PARTNER_RUN:
                last, signed = t, multi and not flags & _EVIDENCE
            latest, latest_bits = t, flags
        recent = ts - latest <= p.COINCIDENCE_MS
        return (signed and ts - last <= p.COINCIDENCE_MS) or (
            multi and recent and _aerosol_alone(latest_bits)
        )

    def let_go(self, slot: int) -> None:
        """The device leaves this machine (moved to a site another process holds)
        with its window open: the window ends at its newest reading, judged with
        what it saw. One or two samples waiting for their next reading are a
        spike to it: that reading now goes elsewhere, where the device starts
        afresh (a recheck saw a moved detector's insect confirmed as a fire
        when its window was judged as if it had gone silent)."""
        d = self.dev.get(slot)
        while d is not None and d.win is not None:
            w = d.win
            w.deadline = min(w.deadline, max(d.last_row, w.opened))
            if w.awaits_sample:
                detail: dict[str, float | str] = {
                    "samples_above": float(w.n_above),
                    "window_s": (w.deadline - w.opened) / 1000.0,
                }
                self._suppress_fire(slot, w, "transient", detail)
            else:
                self._resolve_fire(slot)
        if d is not None and d.elec == "pending" and d.elec_lone:
            d.elec_clear_detail = None
            self._elec_gone(slot, d.elec_opened)  # one sample: as a fire window's spike
        if d is not None and d.elec == "pending":
            self.silent(slot)  # (the condition lasted as long as it was heard)
        if d is not None and d.pre:  # nobody watches it there any more: not left active
            d.pre = False
            self._emit(slot, "pre_alarm", "clear", "confirmed", "condition_gone", d.last_row, {})

    def silent(self, slot: int) -> None:
        """The device went quiet (judged on arrival time by the engine):
        resolve its windows with what they saw."""
        dl = self.deadline(slot)
        while dl is not None:
            self.due(slot, dl, silent=True)
            nxt = self.deadline(slot)
            if nxt == dl:
                break
            dl = nxt

    def restart_clock(self, slot: int) -> None:
        """The device's clock stepped back (its windows already resolved): forget
        what is kept in its old event time (re-arming, steam memory, the suppressed
        fire's time), keep its latched alarms and fault causes."""
        d = self._d(slot)
        d.last_steam = -(2**62)
        d.rearm_at = NEVER
        d.sup_at = None
        d.reverify_until = -NEVER
        d.elec_recur_until = -NEVER
        d.pre_opens = []
        d.clean_at = -NEVER
        d.judged = []
        d.last_row = -NEVER
        d.armed = True
        d.run = 0

    def clear(self, slot: int, typ: str) -> None:
        d = self._d(slot)
        if typ == "fire":
            self.pending.get(self.cfg.zone(slot), set()).discard(slot)
            self.callpoints.get(self.cfg.zone(slot), set()).discard(slot)
            d.fire, d.win, d.armed, d.sup_at = "", None, True, None
        elif typ == "pre_alarm":
            d.pre = False
        elif typ == "electrical":
            d.elec = ""
            self.elec_pending.discard(slot)
        elif typ in ("fault", "evac_fault"):
            d.causes.clear()

    def settle_replay(self, slot: int) -> None:
        """After a replay of the device's recent history (a takeover): keep what
        history taught (zone activity, steam memory, the signal's bits and runs,
        whether it is armed), but no alarm: the open ones are the database's and
        are restored next. A pending window the replay rebuilt, with its counts,
        is kept for the pending fire the database holds (`restore`)."""
        d = self._d(slot)
        d.replayed = d.win if d.fire == "pending" else None
        zone = self.cfg.zone(slot)
        self.pending.get(zone, set()).discard(slot)
        self.callpoints.get(zone, set()).discard(slot)
        self.elec_pending.discard(slot)
        d.fire, d.win, d.pre = "", None, False
        d.elec, d.elec_opened, d.elec_deadline, d.elec_reason = "", 0, 0, ""
        d.elec_clear_at = NEVER
        d.causes = set()
        d.fault_at = -NEVER

    def restore(self, slot: int, typ: str, verdict: str, opened_ms: int, reason: str = "") -> None:
        if verdict == "suppressed":
            return
        d = self._d(slot)
        if typ == "fire":
            if verdict == "pending":
                d.fire = "pending"
                end = NEVER if reason in PANEL_REASONS else opened_ms + self._verify_ms(slot)
                rebuilt, d.replayed = d.replayed, None
                if rebuilt is not None and rebuilt.opened == opened_ms:
                    d.win = rebuilt  # what the window saw before the takeover counts
                else:
                    d.win = _Window(opened_ms, end, reason or "restored")
                self.pending.setdefault(self.cfg.zone(slot), set()).add(slot)
            else:
                d.fire, d.win = "confirmed", None
                if self.cfg.kind(slot) == KIND_MCP:
                    self.callpoints.setdefault(self.cfg.zone(slot), set()).add(slot)
        elif typ == "pre_alarm":
            d.pre = True
        elif typ == "electrical":
            d.elec = verdict
            d.elec_opened = opened_ms
            d.elec_clear_at = NEVER
            d.elec_lone = False  # (what it saw is not known: judged at its deadline)
            d.elec_deadline = (
                NEVER if reason in PANEL_REASONS else opened_ms + self._verify_ms(slot)
            )
            d.elec_reason = reason or "residual_current"
            if verdict == "pending":
                self.elec_pending.add(slot)
        elif typ in ("fault", "evac_fault"):
            # A cause a reading or event can remove keeps its name (a restored
            # `self_test_fail` clears on `self_test_pass`); the rest need `restore`.
            d.causes.add(reason if reason in RESTORABLE_CAUSES else "device_fault")
            d.fault_at = opened_ms

    # --- panels (GB/T 26875.3 gateway) and operator verdicts -----------------
    def _panel_event(self, slot: int, ts: int, name: str, kind: int) -> None:
        """`panel_fire`: a panel point's fire alarm, pending until a second point of
        the zone or a person corroborates it; an electrical-fire monitor's opens an
        `electrical` alarm the same way. `panel_test`: the same in test mode, no
        evidence for the zone (a walk test of two points is not a coincidence).
        `panel_reset`: the panel was reset, so a still-pending alarm is
        suppressed (a confirmed one stays latched)."""
        d = self._d(slot)
        zone = self.cfg.zone(slot)
        detail: dict[str, float | str] = {"event": name}
        if name == "panel_reset":
            if d.fire == "pending":
                d.fire, d.win, d.armed = "", None, True
                self.pending.get(zone, set()).discard(slot)
                self._emit(slot, "fire", "verdict", "suppressed", "panel_reset", ts, detail)
            if d.elec == "pending":
                d.elec = ""
                self.elec_pending.discard(slot)
                self._emit(slot, "electrical", "verdict", "suppressed", "panel_reset", ts, detail)
            return
        test = name == "panel_test"
        reason = PANEL_TEST_REASON if test else PANEL_FIRE_REASON
        if kind == KIND_ELECTRICAL:
            if d.elec == "pending" and d.elec_reason == PANEL_TEST_REASON and not test:
                # Out of test mode and still in alarm: now a real one.
                self._emit(slot, "electrical", "verdict", "suppressed", TEST_ENDED_REASON, ts)
                d.elec = ""
            if d.elec == "":
                d.elec, d.elec_opened, d.elec_deadline = "pending", ts, NEVER
                d.elec_clear_at = NEVER
                d.elec_reason = reason
                self.elec_pending.add(slot)
                self._emit(slot, "electrical", "open", "pending", reason, ts, detail)
            return
        w = d.win
        if d.fire == "pending" and w is not None and w.reason == PANEL_TEST_REASON and not test:
            self._emit(slot, "fire", "verdict", "suppressed", TEST_ENDED_REASON, ts)
            d.fire, d.win = "", None
            self.pending.get(zone, set()).discard(slot)
        if not test:
            self.act.setdefault(zone, {})[slot] = (ts, False, False)
        if d.fire == "":
            d.fire = "pending"
            d.armed = True
            d.sup_at = None
            d.win = _Window(ts, NEVER, reason)
            self.pending.setdefault(zone, set()).add(slot)
            self._emit(slot, "fire", "open", "pending", reason, ts, detail)
        if not test:
            self._zone_check(zone, ts, detail)

    def operator_verdict(self, slot: int, typ: str, verdict: str) -> None:
        """A person's verdict on a pending alarm, already stored by the API: the
        stored verdict is the truth, whatever the engine decided meanwhile (a
        window that ended before ingest heard of the verdict)."""
        d = self._d(slot)
        zone = self.cfg.zone(slot)
        if typ == "fire":
            self.pending.get(zone, set()).discard(slot)
            d.win = None
            d.fire = "confirmed" if verdict == "confirmed" else ""
            d.armed = True
            d.sup_at = None
        elif typ == "electrical":
            self.elec_pending.discard(slot)
            d.elec = "confirmed" if verdict == "confirmed" else ""

    def open_alarms(self) -> dict[tuple[int, str], str]:
        """(slot, type) -> verdict of every open alarm the engine knows."""
        out: dict[tuple[int, str], str] = {}
        for slot, d in self.dev.items():
            if d.fire:
                out[(slot, "fire")] = d.fire
            if d.pre:
                out[(slot, "pre_alarm")] = "confirmed"
            if d.elec:
                out[(slot, "electrical")] = d.elec
            if d.causes:
                out[(slot, self._fault_type(slot))] = "confirmed"
        return out
