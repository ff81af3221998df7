"""The stateful wrapper: per-device arrays indexed by slot, one call per batch.

`update` (kernel state: lateness watermark, drift baseline, look-back ring,
previous flags) is separate from `score` (condition bits) as in stumpy's
`stumpi` / river's anomaly detectors; the alarm state machine
(`detection.machine`) then sees only the rows that can change something.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def resolve_thresholds(kind: str, overrides: Mapping[str, float]) -> dict[str, float]:
    """A device's effective thresholds: kind defaults, registry overrides (clamped).

    Names the kind does not use are ignored.
    """
    out = dict(p.THRESHOLD_DEFAULTS.get(kind, {}))  # gateway kinds have none
    for name, value in overrides.items():
        if name in out and isinstance(value, int | float) and np.isfinite(value):
            lo, hi = p.THRESHOLD_LIMITS.get(name, (-np.inf, np.inf))
            out[name] = float(min(max(float(value), lo), hi))
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
        # Look-back ring, one contiguous (H, RING_W) block per device: a row's
        # write is one 40-byte record. ts is stored as float64 (exact for ms).
        self.ring = np.empty((0, h, k.RING_W))
        self.ring_head = np.empty(0, np.uint8)  # small: stays in cache
        # Quiet-path bounds (fst): a lower bound of each rate column in the ring
        # (+inf: none); q: the rise below which the rate provably sets no bit.
        self.q = [np.empty(0) for _ in range(3)]
        self.last_off = np.empty(0, np.int64)  # evac: latest reading on battery
        self._grow(capacity)
        self.machine = Machine(_Config(self))
        self._force: set[int] = set()  # devices whose next reading must reach the machine
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
        ring = grow(self.ring, np.nan)
        ring[old:, :, 0] = float(k.TS_NONE)
        self.ring = ring
        self._ring_rec = ring.reshape(-1).view(np.dtype((np.void, 8 * k.RING_W)))
        self.ring_head = grow(self.ring_head, 0)
        self.q = [grow(a, -np.inf) for a in self.q]
        self.last_off = grow(self.last_off, k.TS_NONE)
        self._mark = np.zeros(cap, np.int32)
        self.capacity = cap

    def _set_views(self) -> None:
        fst = self.fst
        self._fst_rec = fst.reshape(-1).view(_FREC)
        self.base_b = fst[:, _B]  # drift-compensation baseline (%/m)
        self.base_m = fst[:, _M]  # the epoch's minimum obscuration
        self.last_obs = fst[:, _OBS]  # previous obscuration (step rate, fast growth)
        self.lb = [fst[:, _LB + j] for j in range(3)]  # temperature, co, humidity
        self.base_ep = fst[:, _EP]  # epoch index (hours since 1970), exact as float64

    def configure(
        self,
        slots: ArrayLike,
        kinds: ArrayLike,
        zones: ArrayLike,
        thresholds: Sequence[Mapping[str, float]],
    ) -> None:
        """(Re)configure devices; keeps the state of already-known slots.

        kinds: index in contract.KINDS; zones: ingest's integer key of
        (site, building, floor, zone); thresholds: registry overrides per
        device (names in params.THRESHOLD_DEFAULTS, others ignored).
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
        known = self.kind[s].copy()
        # A device moved to another zone: its zone bookkeeping moves with it.
        moved = (known >= 0) & (self.zone[s] != z)
        for slot, old, now in zip(
            s[moved].tolist(), self.zone[s[moved]].tolist(), z[moved].tolist(), strict=True
        ):
            self.machine.rezone(slot, old, now)
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
        qt = k.quiet_bound(t["heat_rise_c_per_min"][s])
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
        for ki, kname in enumerate(contract.KINDS):
            devs = np.flatnonzero(self.kind == ki)
            same = (
                {n: float(self.thr[n][devs[0]]) for n in p.THRESHOLD_DEFAULTS[kname]}
                if len(devs)
                else {}
            )
            if len(devs) and all((self.thr[n][devs] == v).all() for n, v in same.items()):
                self._uniform[ki] = same
        self._force.update(s[known >= 0].tolist())

    def forget(self, slots: ArrayLike) -> None:
        """Drop every bit of state of these devices, as if never configured (another
        process took them over; configure them again to take them back)."""
        s = np.asarray(slots, np.int64)
        s = s[(s >= 0) & (s < self.capacity)]
        if not s.size:
            return
        # Every per-device array back to its initial row: taken from a fresh
        # engine, so an array added later is reset without being named here.
        fresh = Engine(capacity=1)
        for name, value in vars(self).items():
            if name == "fst" or name.startswith("_"):
                continue
            if isinstance(value, np.ndarray) and value.shape[:1] == (self.capacity,):
                if value.base is self.fst:
                    continue
                value[s] = getattr(fresh, name)[0]
            elif isinstance(value, dict | list):
                for key, arr in value.items() if isinstance(value, dict) else enumerate(value):
                    if isinstance(arr, np.ndarray) and arr.shape[:1] == (self.capacity,):
                        arr[s] = getattr(fresh, name)[key][0]
        self.fst[s] = fresh.fst[0]
        self.machine.forget(s.tolist())
        self._force.difference_update(s.tolist())
        self._n_drift = int(np.count_nonzero(self.base_drift))

    # --- per batch -------------------------------------------------------------------
    def process(self, readings: Readings, events: Events) -> list[AlarmChange]:
        """Feed one batch; returns the alarm transitions it caused, in processing order."""
        out: list[AlarmChange] = []
        self.machine.out = out
        evs, keys = self._fresh_events(events)
        rows = self._update(readings, evs)
        self._run(rows, evs, keys)
        # Windows that ended before the device's newest reading are resolved now
        # (their deciding rows needed no visit).
        for slot in self.machine.pending_slots():
            self.machine.due(slot, int(self.last_ts[slot]))
        return out

    def advance(self, watermark_ms: int) -> list[AlarmChange]:
        """Event-time watermark (max device ts estate-wide): resolve windows of
        devices that went quiet, ADVANCE_GRACE_MS after the window's end."""
        out: list[AlarmChange] = []
        self.machine.out = out
        self.machine.advance(int(watermark_ms))
        return out

    def clear(self, slot: int, alarm_type: str) -> None:
        """A person cleared a latched alarm; the engine may open it again."""
        if 0 <= slot < self.capacity:
            self.machine.clear(int(slot), alarm_type)
            self._force.add(int(slot))

    def operator_verdict(self, slot: int, alarm_type: str, verdict: str) -> None:
        """A person confirmed or dismissed a pending alarm through the API (already
        stored): the engine follows, so a later panel reset or window end cannot
        overturn it."""
        if 0 <= slot < self.capacity and self.kind[slot] >= 0:
            self.machine.operator_verdict(int(slot), alarm_type, verdict)

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
            self._force.add(int(slot))

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
            self._force.update(e[0] for e in evs)  # their next reading must be shown
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
            self._force.update(e[0] for e in evs)
            return rows
        pre_visit = self._targets(layers, slot, ts, evs)
        vflat = vals.reshape(-1)
        for li, idx in enumerate(layers):
            if len(idx) == len(slot):  # every row, in order (one layer, none late)
                self._layer(rows, idx, slot, ts, vflat, pre_visit, li == 0, kd)
            else:
                self._layer(rows, idx, slot[idx], ts[idx], vflat, pre_visit, li == 0)
        return rows

    def _targets(
        self, layers: list[I64], slot: I64, ts: I64, evs: list[tuple[int, int, str]]
    ) -> NDArray[np.bool_] | None:
        """Rows that must reach the machine whatever their flags: a forced
        device's first fed row, and the first fed row at or after each event
        (a `restore` with the condition still present reopens the fault)."""
        if not self._force and not evs:
            return None
        pre = np.zeros(len(slot), np.bool_)
        first = layers[0]
        if self._force:
            forced = np.fromiter(self._force, np.int64)
            hit = first[np.isin(slot[first], forced)]
            pre[hit] = True
            self._force.difference_update(slot[hit].tolist())
        if evs:
            fed = np.concatenate(layers) if len(layers) > 1 else first
            ev_slots = np.array(sorted({e[0] for e in evs}), np.int64)
            cand = fed[np.isin(slot[fed], ev_slots)]
            by_slot: dict[int, list[tuple[int, int]]] = {}
            for i, s_, t_ in zip(
                cand.tolist(), slot[cand].tolist(), ts[cand].tolist(), strict=True
            ):
                by_slot.setdefault(s_, []).append((t_, i))
            for s_, t_, _ in evs:
                after = [i for tt, i in sorted(by_slot.get(s_, ())) if tt >= t_]
                if after:
                    pre[after[0]] = True
                else:
                    self._force.add(s_)
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
        off = mains == 0.0
        last_off = np.take(self.last_off, s)
        if off.any():
            last_off = np.where(off, t, last_off)
            self.last_off[s[off]] = t[off]
        th = self._thr(kind, s, "battery_low_pct")
        battery = self._cols(ri, vflat, "battery")
        return k.score_evac(th, t, battery, mains, self._cols(ri, vflat, "lamp_ok"), last_off)

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
            e0, e1 = int(t.min()) // p.DRIFT_EPOCH_MS, int(t.max()) // p.DRIFT_EPOCH_MS
            e: I64 | int = e0 if e0 == e1 else t // p.DRIFT_EPOCH_MS
            roll = fs[:, _EP] < e
            if roll.any():
                r = np.flatnonzero(roll)
                fs[r, _EP] = e if isinstance(e, int) else e[r]
                # An epoch without a reading (NaN minimum) leaves baseline and
                # flag as they are (drift_step's identity): step only the others.
                tr = r[~np.isnan(bm[r])]
                if len(tr):
                    s_tr = s[tr]
                    nb, nd = k.drift_step(
                        b[tr], bm[tr], self.base_drift[s_tr], self.thr["drift_limit"][s_tr]
                    )
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
            # their bits are known without scoring (the kind's all-clear bits).
            calm = quiet.copy()
            if has_obs:
                pre = th["obscuration_pre_alarm"]
                lim = np.minimum(
                    np.minimum(pre * p.PRE_ALARM_CLEAR_FRACTION, pre), th["obscuration_alarm"]
                )
                calm &= comp < lim
                calm &= ~(step_obs >= th["fast_growth_per_min"])
            if kind != k.KIND_SMOKE:
                calm &= temp < th["static_c"]
            if multi:
                calm &= comp < p.MULTI_AEROSOL_ONLY_ALARM
                calm &= co < np.minimum(th["co_ppm"], p.CO_CLEAN_AIR_PPM)
                calm &= rh < th["steam_rh"]
        calm_bits = int(k.Flag.BELOW | (k.Flag.PRE_CLEAR if has_obs else 0))
        flags = np.full(m, calm_bits, np.uint32)
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

    def _fresh_events(self, e: Events) -> tuple[list[tuple[int, int, str]], list[int]]:
        """Events past the lateness check, in arrival order (events are few), and
        the event time each is processed at: its own ts, except that a late call
        point press (honoured, never dropped) takes its place in arrival order
        (the device's newest event time), so batching cannot reorder it."""
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
            if ts < self.last_event_ts[slot] and name != "activated":
                self.late_events += 1  # a person's call point press is never dropped
                continue
            key = max(int(self.last_event_ts[slot]), ts)
            self.last_event_ts[slot] = key
            out.append((slot, ts, name))
            keys.append(key)
        return out, keys

    def _run(self, rows: _Rows, evs: list[tuple[int, int, str]], keys: list[int]) -> None:
        """Machine part: visited rows and events merged in (ts, events first, slot) order."""
        ri, rs, rt, rf, rc, rb, rr = rows.arrays()
        ne = len(evs)
        ts_all = np.concatenate([np.array(keys, np.int64), rt])
        typ = np.concatenate([np.zeros(ne, np.int8), np.ones(len(rt), np.int8)])
        sl = np.concatenate([np.array([e[0] for e in evs], np.int64), rs])
        seq = np.arange(len(ts_all))
        order = np.lexsort((seq, sl, typ, ts_all))
        m = self.machine
        for o in order.tolist():
            if o < ne:
                slot, ts, name = evs[o]
                m.event(slot, ts, name)
            else:
                i = o - ne
                detail = row_detail(
                    rows.v[int(ri[i])].tolist(), float(rc[i]), float(rb[i]), float(rr[i])
                )
                m.row(int(rs[i]), int(rt[i]), int(rf[i]), detail)


# Columns of Engine.fst (one 64-byte row per device) and their initial values.
_B, _M, _OBS, _LB, _EP = 0, 1, 2, 3, 6
_FW: Final = 8
_FREC: Final = np.dtype((np.void, 8 * _FW))
_FST_INIT: Final = np.array(
    [0.0, np.nan, np.nan, np.inf, np.inf, np.inf, float(np.iinfo(np.int32).min), 0.0]
)

_VA: Final = np.uint32(k.VISIT_ALWAYS)
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
        k.Flag.LAMP_OK | k.Flag.BATT_OK,  # evac
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
