"""The stateful wrapper: per-device arrays indexed by slot, one call per batch.

`update` (kernel state: lateness watermark, drift baseline, look-back ring,
previous flags) is separate from `score` (condition bits) as in stumpy's
`stumpi` / river's anomaly detectors; the alarm state machine
(`detection.machine`) then sees only the rows that can change something.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from detection import kernel as k
from detection import params as p
from detection.machine import Machine, row_detail
from detection.records import AlarmChange, Events, Readings
from firesafe import contract

_RI: Final = contract.READING_INDEX
_NR: Final = len(contract.READINGS)
I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
_KIND_EVENTS: Final = tuple(frozenset(contract.ALL_KIND_EVENTS[kd]) for kd in contract.ALL_KINDS)
# A fire alarm is never lost to lateness (a resend, a panel's backlog, a clock
# reset): dated before the device's newest event, it still counts, in arrival
# order; other late events are dropped (a restore older than its fault). Nor
# to a clock far ahead: taken at the arrival clock instead of quarantined.
_NEVER_LATE: Final = frozenset({"activated", "fire_alarm", "panel_fire", "panel_test"})


def resolve_thresholds(kind: str, overrides: Mapping[str, float]) -> dict[str, float]:
    """A device's effective thresholds: kind defaults, registry overrides (clamped).

    Names the kind does not use are ignored. The drift compensation limit is
    capped at DRIFT_LIMIT_MAX_FRACTION of the alarm level (EN 54-7 4.8 b), so a
    lowered alarm level lowers the default limit with it.
    """
    out = dict(p.THRESHOLD_DEFAULTS.get(kind, {}))  # gateway kinds have none
    for name, value in overrides.items():
        if name in out and isinstance(value, int | float) and np.isfinite(value):
            lo, hi = p.THRESHOLD_LIMITS.get(name, (-np.inf, np.inf))
            out[name] = float(min(max(float(value), lo), hi))
    if "drift_limit" in out:
        cap = p.DRIFT_LIMIT_MAX_FRACTION * out["obscuration_alarm"]
        out["drift_limit"] = min(out["drift_limit"], cap)
    return out


class _Config:
    """The machine's view of the registry arrays."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine

    def kind(self, slot: int) -> int:
        return int(self.e.kind[slot])

    def zone(self, slot: int) -> int:
        return int(self.e.zone[slot])

    def thr(self, slot: int, name: str) -> float:
        return float(self.e.thr[name][slot])

    def interval_ms(self, slot: int) -> int:
        return int(self.e.interval_ms[slot])


class Engine:
    """Vectorised detection for a whole estate. See the package docstring."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = 0
        h = p.LOOKBACK_SAMPLES
        self.kind = np.empty(0, np.int8)  # -1: not configured (its rows are ignored)
        self.zone = np.empty(0, np.int64)
        self.thr: dict[str, NDArray[np.float64]] = {n: np.empty(0) for n in p.THRESHOLD_NAMES}
        self.last_ts = np.empty(0, np.int64)  # newest reading fed to detection
        self.last_event_ts = np.empty(0, np.int64)
        self.last_flags = np.empty(0, np.uint32)
        # Fire state, one 64-byte row per device (one gather and one scatter
        # per batch): baseline, epoch minimum, previous obscuration, the three
        # quiet bounds, epoch index; `base_b` etc. are views of its columns.
        self.fst = np.empty((0, _FW))
        self._set_views()
        self.base_drift = np.empty(0, np.bool_)
        self.base_changed = np.empty(0, np.bool_)  # baseline moved since `drain_baselines`
        # Look-back ring, one contiguous (H, RING_W) block per device: a row's
        # write is one 40-byte record. ts is stored as float64 (exact for ms).
        self.ring = np.empty((0, h, k.RING_W))
        self.ring_head = np.empty(0, np.uint8)  # small: stays in cache
        # Quiet-path bounds (fst): a lower bound of each rate column in the ring
        # (+inf: none); q: the rise below which the rate provably sets no bit.
        self.q = [np.empty(0) for _ in range(3)]
        self.last_off = np.empty(0, np.int64)  # evac: latest reading on battery
        # evac: the current discharge (first reading on battery: ts, charge)
        self.on_batt = np.empty(0, np.bool_)
        self.dis_t0 = np.empty(0, np.int64)
        self.dis_b0 = np.empty(0)
        # Flags of the readings in the look-back ring (a late `fire_alarm`
        # event is judged against them).
        self.fring = np.empty((0, h), np.uint32)
        # Arrival-time bookkeeping (silence) and the event-time quarantine.
        self.interval_ms = np.empty(0, np.int64)
        self.last_arrival = np.empty(0, np.int64)
        self.q_off = np.empty(0, np.int64)  # offset (ts - arrival) of the last quarantined
        self.q_run = np.empty(0, np.int32)  # consecutive quarantined readings that agree
        # How far ahead of the arrival clock the device's clock was accepted to
        # run (SKEW_ACCEPT_READINGS agreeing readings); 0 once it is on time.
        self.q_skew = np.empty(0, np.int64)
        self.quarantine_count = np.empty(0, np.int64)  # per device, for its state
        self.b_off = np.empty(0, np.int64)  # offset (ts - arrival) of the last reading far behind
        self.b_last = np.empty(0, np.int64)  # ts of that reading
        self.b_run = np.empty(0, np.int32)  # consecutive such readings that agree
        self._grow(capacity)
        self.arrival_clock = k.TS_NONE
        self.quarantined = 0  # readings and events kept out of detection (far future)
        self._q_live = False  # some device has quarantined readings in a row
        self._b_live = False  # some device has readings far behind its clock in a row
        self.clock_steps = 0  # devices whose clock was taken as stepped back
        self.stepped_back: list[int] = []  # their slots, until the caller drains them
        # Per zone: detectors' rows and events not yet shown to the machine (a
        # heap), how far the zone has been shown, and its detectors' slots.
        self._zq: dict[int, list[tuple[int, int, int, int, Any]]] = {}
        # Per device, the times of its items in those queues (a heap): what it
        # holds is asked with every batch, and scanning the queues instead
        # grows with everything held (bench/detection_lag.py: 12 ms against
        # 2 ms per batch with 28,000 readings held for late neighbours).
        self._held: dict[int, list[int]] = {}
        self._zrel: dict[int, int] = {}
        self._zmembers: dict[int, I64] = {}
        self._seq = 0
        self.machine = Machine(_Config(self))
        # Devices whose next reading at or after a ts must reach the machine.
        self._force: dict[int, int] = {}
        self.late_readings = 0
        self.late_events = 0
        self._uniform: dict[int, dict[str, float]] = {}
        self._n_drift = 0  # devices at the drift-compensation limit

    # --- configuration ----------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity, 16)
        old = self.capacity

        def grow(a: NDArray[Any], fill: object) -> NDArray[Any]:
            out = np.empty((cap, *a.shape[1:]), a.dtype)
            out[:old] = a
            out[old:] = fill
            return out

        self.kind = grow(self.kind, -1)
        self.zone = grow(self.zone, -1)
        self.thr = {n: grow(a, np.nan) for n, a in self.thr.items()}
        self.last_ts = grow(self.last_ts, k.TS_NONE)
        self.last_event_ts = grow(self.last_event_ts, k.TS_NONE)
        self.last_flags = grow(self.last_flags, 0)
        # 64-byte aligned, so a device's row is one cache line.
        buf = np.empty(cap * _FW + _FW)
        off = (-buf.ctypes.data % 64) // 8
        fst = buf[off : off + cap * _FW].reshape(cap, _FW)
        fst[:old] = self.fst
        fst[old:] = _FST_INIT
        self.fst = fst
        self._set_views()
        self.base_drift = grow(self.base_drift, False)
        self.base_changed = grow(self.base_changed, False)
        ring = grow(self.ring, np.nan)
        ring[old:, :, 0] = float(k.TS_NONE)
        self.ring = ring
        self._ring_rec = ring.reshape(-1).view(np.dtype((np.void, 8 * k.RING_W)))
        self.ring_head = grow(self.ring_head, 0)
        self.q = [grow(a, -np.inf) for a in self.q]
        self.last_off = grow(self.last_off, k.TS_NONE)
        self.on_batt = grow(self.on_batt, False)
        self.dis_t0 = grow(self.dis_t0, k.TS_NONE)
        self.dis_b0 = grow(self.dis_b0, np.nan)
        self.fring = grow(self.fring, 0)
        self.interval_ms = grow(self.interval_ms, 10_000)
        self.last_arrival = grow(self.last_arrival, k.TS_NONE)
        self.q_off = grow(self.q_off, 0)
        self.q_run = grow(self.q_run, 0)
        self.q_skew = grow(self.q_skew, 0)
        self.quarantine_count = grow(self.quarantine_count, 0)
        self.b_off = grow(self.b_off, 0)
        self.b_last = grow(self.b_last, k.TS_NONE)
        self.b_run = grow(self.b_run, 0)
        self._mark = np.zeros(cap, np.int32)
        self.capacity = cap

    def _set_views(self) -> None:
        fst = self.fst
        self._fst_rec = fst.reshape(-1).view(_FREC)
        self.base_b = fst[:, _B]  # drift-compensation baseline (%/m)
        self.base_m = fst[:, _M]  # the epoch's minimum obscuration
        self.last_obs = fst[:, _OBS]  # previous obscuration (step rate, fast growth)
        self.lb = [fst[:, _LB + j] for j in range(3)]  # temperature, co, humidity
        self.base_ep = fst[:, _EP]  # epoch index since the anchor, exact as float64
        self.base_anchor = fst[:, _AN]  # first reading's ts (ms): where epochs start

    def configure(
        self,
        slots: ArrayLike,
        kinds: ArrayLike,
        zones: ArrayLike,
        thresholds: Sequence[Mapping[str, float]],
        intervals_ms: ArrayLike | None = None,
    ) -> None:
        """(Re)configure devices; keeps the state of already-known slots.

        kinds: index in contract.KINDS; zones: ingest's integer key of
        (site, building, floor, zone); thresholds: registry overrides per
        device (names in params.THRESHOLD_DEFAULTS, others ignored);
        intervals_ms: the registry's reporting period per device (default:
        contract.DEFAULT_INTERVAL_S of its kind), for judging silence.
        """
        s = np.asarray(slots, np.int64)
        kd = np.asarray(kinds, np.int8)
        z = np.asarray(zones, np.int64)
        if len(s) == 0:
            return
        if not (len(s) == len(kd) == len(z) == len(thresholds)):
            raise ValueError("slots, kinds, zones and thresholds differ in length")
        if s.min() < 0 or kd.min() < 0 or kd.max() >= len(contract.ALL_KINDS):
            raise ValueError("negative slot or unknown kind")
        self._grow(int(s.max()) + 1)
        if intervals_ms is None:
            self.interval_ms[s] = np.take(_DEFAULT_INTERVAL_MS, kd)
        else:
            iv = np.asarray(intervals_ms, np.int64)
            self.interval_ms[s] = np.where(iv > 0, iv, np.take(_DEFAULT_INTERVAL_MS, kd))
        known = self.kind[s].copy()
        # A device moved to another zone: its zone bookkeeping moves with it.
        moved = (known >= 0) & (self.zone[s] != z)
        for slot, old, now in zip(
            s[moved].tolist(), self.zone[s[moved]].tolist(), z[moved].tolist(), strict=True
        ):
            self.machine.rezone(slot, old, now)
            self._rezone_queue(slot, old, now)
        self.kind[s] = kd
        self.zone[s] = z
        for name in p.THRESHOLD_NAMES:
            self.thr[name][s] = np.nan
        for ki, kname in enumerate(contract.KINDS):
            sel = s[kd == ki]
            for name, value in p.THRESHOLD_DEFAULTS[kname].items():
                self.thr[name][sel] = value
        for slot, ki, over in zip(s.tolist(), kd.tolist(), thresholds, strict=True):
            if over:
                for name, value in resolve_thresholds(contract.ALL_KINDS[ki], over).items():
                    self.thr[name][slot] = value
        # Quiet bounds: the temperature rate feeds heat rise (every fire kind)
        # and the rate-of-rise alarm (heat, multi); CO and humidity rates (multi).
        t = self.thr
        qt = k.quiet_bound(np.fmin(t["heat_rise_c_per_min"][s], p.MULTI_WARM_C_PER_MIN))
        ror = k.quiet_bound(t["rate_of_rise_c_per_min"][s])
        self.q[0][s] = np.where(np.isnan(t["rate_of_rise_c_per_min"][s]), qt, np.fmin(qt, ror))
        multi = kd == k.KIND_MULTI
        self.q[1][s] = np.where(multi, k.quiet_bound(t["co_rise_ppm_per_min"][s]), np.inf)
        self.q[2][s] = np.where(multi, k.quiet_bound(t["steam_rh_rise_per_min"][s]), np.inf)
        # A new device starts as if its previous reading was all clear, so
        # quiet first readings need no visit; a reconfigured one is re-shown.
        new = s[known < 0]
        self.last_flags[new] = np.take(_QUIET_FLAGS, kd[known < 0])
        # Kinds whose devices all use the same thresholds read scalars (no gather).
        self._uniform = {}
        fire = np.flatnonzero((self.kind >= 0) & (self.kind <= k.KIND_MULTI))
        zs = self.zone[fire]
        order = np.argsort(zs, kind="stable")
        bounds = np.flatnonzero(np.diff(zs[order])) + 1
        self._zmembers = {int(zs[g[0]]): fire[g] for g in np.split(order, bounds) if len(g)}
        for ki, kname in enumerate(contract.KINDS):
            devs = np.flatnonzero(self.kind == ki)
            same = (
                {n: float(self.thr[n][devs[0]]) for n in p.THRESHOLD_DEFAULTS[kname]}
                if len(devs)
                else {}
            )
            if len(devs) and all((self.thr[n][devs] == v).all() for n, v in same.items()):
                self._uniform[ki] = same
        self._force_all(s[known >= 0].tolist())

    def _rezone_queue(self, slot: int, old: int, new: int) -> None:
        """A device's queued items follow it to its new zone id; both zones
        count as shown only as far as the less advanced of them."""
        q = self._zq.get(old, [])
        mine = [it for it in q if it[2] == slot]
        if mine:
            rest = [it for it in q if it[2] != slot]
            heapq.heapify(rest)
            self._zq[old] = rest
            dest = self._zq.setdefault(new, [])
            for it in mine:
                heapq.heappush(dest, it)
        lo = min(self._zrel.get(old, k.TS_NONE), self._zrel.get(new, k.TS_NONE))
        self._zrel[old] = self._zrel[new] = lo

    def _reset_rows(self, s: I64, keep: Collection[str] = (), keep_fst: Sequence[int] = ()) -> None:
        """Every per-device array back to its initial row for slots `s`, taken from
        a fresh engine, so an array added later is reset without being named here;
        but the arrays named in `keep` and the `fst` columns in `keep_fst`."""
        fresh = Engine(capacity=1)
        for name, value in vars(self).items():
            if name == "fst" or name.startswith("_") or name in keep:
                continue
            if isinstance(value, np.ndarray) and value.shape[:1] == (self.capacity,):
                if value.base is self.fst:
                    continue
                value[s] = getattr(fresh, name)[0]
            elif isinstance(value, dict | list):
                for key, arr in value.items() if isinstance(value, dict) else enumerate(value):
                    if isinstance(arr, np.ndarray) and arr.shape[:1] == (self.capacity,):
                        arr[s] = getattr(fresh, name)[key][0]
        cols = np.asarray(keep_fst, np.int64)
        kept = self.fst[np.ix_(s, cols)]
        self.fst[s] = fresh.fst[0]
        self.fst[np.ix_(s, cols)] = kept

    def let_go(self, slots: ArrayLike) -> list[AlarmChange]:
        """These devices leave this engine while their windows may be open (moved
        to a site another process holds): what of them waits for their zone's
        order is shown now and their windows end at their newest reading,
        judged with what they saw (`Machine.let_go`), so no alarm of theirs
        stays pending with nobody left to judge it. `forget` them afterwards."""
        out: list[AlarmChange] = []
        self.machine.out = out
        leaving = {int(x) for x in np.asarray(slots, np.int64).tolist() if 0 <= x < self.capacity}
        for item in sorted(self._unqueue(leaving), key=lambda it: it[:4]):
            self._show(self.machine, item)
        for x in sorted(leaving):
            self.machine.let_go(x)
        return out

    def _unqueue(self, slots: Collection[int]) -> list[tuple[int, int, int, int, Any]]:
        """Take these devices' items out of their zones' queues; returns them."""
        out: list[tuple[int, int, int, int, Any]] = []
        for zone, q in self._zq.items():
            if any(it[2] in slots for it in q):
                out += [it for it in q if it[2] in slots]
                kept = [it for it in q if it[2] not in slots]
                heapq.heapify(kept)
                self._zq[zone] = kept
        for x in slots:
            self._held.pop(x, None)
        return out

    def forget(self, slots: ArrayLike) -> None:
        """Drop every bit of state of these devices, as if never configured (another
        process took them over; configure them again to take them back)."""
        s = np.asarray(slots, np.int64)
        s = s[(s >= 0) & (s < self.capacity)]
        if not s.size:
            return
        self._reset_rows(s)
        self.machine.forget(s.tolist())
        gone = set(s.tolist())
        for x in gone:
            self._force.pop(x, None)
        self._unqueue(gone)
        self._n_drift = int(np.count_nonzero(self.base_drift))

    # --- per batch -------------------------------------------------------------------
    def process(
        self, readings: Readings, events: Events, arrival_ms: int | None = None
    ) -> list[AlarmChange]:
        """Feed one batch; returns the alarm transitions it caused, in processing order.

        `arrival_ms`: when the batch arrived (ingest's clock: the newest
        `received` of its messages). It marks the batch's devices as heard
        (silence, see `advance`) and bounds how far ahead of it a ts may be
        (quarantine). Without it (a replay) each device counts as heard at its
        own newest ts and nothing is quarantined.
        """
        return self._process(readings, events, arrival_ms, {})

    def _process(
        self,
        readings: Readings,
        events: Events,
        arrival_ms: int | None,
        heard_ms: Mapping[int, int],
    ) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        self.machine.out = out
        r_slot = np.asarray(readings.slot, np.int64)
        r_ts = np.asarray(readings.ts, np.int64)
        if arrival_ms is not None:
            self._clock_steps_back(r_slot, r_ts, int(arrival_ms))
            readings = self._quarantine(readings, r_slot, r_ts, int(arrival_ms))
        self._heard(r_slot, r_ts, events, arrival_ms)
        for s_, at in heard_ms.items():
            if 0 <= s_ < self.capacity:
                self.last_arrival[s_] = min(int(at), int(self.last_arrival[s_]))
        evs, keys = self._fresh_events(events, arrival_ms)
        evs, keys = self._align_events(evs, keys)
        rows = self._update(readings, evs)
        self._run(rows, evs, keys)
        # Windows that ended before the device's newest reading (as far as the
        # machine has been shown it) are resolved now (their deciding rows
        # needed no visit).
        self._due_as_shown()
        return out

    def advance(self, now_ms: int) -> list[AlarmChange]:
        """Arrival-time tick (ingest's clock, the same as `arrival_ms`): resolve
        the windows of devices gone silent. A device is silent once nothing has
        arrived from it for SILENT_AFTER_INTERVALS x its interval; its window
        then resolves once that much has also passed since its deadline would
        have arrived (its last arrival + deadline - its newest ts). Other
        devices' event time never closes a window."""
        out: list[AlarmChange] = []
        self.machine.out = out
        now = int(now_ms)
        self.arrival_clock = max(self.arrival_clock, now)
        m = self.machine
        self._release()  # silence may let a zone move on
        self._due_as_shown()
        for slot in m.pending_slots():
            dl = m.deadline(slot)
            if dl is None:
                continue
            if self.kind[slot] <= k.KIND_MULTI and self._zone_shown(slot) < dl:
                continue  # a zone neighbour's late rows may still corroborate it
            clock = max(int(self.last_ts[slot]), int(self.last_event_ts[slot]))
            heard = int(self.last_arrival[slot])
            quiet = self._silence_ms(slot)
            if now - heard >= quiet and now >= heard + max(dl - clock, 0) + quiet:
                m.silent(slot)
        return out

    def flush(self) -> list[AlarmChange]:
        """The caller stops: show every detector row and event still held for
        its zone's order (see `_release`). They are stored already and a
        restart would not see them again, so their alarms are given now,
        without waiting for a lagging neighbour, rather than lost."""
        out: list[AlarmChange] = []
        self.machine.out = out
        self._release(wait=False)
        self._due_as_shown()
        return out

    def credit_arrivals(self, since_ms: int, lost_ms: int) -> None:
        """The caller could not hear any device from `since_ms` for `lost_ms`
        (its broker was away): devices last heard before are credited that time,
        so none is judged gone quiet for the caller's own outage."""
        heard = self.last_arrival
        heard[(heard > k.TS_NONE) & (heard < since_ms)] += lost_ms

    def _silence_ms(self, slot: int) -> int:
        return int(self.interval_ms[slot]) * p.SILENT_AFTER_INTERVALS

    def _heard(self, slot: I64, ts: I64, events: Events, arrival_ms: int | None) -> None:
        """Arrival bookkeeping: every message counts, late or quarantined too."""
        ok = (slot >= 0) & (slot < self.capacity)
        e_slot = np.asarray(events.slot, np.int64)
        e_ok = (e_slot >= 0) & (e_slot < self.capacity)
        if arrival_ms is not None:
            self.arrival_clock = max(self.arrival_clock, int(arrival_ms))
            self.last_arrival[slot[ok]] = int(arrival_ms)
            self.last_arrival[e_slot[e_ok]] = int(arrival_ms)
            return
        # A replay: arrival is event time, per device.
        if len(slot):
            np.maximum.at(self.last_arrival, slot[ok], ts[ok])
            self.arrival_clock = max(self.arrival_clock, int(ts.max()))
        if len(e_slot):
            e_ts = np.asarray(events.ts, np.int64)
            np.maximum.at(self.last_arrival, e_slot[e_ok], e_ts[e_ok])
            self.arrival_clock = max(self.arrival_clock, int(e_ts.max()))

    def _clock_steps_back(self, slot: I64, ts: I64, arrival: int) -> None:
        """A device whose clock stepped back (a real-time clock reset to its epoch
        by a power loss) sends readings far behind its own newest, which lateness
        would keep out of detection for good: after SKEW_ACCEPT_READINGS of them
        in a row, in order and at agreeing offsets to the arrival clock, its clock
        is taken as it now is (`_restart_clock`). A gateway's backlog sent between
        live readings is interrupted by them and never counts."""
        if len(slot) == 0:
            return
        ok = (slot >= 0) & (slot < self.capacity)
        own = np.full(len(slot), k.TS_NONE)
        own[ok] = np.take(self.last_ts, slot[ok])
        # Far behind the device's newest; or, on time by the arrival clock,
        # behind a newest that came from the future (3 readings a few minutes
        # ahead were taken for a clock set ahead, and the real ones after them
        # were late for those minutes: a recheck's detector saw no fire).
        fut = p.FUTURE_TOLERANCE_MS
        glitch = (np.abs(ts - arrival) <= fut) & (own > arrival + fut)
        behind = (
            ok & (own > k.TS_NONE) & ((ts < own - p.CLOCK_STEP_MS) | (glitch & (ts < own - fut)))
        )
        if not (behind.any() or self._b_live):
            return
        involved = np.isin(slot, np.concatenate([slot[behind], np.flatnonzero(self.b_run)]))
        clock: dict[int, int] = {}
        for i in np.flatnonzero(involved & ok).tolist():
            s_, t_ = int(slot[i]), int(ts[i])
            newest = clock.get(s_, int(self.last_ts[s_]))
            if t_ > newest:
                # A reading on its clock: no step. Unless that clock is far
                # ahead of the arrival clock and the run behind it is on time
                # by it: readings a day ahead interleaved with real ones (a
                # forged or second path) must not keep the real ones late.
                on_time_run = self.b_run[s_] > 0 and abs(int(self.b_off[s_])) <= (p.CLOCK_STEP_MS)
                if not (on_time_run and t_ > arrival + p.CLOCK_STEP_MS):
                    self.b_run[s_] = 0
                clock[s_] = t_
                continue
            ahead = abs(t_ - arrival) <= fut and newest > arrival + fut
            if t_ >= newest - (fut if ahead else p.CLOCK_STEP_MS):
                continue  # merely late
            off = t_ - arrival
            agree = (
                self.b_run[s_] > 0
                and abs(off - int(self.b_off[s_])) <= p.SKEW_AGREE_MS
                and t_ > self.b_last[s_]
            )
            run = int(self.b_run[s_]) + 1 if agree else 1
            self.b_off[s_], self.b_last[s_] = off, t_
            if run >= p.SKEW_ACCEPT_READINGS:
                self.b_run[s_] = 0
                self._restart_clock(s_, t_)
                clock[s_] = t_ - 1
                continue
            self.b_run[s_] = run
        self._b_live = bool(self.b_run.any())

    def _restart_clock(self, slot: int, ts: int) -> None:
        """The device's clock now reads `ts`, far behind what it read: its open
        windows are resolved with what they saw, its event-time state (look-back,
        lateness, quarantine, evac discharge, drift epochs) starts again from
        `ts`; its latched alarms, faults and drift baseline are kept."""
        self.machine.silent(slot)
        self.machine.restart_clock(slot)
        self._reset_rows(np.array([slot], np.int64), keep=_NOT_EVENT_TIME, keep_fst=(_B,))
        self.last_ts[slot] = self.last_event_ts[slot] = ts - 1
        self.clock_steps += 1
        self.stepped_back.append(slot)

    def _quarantine(self, r: Readings, slot: I64, ts: I64, arrival: int) -> Readings:
        """Keep readings dated far ahead of both the device's own clock and the
        arrival clock out of detection (one far-future reading must not make
        every later reading look late), unless the device's clock is
        consistently ahead (SKEW_ACCEPT_READINGS agreeing readings)."""
        if len(slot) == 0:
            return r
        ok = (slot >= 0) & (slot < self.capacity)
        fut = p.FUTURE_TOLERANCE_MS
        newest = np.take(self.last_ts, slot[ok])
        # A clock back on time (a new newest reading, on time by the arrival
        # clock) is no longer taken to run ahead; a backlog (behind) says nothing.
        self.q_skew[slot[ok][(ts[ok] > newest) & (ts[ok] <= arrival + fut)]] = 0
        lim = np.full(len(slot), np.iinfo(np.int64).max)
        lim[ok] = np.maximum(newest, arrival + np.take(self.q_skew, slot[ok])) + fut
        cand = ts > lim
        live = np.flatnonzero(self.q_run) if cand.any() or self._q_live else None
        if live is None:
            return r
        involved = np.isin(slot, np.concatenate([slot[cand], live]))
        keep = np.ones(len(slot), np.bool_)
        clock: dict[int, int] = {}
        for i in np.flatnonzero(involved).tolist():
            s_, t_ = int(slot[i]), int(ts[i])
            own = max(
                int(self.last_ts[s_]), clock.get(s_, k.TS_NONE), arrival + int(self.q_skew[s_])
            )
            if t_ <= own + fut:
                self.q_run[s_] = 0
                clock[s_] = max(clock.get(s_, k.TS_NONE), t_)
                continue
            off = t_ - arrival
            agree = self.q_run[s_] > 0 and abs(off - int(self.q_off[s_])) <= p.SKEW_AGREE_MS
            run = int(self.q_run[s_]) + 1 if agree else 1
            self.q_off[s_] = off
            if run >= p.SKEW_ACCEPT_READINGS:  # a clock set ahead, not a glitch
                self.q_run[s_] = 0
                self.q_skew[s_] = off  # so a slow reporter is not quarantined again
                clock[s_] = t_
                continue
            self.q_run[s_] = run
            keep[i] = False
            self.quarantine_count[s_] += 1
            self.quarantined += 1
        self._q_live = bool(self.q_run.any())
        if keep.all():
            return r
        return Readings(slot[keep], ts[keep], np.asarray(r.values)[keep])

    def _align_events(
        self, evs: list[tuple[int, int, str]], keys: list[int]
    ) -> tuple[list[tuple[int, int, str]], list[int]]:
        """A device's readings and its `fire_alarm` events judged together in
        its own event time. An event behind the device's readings (they moved
        past its ts before it arrived) is judged now against the device's
        recent readings, as if it had come in order; the rest go into this
        batch's merge at their ts. An event ahead of its readings opens its
        window at once; readings older than the window then do not count in it."""
        out_e: list[tuple[int, int, str]] = []
        out_k: list[int] = []
        for e, key in zip(evs, keys, strict=True):
            s_, t_, name = e
            shown = self._shown_clock(s_) if self.kind[s_] <= k.KIND_MULTI else k.TS_NONE
            if name == "fire_alarm" and t_ <= shown:
                history = [h for h in self._history(s_) if h[0] <= shown]
                self.machine.late_alarm_event(s_, t_, history, key)
            else:
                out_e.append(e)
                out_k.append(key)
        return out_e, out_k

    def _history(self, slot: int) -> list[tuple[int, int]]:
        """The device's readings in its look-back ring: (ts, flags), oldest first."""
        h = p.LOOKBACK_SAMPLES
        j = (int(self.ring_head[slot]) + np.arange(h)) % h
        tss = self.ring[slot, j, 0]
        fl = self.fring[slot, j]
        return [
            (int(t), int(f))
            for t, f in zip(tss.tolist(), fl.tolist(), strict=True)
            if t > k.TS_NONE
        ]

    def clear(self, slot: int, alarm_type: str) -> None:
        """A person cleared a latched alarm; the engine may open it again."""
        if 0 <= slot < self.capacity:
            self.machine.clear(int(slot), alarm_type)
            self._force_all([int(slot)])

    def operator_verdict(self, slot: int, alarm_type: str, verdict: str) -> None:
        """A person confirmed or dismissed a pending alarm through the API (already
        stored): the engine follows, so a later panel reset or window end cannot
        overturn it."""
        if 0 <= slot < self.capacity and self.kind[slot] >= 0:
            self.machine.operator_verdict(int(slot), alarm_type, verdict)

    def drain_baselines(self) -> tuple[I64, NDArray[np.float64]]:
        """Devices whose drift-compensation baseline moved since the last drain, with
        the baseline (%/m): learnt over hours to weeks, so it is stored and given
        back after a restart or a takeover (`restore_baselines`)."""
        s = np.flatnonzero(self.base_changed)
        self.base_changed[s] = False
        return s.astype(np.int64), self.base_b[s].copy()

    def restore_baselines(self, slots: ArrayLike, baselines: ArrayLike) -> None:
        """Baselines as stored (configure the devices first). One at its device's
        drift limit keeps the drift fault's condition."""
        s = np.asarray(slots, np.int64)
        b = np.asarray(baselines, np.float64)
        keep = (s >= 0) & (s < self.capacity) & np.isfinite(b)
        s, b = s[keep], b[keep]
        self.base_b[s] = b
        self.base_drift[s] = b >= self.thr["drift_limit"][s]
        self._n_drift = int(np.count_nonzero(self.base_drift))

    def warm_up(
        self,
        readings: Readings,
        events: Events,
        arrival_ms: int,
        heard_ms: Mapping[int, int] | None = None,
        held_from: Mapping[int, int] | None = None,
    ) -> None:
        """Replay the last minutes of devices just taken over or restarted (from
        the database; configure them and restore their baselines first, their
        open alarms after). A verdict depends on more than its alarm: the
        look-back, steam memory, a neighbour's activity, what a pending window
        saw. Those are rebuilt here; what the replay opens or resolves is not
        reported, since the alarms themselves are the database's.

        `heard_ms`: when each device was last heard (its stored `last_seen`),
        so that the zones' order is rebuilt as it stood then: a neighbour
        silent then does not hold its zone, a lagging one still does, and what
        was held for it stays held (shown, and reported, once it catches up).
        The time since (a restart, a lease running out) is nobody's silence:
        each is counted as heard that much before `arrival_ms`. Without it
        every replayed device counts as heard at `arrival_ms`.

        `held_from`: what the database marks as held unjudged (`held_from`
        of the engine before, per device): the replay holds only that again.
        The rest was shown and judged before (a stop's `flush` shows all), and
        held again for a neighbour the replay sees lagging, it would open
        its alarms a second time. None: hold whatever the replay holds."""
        heard: dict[int, int] = {}
        if heard_ms:
            since = int(arrival_ms) - max(heard_ms.values())
            heard = {s_: int(at) + since for s_, at in heard_ms.items()}
        # What the replay sees again was counted the first time.
        counted = (self.quarantine_count.copy(), self.quarantined, self.clock_steps)
        late = (self.late_readings, self.late_events, len(self.stepped_back))
        self._process(readings, events, arrival_ms, heard)
        if held_from is not None:
            self._show_judged(held_from)
        self.quarantine_count[: counted[0].size] = counted[0]
        self.quarantined, self.clock_steps = counted[1], counted[2]
        self.late_readings, self.late_events = late[0], late[1]
        del self.stepped_back[late[2] :]
        replayed = np.union1d(np.asarray(readings.slot), np.asarray(events.slot))
        for slot in replayed.astype(np.int64).tolist():
            if 0 <= slot < self.capacity and self.kind[slot] >= 0:
                self.machine.settle_replay(slot)
        self.machine.out = []

    def _show_judged(self, held_from: Mapping[int, int]) -> None:
        """Show the queued items older than their device's `held_from` mark
        (all of an unmarked device's), in event-time order."""
        judged: list[tuple[int, int, int, int, Any]] = []
        for zone, q in self._zq.items():
            kept = [it for it in q if it[0] >= held_from.get(it[2], _NO_LIMIT)]
            if len(kept) < len(q):
                judged += [it for it in q if it[0] < held_from.get(it[2], _NO_LIMIT)]
                heapq.heapify(kept)
                self._zq[zone] = kept
        self._held = {}
        for q in self._zq.values():
            for it in q:
                heapq.heappush(self._held.setdefault(it[2], []), it[0])
        for item in sorted(judged, key=lambda it: it[:4]):
            self._show(self.machine, item)

    def held_from(self) -> dict[int, int]:
        """Per device, the oldest of its rows and events held for its zone's
        order (stored, not yet shown to the machine): a restart must replay
        its zone, or their alarms never come (ingest marks them, see
        `ingest.held`)."""
        return {slot: times[0] for slot, times in self._held.items()}

    def restore_alarm(
        self, slot: int, alarm_type: str, verdict: str, opened_ms: int, reason: str = ""
    ) -> None:
        """Replay an open alarm from the database at start-up (configure first).

        `reason` (optional, the stored one) tells a condition fault
        (drift_limit, lamp_failure, battery_low: clears when the condition is
        gone) from a device fault (clears on `restore`). A restored `pending`
        window is resolved by the device's next readings as usual.
        """
        if 0 <= slot < self.capacity and self.kind[slot] >= 0:
            self.machine.restore(int(slot), alarm_type, verdict, int(opened_ms), reason)
            self._force_all([int(slot)])

    def open_alarms(self) -> dict[tuple[int, str], str]:
        """(slot, alarm type) -> verdict of every alarm the engine holds open."""
        return self.machine.open_alarms()

    # --- internals -------------------------------------------------------------------
    def _update(self, r: Readings, evs: list[tuple[int, int, str]]) -> _Rows:
        """Kernel part: lateness, layers, per-kind features and flags; updates the arrays."""
        slot = np.asarray(r.slot, np.int64)
        ts = np.asarray(r.ts, np.int64)
        vals = np.ascontiguousarray(r.values, np.float64)
        rows = _Rows(vals)
        if len(slot) == 0:
            self._force_events(evs)  # their next reading must be shown
            return rows
        kd: NDArray[np.int8] | None = None
        if int(slot.min()) >= 0 and int(slot.max()) < self.capacity:
            kd = np.take(self.kind, slot)
            ok = kd >= 0
        else:
            ok = (slot >= 0) & (slot < self.capacity)
            ok[ok] = np.take(self.kind, slot[ok]) >= 0
        if not ok.all():
            src = np.flatnonzero(ok)
            slot, ts, vals = slot[src], ts[src], vals[src]
            rows.v = vals
            kd = None
        layers, late = k.fresh_layers(slot, ts, self.last_ts, self._mark)
        self.late_readings += late
        if not layers:
            self._force_events(evs)
            return rows
        pre_visit = self._targets(layers, slot, ts, evs)
        vflat = vals.reshape(-1)
        for li, idx in enumerate(layers):
            if len(idx) == len(slot):  # every row, in order (one layer, none late)
                self._layer(rows, idx, slot, ts, vflat, pre_visit, li == 0, kd)
            else:
                self._layer(rows, idx, slot[idx], ts[idx], vflat, pre_visit, li == 0)
        return rows

    def _force_all(self, slots: Sequence[int]) -> None:
        for s_ in slots:
            self._force[s_] = k.TS_NONE

    def _force_events(self, evs: Sequence[tuple[int, int, str]]) -> None:
        for s_, t_, _ in evs:
            self._force[s_] = min(self._force.get(s_, t_), t_)

    def _targets(
        self, layers: list[I64], slot: I64, ts: I64, evs: list[tuple[int, int, str]]
    ) -> NDArray[np.bool_] | None:
        """Rows that must reach the machine whatever their flags: a forced
        device's first fed row (at or after the ts it was forced from), and
        the first fed row at or after each event (a `restore` with the
        condition still present reopens the fault; a window opened by an
        event sees the device's first reading in it)."""
        if not self._force and not evs:
            return None
        pre = np.zeros(len(slot), np.bool_)
        want = [*self._force.items(), *((s_, t_) for s_, t_, _ in evs)]
        self._force = {}
        fed = np.concatenate(layers) if len(layers) > 1 else layers[0]
        slots = np.array(sorted({s_ for s_, _ in want}), np.int64)
        cand = fed[np.isin(slot[fed], slots)]
        by_slot: dict[int, list[tuple[int, int]]] = {}
        for i, s_, t_ in zip(cand.tolist(), slot[cand].tolist(), ts[cand].tolist(), strict=True):
            by_slot.setdefault(s_, []).append((t_, i))
        for rows in by_slot.values():
            rows.sort()
        for s_, since in want:
            after = [i for tt, i in by_slot.get(s_, ()) if tt >= since]
            if after:
                pre[after[0]] = True
            else:
                self._force[s_] = min(self._force.get(s_, since), since)
        return pre

    def _layer(
        self,
        rows: _Rows,
        idx: I64,
        s: I64,
        t: I64,
        vflat: NDArray[np.float64],
        pre_visit: NDArray[np.bool_] | None,
        first_layer: bool,
        kd: NDArray[np.int8] | None = None,
    ) -> None:
        """One layer (each device at most once): per kind, features, flags, state, visits.

        `kd`: the rows' kinds, given only when the layer is the whole batch in
        order (`idx` is arange), so a row's position is its batch row."""
        whole = kd is not None
        if kd is None:
            kd = np.take(self.kind, s)
        pv = None if pre_visit is None else pre_visit[idx]
        counts = np.bincount(kd, minlength=len(contract.KINDS))
        single = int(np.count_nonzero(counts)) == 1
        for kind in np.flatnonzero(counts).tolist():
            pos = None if single else np.flatnonzero(kd == kind)
            ri = idx if pos is None else pos if whole else idx[pos]
            sk = s if pos is None else s[pos]
            tk = t if pos is None else t[pos]
            pvk = pv if pos is None or pv is None else pv[pos]
            prev = np.take(self.last_flags, sk)
            comp: F64 | None
            base: F64 | None
            rate_t: F64 | None
            if kind <= k.KIND_MULTI:
                flags, visit, comp, base, rate_t = self._fire_rows(
                    kind, ri * _NR, sk, tk, vflat, prev, pvk
                )
            else:
                flags = self._other_rows(kind, ri * _NR, sk, tk, vflat)
                visit = _visit(flags, prev, pvk)
                comp = base = rate_t = None
            self.last_ts[sk] = tk
            self.last_flags[sk] = flags
            vi = np.flatnonzero(visit)
            if len(vi):
                nan = np.full(len(vi), np.nan)
                rows.add(
                    ri[vi],
                    sk[vi],
                    tk[vi],
                    flags[vi],
                    nan if comp is None else comp[vi],
                    nan if base is None else base[vi],
                    nan if rate_t is None else rate_t,
                )

    def _cols(self, ri: I64, vflat: NDArray[np.float64], name: str) -> NDArray[np.float64]:
        """One reading column of the layer's rows (a gather from the batch matrix).

        `ri` is the rows' flat offset into the batch matrix (row index x width).
        """
        j = _RI[name]
        out: NDArray[np.float64] = np.take(vflat[j:], ri)
        return out

    def _thr(self, kind: int, s: I64, *names: str) -> k.Thr:
        uniform = self._uniform.get(kind)
        if uniform is not None:
            return {nm: uniform[nm] for nm in names}
        return {nm: np.take(self.thr[nm], s) for nm in names}

    def _other_rows(
        self, kind: int, ri: I64, s: I64, t: I64, vflat: NDArray[np.float64]
    ) -> NDArray[np.uint32]:
        """Call points, electrical monitors, evac devices: level conditions only."""
        if kind == k.KIND_MCP or kind > k.KIND_EVAC:  # call points, gateway kinds
            return np.zeros(len(s), np.uint32)
        if kind == k.KIND_ELECTRICAL:
            th = self._thr(kind, s, "residual_current_ma", "cable_temperature_c")
            return k.score_electrical(
                th,
                self._cols(ri, vflat, "residual_current"),
                self._cols(ri, vflat, "cable_temperature"),
            )
        mains = self._cols(ri, vflat, "mains")
        battery = self._cols(ri, vflat, "battery")
        off = mains == 0.0
        last_off = np.take(self.last_off, s)
        on_b = np.take(self.on_batt, s)
        t0 = np.take(self.dis_t0, s)
        b0 = np.take(self.dis_b0, s)
        if off.any() or on_b.any():
            last_off = np.where(off, t, last_off)
            self.last_off[s[off]] = t[off]
            # A discharge starts at the first reading on battery (with a charge).
            start = off & (~on_b | np.isnan(b0))
            t0 = np.where(start, t, t0)
            b0 = np.where(start, battery, b0)
            self.dis_t0[s] = t0
            self.dis_b0[s] = b0
            known = ~np.isnan(mains)
            self.on_batt[s[known]] = off[known]
        th = self._thr(kind, s, "battery_low_pct", "rated_duration_min")
        lamp = self._cols(ri, vflat, "lamp_ok")
        return k.score_evac(th, t, battery, mains, lamp, last_off, t0, b0)

    def _fire_rows(
        self,
        kind: int,
        ri: I64,
        s: I64,
        t: I64,
        vflat: NDArray[np.float64],
        prev: NDArray[np.uint32],
        pv: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.uint32], NDArray[np.bool_], F64, F64, F64]:
        """Smoke, heat, multi rows: (flags, visit, compensated obscuration,
        baseline) per row, and the temperature rate of the visited rows."""

        def col(name: str) -> F64:
            return self._cols(ri, vflat, name)

        m = len(s)
        has_obs = kind != k.KIND_HEAT
        multi = kind == k.KIND_MULTI
        temp = col("temperature")
        nan = np.full(m, np.nan)
        obs = col("obscuration") if has_obs else nan
        co = col("co") if multi else nan
        rh = col("humidity") if multi else nan
        names = ["heat_rise_c_per_min"]
        if has_obs:
            names += ["obscuration_alarm", "obscuration_pre_alarm", "fast_growth_per_min"]
        if kind != k.KIND_SMOKE:
            names += ["static_c", "rate_of_rise_c_per_min"]
        if multi:
            names += ["co_ppm", "co_rise_ppm_per_min", "steam_rh_rise_per_min", "steam_rh"]
        th = self._thr(kind, s, *names)

        # Drift-compensated obscuration (one epoch step at most per row).
        # The rows' fire state (a copy; its columns are updated in place and
        # the whole rows written back at the end).
        fs = np.take(self._fst_rec, s).view(np.float64).reshape(m, _FW)
        if has_obs:
            b = fs[:, _B]
            bm = fs[:, _M]
            # Epochs count from the device's own first reading, not the clock's
            # hours: the same stream replayed at another time of day gives the
            # same baselines (and verdicts). A layer holds a device once.
            an = fs[:, _AN]
            np.copyto(an, t, where=np.isnan(an))
            e = (t - an.astype(np.int64)) // p.DRIFT_EPOCH_MS
            roll = fs[:, _EP] < e
            if roll.any():
                r = np.flatnonzero(roll)
                fs[r, _EP] = e[r]
                # An epoch without a reading (NaN minimum) leaves baseline and
                # flag as they are (drift_step's identity): step only the others.
                tr = r[~np.isnan(bm[r])]
                if len(tr):
                    s_tr = s[tr]
                    nb, nd = k.drift_step(
                        b[tr], bm[tr], self.base_drift[s_tr], self.thr["drift_limit"][s_tr]
                    )
                    self.base_changed[s_tr[nb != b[tr]]] = True
                    self.base_drift[s_tr] = nd
                    b[tr] = nb
                    self._n_drift = int(np.count_nonzero(self.base_drift))
                bm[r] = np.nan  # a new epoch's minimum starts empty
            drift = np.take(self.base_drift, s) if self._n_drift else np.zeros(m, np.bool_)
            comp = obs - b
            lower = ~(bm <= obs)  # new epoch minimum (or first reading of the epoch)
            lower &= ~np.isnan(obs)
            np.copyto(bm, obs, where=lower)
            # Obscuration since the previous sample (fast growth).
            last_t = np.take(self.last_ts, s)
            dt = (t - last_t).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                step_obs = obs - fs[:, _OBS]
                step_obs *= p.MS_PER_MIN
                step_obs /= dt
            step_obs[last_t < t - p.LOOKBACK_MS] = np.nan
            fs[:, _OBS] = obs
        else:
            b = comp = step_obs = nan
            drift = np.zeros(m, np.bool_)

        # Quiet path: rows whose rise over the ring's lowest values proves that
        # no rate reaches its threshold need no look-back.
        x = [temp, co, rh]
        uniform = self._uniform.get(kind)

        def q(j: int) -> NDArray[np.float64]:
            return self.q[j][s] if uniform is None else self.q[j][s[:1]]

        lbv = [fs[:, _LB + j] for j in range(3 if multi else 1)]
        with np.errstate(invalid="ignore"):
            quiet = (temp - lbv[0]) < q(0)
            if multi:
                quiet &= (co - lbv[1]) < q(1)
                quiet &= (rh - lbv[2]) < q(2)
        # Calm rows: quiet rates and every level well clear of its threshold;
        # their bits are known without scoring (the kernel owns this shortcut).
        calm = k.fire_calm(kind, th, temp, comp, co, rh, step_obs, quiet)
        flags = np.full(m, k.fire_calm_bits(kind), np.uint32)
        if self._n_drift and has_obs:
            flags |= drift.astype(np.uint32) << np.uint32(9)
        nc = np.flatnonzero(~calm)
        exact = np.flatnonzero(~quiet)  # a subset of nc
        if len(nc):
            rate = np.full((len(nc), 4), np.nan)
            step = np.full((len(nc), 2), np.nan)
            step[:, 1] = step_obs[nc] if has_obs else np.nan
            if len(exact):
                at = np.searchsorted(nc, exact)
                rate[at], st = self._ring_rates(s[exact], t[exact], temp, obs, co, rh, exact)
                step[at, 0] = st[:, 0]
            thn = {nm: v if isinstance(v, float) else v[nc] for nm, v in th.items()}
            flags[nc] = k.score_fire(
                kind, thn, temp[nc], comp[nc], drift[nc], co[nc], rh[nc], rate, step, prev[nc]
            )
        visit = _visit(flags, prev, pv)
        # Visited rows: their temperature rate is evidence (detail).
        vis = np.flatnonzero(visit)
        rate_t = (
            self._ring_rates(s[vis], t[vis], temp, obs, co, rh, vis)[0][:, 0]
            if len(vis)
            else np.empty(0)
        )
        # Ring write: one record per row, then the quiet bounds.
        head = np.take(self.ring_head, s)
        rec = np.empty((m, k.RING_W))
        rec[:, 0] = t
        rec[:, 1] = temp
        rec[:, 2] = obs
        rec[:, 3] = co
        rec[:, 4] = rh
        np.put(
            self._ring_rec,
            s * p.LOOKBACK_SAMPLES + head,
            rec.reshape(-1).view(self._ring_rec.dtype),
        )
        self.fring[s, head] = flags
        head += 1
        head %= p.LOOKBACK_SAMPLES
        self.ring_head[s] = head
        # New bounds: the row's value where lower (NaN never is), then the
        # ring's exact minimum for the rows that looked; one scatter each.
        looked = np.flatnonzero(~quiet | visit)
        mins = k.ring_min(self.ring[s[looked]]) if len(looked) else None
        for j, mc in enumerate((0, 2, 3)[: len(lbv)]):
            nl = lbv[j]
            np.copyto(nl, x[j], where=x[j] < nl)
            if mins is not None:
                nl[looked] = mins[:, mc]
        np.put(self._fst_rec, s, fs.reshape(-1).view(_FREC))
        return flags, visit, comp, b, rate_t

    def _ring_rates(
        self,
        s: I64,
        t: I64,
        temp: NDArray[np.float64],
        obs: NDArray[np.float64],
        co: NDArray[np.float64],
        rh: NDArray[np.float64],
        sel: I64,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        x = np.stack([temp[sel], obs[sel], co[sel], rh[sel]], axis=1)
        return k.ring_rates(self.ring[s], np.take(self.ring_head, s), t, x)

    def _fresh_events(
        self, e: Events, arrival_ms: int | None = None
    ) -> tuple[list[tuple[int, int, str]], list[int]]:
        """Events past the quarantine and lateness checks, in arrival order
        (events are few), and the event time each is processed at: its own ts,
        except that a late fire alarm (`_NEVER_LATE`: honoured, never dropped)
        takes its place in arrival order (queued at the device's newest event
        time, so batching cannot reorder it) and, dated far behind that (a
        clock reset), is processed at that time too. One dated far in the
        future is taken at the arrival clock instead of being quarantined."""
        out: list[tuple[int, int, str]] = []
        keys: list[int] = []
        for slot, ts, code in zip(e.slot.tolist(), e.ts.tolist(), e.code.tolist(), strict=True):
            if not (0 <= slot < self.capacity) or self.kind[slot] < 0:
                continue
            if not (0 <= code < len(contract.EVENT_TYPES)):
                continue
            name = contract.EVENT_TYPES[code]
            if name not in _KIND_EVENTS[self.kind[slot]]:
                continue  # not an event of this kind: ingest stores it, detection ignores it
            if arrival_ms is not None:
                own = max(
                    int(self.last_event_ts[slot]),
                    int(self.last_ts[slot]),
                    arrival_ms + int(self.q_skew[slot]),
                )
                if ts > own + p.FUTURE_TOLERANCE_MS:
                    # Taken at the arrival clock: dated ahead, it would make the
                    # device's next real events late (a `restore` 5 min ahead
                    # dropped the real `fault` after it), and a device that sends
                    # only events (a panel's points) has no readings by which a
                    # skewed clock is accepted. Counted: the clock is suspect.
                    if name not in _NEVER_LATE:
                        self.quarantine_count[slot] += 1
                        self.quarantined += 1
                    ts = arrival_ms
            if ts < self.last_event_ts[slot]:
                if name not in _NEVER_LATE:
                    self.late_events += 1
                    continue
                # A clock reset: not 26 years back, where no one looks. Judged
                # against its own events, and against its readings only a day
                # back: a batch does not tell whether a reading of it came
                # before or after the event, so minutes behind them must not
                # decide (an event minutes behind its readings is judged
                # against them in its own time: `_align_events`).
                newest = max(int(self.last_event_ts[slot]), int(self.last_ts[slot]))
                reset = ts < int(self.last_event_ts[slot]) - p.CLOCK_STEP_MS
                if reset or ts < int(self.last_ts[slot]) - p.EVENT_CLOCK_RESET_MS:
                    ts = newest
            key = max(int(self.last_event_ts[slot]), ts)
            self.last_event_ts[slot] = key
            out.append((slot, ts, name))
            keys.append(key)
        return out, keys

    def _run(self, rows: _Rows, evs: list[tuple[int, int, str]], keys: list[int]) -> None:
        """Machine part. Detectors' rows and events go to their zone's queue
        (released in event-time order, see `_release`); the rest (call points,
        electrical, evac: nothing of theirs depends on another device's
        timing) are shown at once, in (ts, events first, slot) order."""
        ri, rs, rt, rf, rc, rb, rr = rows.arrays()
        m = self.machine
        now: list[tuple[int, int, int, int, Any]] = []
        for (slot, ts, name), key in zip(evs, keys, strict=True):
            self._seq += 1
            item: tuple[int, int, int, int, Any] = (key, 0, slot, self._seq, (ts, name))
            if self.kind[slot] <= k.KIND_MULTI:
                self._queue(item)
            elif name == "activated":
                # The press is a confirmed fire at once (EN 54-2: within 10 s);
                # its effect on the zone's pending fires waits for the zone's
                # order, so it does not depend on arrival timing.
                m.event(slot, ts, name, zone_effect=False)
                self._queue((key, 0, slot, self._seq, (ts, _CALL_POINT_ZONE)))
            else:
                now.append(item)
        for i in range(len(rs)):
            slot = int(rs[i])
            detail = row_detail(
                rows.v[int(ri[i])].tolist(), float(rc[i]), float(rb[i]), float(rr[i])
            )
            self._seq += 1
            ts = int(rt[i])
            item = (ts, 1, slot, self._seq, (int(rf[i]), detail, ts))
            if self.kind[slot] <= k.KIND_MULTI:
                self._queue(item)
            else:
                now.append(item)
        now.sort(key=lambda it: it[:4])
        for item in now:
            self._show(m, item)
        self._release()

    def _queue(self, item: tuple[int, int, int, int, Any]) -> None:
        """Into its zone's queue, to be shown in the zone's event-time order,
        on the platform's clock: a clock accepted as running ahead has its
        lead taken off (its rows carry their own ts for the machine)."""
        slot = item[2]
        item = (item[0] - int(self.q_skew[slot]), *item[1:])
        heapq.heappush(self._zq.setdefault(int(self.zone[slot]), []), item)
        heapq.heappush(self._held.setdefault(slot, []), item[0])

    def _dequeue(self, q: list[tuple[int, int, int, int, Any]]) -> tuple[int, int, int, int, Any]:
        """The first item of a zone's queue. A device's items are all in its
        zone's queue, so the zone's first of them is its own first too."""
        item = heapq.heappop(q)
        times = self._held[item[2]]
        if times[0] == item[0]:
            heapq.heappop(times)
        else:  # (never expected: kept exact all the same)
            times.remove(item[0])
            heapq.heapify(times)
        if not times:
            del self._held[item[2]]
        return item

    @staticmethod
    def _show(m: Machine, item: tuple[int, int, int, int, Any]) -> None:
        _, typ, slot, _, payload = item
        if typ == 0 and payload[1] == _CALL_POINT_ZONE:
            m.call_point_zone(slot, payload[0])
        elif typ == 0:
            m.event(slot, payload[0], payload[1])
        else:
            m.row(slot, payload[2], payload[0], payload[1])

    def _zone_clocks(self, zones: Sequence[int]) -> dict[int, int]:
        """How far each zone's merged stream can be shown: the oldest newest-
        reading of its detectors that are not silent (arrival time). A
        detector whose data are late holds its zone (its rows may still
        corroborate a neighbour's window); a silent one does not, nor one
        last heard longer ago than its lag plus ZONE_TRANSIT_SLACK_MS (it
        holds the zone that much less: nothing of it is on the way;
        ON_CHANGE_TRANSIT_SLACK_MS for a panel's points). All the zones in
        one pass over their members (per zone, it took half the engine's
        time behind a lagging connection: bench/detection_lag.py)."""
        clocks = dict.fromkeys(zones, _NO_LIMIT)
        known = [z for z in zones if len(self._zmembers.get(z, ())) > 0]
        if not known:
            return clocks
        groups = [self._zmembers[z] for z in known]
        sizes = np.fromiter((len(g) for g in groups), np.int64, len(groups))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        of = np.repeat(np.arange(len(groups)), sizes)  # each member's zone (index)
        members = np.concatenate(groups)
        heard = self.last_arrival[members]
        newest = self.last_ts[members]
        interval = self.interval_ms[members]
        # A device that reports on change only (a panel's points: no reading
        # cadence to wait for) is as far as its newest event too.
        on_change = interval >= p.REPORTS_ON_CHANGE_MS
        newest = np.where(on_change, np.maximum(newest, self.last_event_ts[members]), newest)
        # On the platform's clock: a clock accepted as running ahead holds its
        # zone where its readings were sent, not minutes ahead of them.
        ahead = self.q_skew[members]
        newest = np.where(newest > k.TS_NONE, newest - ahead, newest)
        live = (self.arrival_clock - heard) < interval * p.SILENT_AFTER_INTERVALS
        live &= newest > k.TS_NONE  # no reading yet: nothing of it to wait for
        # Nothing of a detector is in transit once its lag plus the slack has
        # passed since it was last heard: its clock moves on with arrival time.
        # One that would hold the zone more than ZONE_HOLD_MAX_MS behind its lead
        # (a lag, a clock set back; a long reporting interval never does): not
        # waited for.
        slack = np.where(on_change, p.ON_CHANGE_TRANSIT_SLACK_MS, p.ZONE_TRANSIT_SLACK_MS)
        held = newest + np.maximum(self.arrival_clock - heard - slack, 0)
        lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        lead = np.maximum.reduceat(np.where(live, held, lowest), starts)
        any_live = np.logical_or.reduceat(live, starts)
        live &= held >= np.where(any_live, lead, 0)[of] - p.ZONE_HOLD_MAX_MS
        oldest = np.minimum.reduceat(np.where(live, held, highest), starts)
        for z, clock, waits in zip(known, oldest.tolist(), any_live.tolist(), strict=True):
            if waits:
                clocks[z] = int(clock)
        return clocks

    def _due_as_shown(self) -> None:
        """Resolve the pending windows each device's shown readings have ended."""
        for slot in self.machine.pending_slots():
            self.machine.due(slot, self._shown_clock(slot))

    def _release(self, wait: bool = True) -> None:
        """Show each zone's queued items up to its clock, in (ts, events first,
        slot, arrival) order: the order of the fully sorted stream, whatever
        the lag between the zone's detectors or the batch cuts. `wait=False`:
        everything queued, waiting for no lagging detector (`flush`)."""
        m = self.machine
        zones = {z for z, q in self._zq.items() if q}
        zones.update(int(self.zone[x]) for x in m.pending_slots() if self.kind[x] <= k.KIND_MULTI)
        ready: list[tuple[int, int, int, int, Any]] = []
        clocks = self._zone_clocks(sorted(zones)) if wait else dict.fromkeys(zones, _NO_LIMIT)
        for zone in zones:
            q = self._zq.setdefault(zone, [])
            upto = clocks[zone]
            while q and q[0][0] <= upto:
                ready.append(self._dequeue(q))
            self._zrel[zone] = upto
        # Zones are independent; one event-time order across them keeps the
        # output order free of zone numbering.
        ready.sort(key=lambda it: it[:4])
        for item in ready:
            self._show(m, item)

    def _shown_clock(self, slot: int) -> int:
        """The device's time as far as the machine has been shown it."""
        own = int(self.last_ts[slot])
        if self.kind[slot] > k.KIND_MULTI:
            return own
        return min(own, self._zone_shown(slot))

    def _zone_shown(self, slot: int) -> int:
        """How far the device's zone has been shown, on the device's own clock.
        With nothing of the zone queued, also as far as its clock goes now: the
        last release (`_zrel`) may be long past, since readings that change
        nothing are never queued (an outside check: a detector's `fire_alarm`
        97 s behind its clean readings was taken as on time, opened a window
        none of them was shown to, and was confirmed)."""
        zone = int(self.zone[slot])
        rel = self._zrel.get(zone, k.TS_NONE)
        if not self._zq.get(zone):  # (a stop's `flush` showed all: its release stands)
            rel = max(rel, self._zone_clocks([zone])[zone])
        return rel + int(self.q_skew[slot])


# Columns of Engine.fst (one 64-byte row per device) and their initial values.
_B, _M, _OBS, _LB, _EP, _AN = 0, 1, 2, 3, 6, 7
_FW: Final = 8
_FREC: Final = np.dtype((np.void, 8 * _FW))
_FST_INIT: Final = np.array(
    [0.0, np.nan, np.nan, np.inf, np.inf, np.inf, float(np.iinfo(np.int32).min), np.nan]
)

# Per-device arrays a clock stepping back leaves alone (`_restart_clock`): its
# configuration and what is counted on the arrival clock, not in its event time.
_NOT_EVENT_TIME: Final = frozenset(
    {
        "kind",
        "zone",
        "thr",
        "interval_ms",
        "base_drift",
        "base_changed",
        "last_arrival",
        "quarantine_count",
        "b_off",
        "b_last",
        "b_run",
    }
)

_VA: Final = np.uint32(k.VISIT_ALWAYS)
_CALL_POINT_ZONE: Final = "activated:zone"  # queued zone effect of a call point press
_NO_LIMIT: Final = 2**62  # a zone with no live detector holds nothing back
_DEFAULT_INTERVAL_MS: Final = np.array(
    [round(contract.DEFAULT_INTERVAL_S[kd] * 1000) for kd in contract.ALL_KINDS], np.int64
)
_MM: Final = np.uint32(k.MACHINE_MASK)


def _visit(
    flags: NDArray[np.uint32], prev: NDArray[np.uint32], pv: NDArray[np.bool_] | None
) -> NDArray[np.bool_]:
    """Rows the machine must see: an always-visit bit, or machine bits that changed."""
    x = np.bitwise_xor(flags, prev)
    x &= _MM
    x |= flags & _VA
    visit: NDArray[np.bool_] = x != 0
    if pv is not None:
        visit |= pv
    return visit


# Machine-visible bits of an all-clear reading per kind: a no-op for an idle device.
_QUIET_FLAGS: Final = np.array(
    [
        k.Flag.PRE_CLEAR | k.Flag.BELOW,  # smoke
        k.Flag.BELOW,  # heat
        k.Flag.PRE_CLEAR | k.Flag.BELOW,  # multi
        0,  # mcp
        k.Flag.ELEC_BELOW,  # electrical
        k.Flag.LAMP_OK | k.Flag.BATT_OK | k.Flag.BATT_CHARGED,  # evac
        0,  # uitd
        0,  # panel
        0,  # point
    ],
    np.uint32,
)


class _Rows:
    """The batch's visited rows (index into `v`, slot, ts, flags, comp, baseline, rate_t)."""

    def __init__(self, v: NDArray[np.float64]) -> None:
        self.v = v
        self.parts: list[tuple[NDArray[Any], ...]] = []

    def add(self, *cols: NDArray[Any]) -> None:
        self.parts.append(cols)

    def arrays(self) -> tuple[NDArray[Any], ...]:
        if not self.parts:
            e = np.empty(0, np.int64)
            return e, e, e, np.empty(0, np.uint32), np.empty(0), np.empty(0), np.empty(0)
        if len(self.parts) == 1:
            return self.parts[0]
        return tuple(np.concatenate(c) for c in zip(*self.parts, strict=True))
