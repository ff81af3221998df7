"""The stateful wrapper: per-device arrays indexed by slot, one call per batch.

`update` (kernel state: lateness watermark, drift baseline, look-back ring,
previous flags) is separate from `score` (condition bits) as in stumpy's
`stumpi` / river's anomaly detectors; the alarm state machine
(`detection.machine`) then sees only the rows that can change something.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from detection import kernel as k
from detection import params as p
from detection.machine import Machine, row_detail
from detection.records import AlarmChange, Events, Readings
from firesafe import contract

_OBS: Final = contract.READING_INDEX["obscuration"]
_RATE_IDX: Final = [contract.READING_INDEX[c] for c in k.RATE_COLUMNS]
_KIND_EVENTS: Final = tuple(frozenset(contract.KIND_EVENTS[kd]) for kd in contract.KINDS)


def resolve_thresholds(kind: str, overrides: Mapping[str, float]) -> dict[str, float]:
    """A device's effective thresholds: kind defaults, registry overrides (clamped).

    Names the kind does not use are ignored.
    """
    out = dict(p.THRESHOLD_DEFAULTS[kind])
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
        self.base_b = np.empty(0)  # drift-compensation baseline (%/m)
        self.base_ep = np.empty(0, np.int64)
        self.base_m = np.empty(0)
        self.base_drift = np.empty(0, np.bool_)
        self.ring_ts = np.empty((0, h), np.int64)
        self.ring_val = [np.empty((0, h)) for _ in k.RATE_COLUMNS]  # one plane per column
        self.ring_head = np.empty(0, np.int64)
        self.thr_mat = np.empty((0, len(_SCORE_THRESHOLDS)))
        self._grow(capacity)
        self.machine = Machine(_Config(self))
        self._force: set[int] = set()  # devices whose next reading must reach the machine
        self.late_readings = 0
        self.late_events = 0

    # --- configuration ----------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity, 16)
        old = self.capacity

        def grow(a: NDArray[np.generic], fill: object) -> NDArray[np.generic]:
            out = np.empty((cap, *a.shape[1:]), a.dtype)
            out[:old] = a
            out[old:] = fill
            return out

        self.kind = grow(self.kind, -1)  # type: ignore[assignment]
        self.zone = grow(self.zone, -1)  # type: ignore[assignment]
        self.thr = {n: grow(a, np.nan) for n, a in self.thr.items()}  # type: ignore[misc]
        self.last_ts = grow(self.last_ts, k.TS_NONE)  # type: ignore[assignment]
        self.last_event_ts = grow(self.last_event_ts, k.TS_NONE)  # type: ignore[assignment]
        self.last_flags = grow(self.last_flags, 0)  # type: ignore[assignment]
        self.base_b = grow(self.base_b, 0.0)  # type: ignore[assignment]
        self.base_ep = grow(self.base_ep, k.TS_NONE)  # type: ignore[assignment]
        self.base_m = grow(self.base_m, np.nan)  # type: ignore[assignment]
        self.base_drift = grow(self.base_drift, False)  # type: ignore[assignment]
        self.ring_ts = grow(self.ring_ts, k.TS_NONE)  # type: ignore[assignment]
        self.ring_val = [grow(a, np.nan) for a in self.ring_val]  # type: ignore[misc]
        self._mark = np.zeros(cap, np.int64)
        self.ring_head = grow(self.ring_head, 0)  # type: ignore[assignment]
        self.thr_mat = grow(self.thr_mat, np.nan)  # type: ignore[assignment]
        self.capacity = cap

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
        if s.min() < 0 or kd.min() < 0 or kd.max() >= len(contract.KINDS):
            raise ValueError("negative slot or unknown kind")
        self._grow(int(s.max()) + 1)
        known = self.kind[s].copy()
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
                for name, value in resolve_thresholds(contract.KINDS[ki], over).items():
                    self.thr[name][slot] = value
        for j, name in enumerate(_SCORE_THRESHOLDS):
            self.thr_mat[s, j] = self.thr[name][s]
        # A new device starts as if its previous reading was all clear, so
        # quiet first readings need no visit; a reconfigured one is re-shown.
        new = s[known < 0]
        self.last_flags[new] = np.take(_QUIET_FLAGS, kd[known < 0])
        self._force.update(s[known >= 0].tolist())

    # --- per batch -------------------------------------------------------------------
    def process(self, readings: Readings, events: Events) -> list[AlarmChange]:
        """Feed one batch; returns the alarm transitions it caused, in processing order."""
        out: list[AlarmChange] = []
        self.machine.out = out
        rows = self._update(readings)
        evs = self._fresh_events(events)
        self._run(rows, evs)
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
    def _update(self, r: Readings) -> _Rows:
        """Kernel part: lateness, drift baseline, rates, flags; updates the arrays."""
        slot = np.asarray(r.slot, np.int64)
        ok = (slot >= 0) & (slot < self.capacity)
        ok[ok] = self.kind[slot[ok]] >= 0
        src = np.flatnonzero(ok) if not ok.all() else None
        if src is not None:
            slot = slot[src]
        ts = np.asarray(r.ts if src is None else r.ts[src], np.int64)
        idx, late = k.fresh_order(slot, ts, self.last_ts, self._mark)
        self.late_readings += late
        vals = np.asarray(r.values if src is None else r.values[src], np.float64)
        s, t, v = np.take(slot, idx), np.take(ts, idx), np.take(vals, idx, axis=0)
        rows = _Rows(s, t, v)
        if len(s) == 0:
            return rows
        sg = k.segments(s)
        kind = np.take(self.kind, s)
        rows.seg = sg
        last = sg.start + sg.length - 1

        # Drift-compensated obscuration.
        obs_rows = np.flatnonzero((kind == k.KIND_SMOKE) | (kind == k.KIND_MULTI))
        comp = np.full(len(s), np.nan)
        baseline = np.full(len(s), np.nan)
        drift = np.zeros(len(s), np.bool_)
        if len(obs_rows):
            ss = sg.slot
            b, ep = np.take(self.base_b, ss), np.take(self.base_ep, ss)
            m, dr = np.take(self.base_m, ss), np.take(self.base_drift, ss)
            rb, rd = k.baseline_scan(
                sg.seg[obs_rows],
                t[obs_rows],
                v[obs_rows, _OBS],
                b,
                ep,
                m,
                dr,
                self.thr["drift_limit"][ss],
            )
            self.base_b[ss], self.base_ep[ss], self.base_m[ss], self.base_drift[ss] = b, ep, m, dr
            baseline[obs_rows] = rb
            comp[obs_rows] = v[obs_rows, _OBS] - rb
            drift[obs_rows] = rd

        # Event-time rates for the fire detectors.
        rate = np.full((len(s), len(_RATE_IDX)), np.nan)
        step_rate = np.full((len(s), len(k.STEP_COLUMNS)), np.nan)
        fire_rows = np.flatnonzero(kind <= k.KIND_MULTI)
        if len(fire_rows):
            fs = s[fire_rows]
            ft = t[fire_rows]
            fv = v[fire_rows][:, _RATE_IDX]
            fsg = k.segments(fs)
            rate[fire_rows], step_rate[fire_rows] = k.lookback(
                fs, ft, fv, fsg.rank, self.ring_ts, self.ring_val, self.ring_head
            )
            k.ring_update(
                self.ring_ts,
                self.ring_val,
                self.ring_head,
                fs,
                fsg.rank,
                fsg.length[fsg.seg],
                ft,
                fv,
            )
            self.ring_head[fsg.slot] = (self.ring_head[fsg.slot] + fsg.length) % p.LOOKBACK_SAMPLES

        tm = np.take(self.thr_mat, s, axis=0)
        thr = {n: tm[:, j] for j, n in enumerate(_SCORE_THRESHOLDS)}
        first = sg.rank == 0
        prev_flags = np.zeros(len(s), np.uint32)
        prev_flags[first] = np.take(self.last_flags, sg.slot)
        flags = k.score(kind, thr, v, comp, drift, rate, step_rate, prev_flags, first)

        prev = np.empty_like(flags)
        prev[1:] = flags[:-1]
        prev[first] = prev_flags[first]
        mm = np.uint32(k.MACHINE_MASK)
        visit = ((flags & np.uint32(k.VISIT_ALWAYS)) != 0) | ((flags & mm) != (prev & mm))
        if self._force:
            forced = np.fromiter(self._force, np.int64)
            hit = np.isin(sg.slot, forced)
            visit[sg.start[hit]] = True
            self._force.difference_update(sg.slot[hit].tolist())

        self.last_ts[sg.slot] = t[last]
        self.last_flags[sg.slot] = flags[last]
        rows.flags, rows.comp, rows.baseline, rows.rate_t = flags, comp, baseline, rate[:, 0]
        rows.visit = visit
        return rows

    def _fresh_events(self, e: Events) -> list[tuple[int, int, str]]:
        """Events past the lateness check, in arrival order (events are few)."""
        out: list[tuple[int, int, str]] = []
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
            self.last_event_ts[slot] = max(int(self.last_event_ts[slot]), ts)
            out.append((slot, ts, name))
        return out

    def _run(self, rows: _Rows, evs: list[tuple[int, int, str]]) -> None:
        """Machine part: visited rows and events merged in (ts, events first, slot) order."""
        visit = rows.visit
        if evs and rows.seg is not None:
            # The first reading at or after each event must reach the machine
            # (a `restore` with the condition still present reopens the fault).
            sg = rows.seg
            nseg = len(sg.slot)
            np.put(self._mark, sg.slot, np.arange(nseg))  # slot -> its segment (scratch)
            for slot, ts, _ in evs:
                i = int(self._mark[slot])
                if i < nseg and sg.slot[i] == slot:
                    a = int(sg.start[i])
                    b = a + int(sg.length[i])
                    j = a + int(np.searchsorted(rows.t[a:b], ts))
                    if j < b:
                        visit[j] = True
                        continue
                self._force.add(slot)
        elif evs:
            self._force.update(s for s, _, _ in evs)
        vi = np.flatnonzero(visit)
        ne = len(evs)
        ts_all = np.concatenate([np.array([e[1] for e in evs], np.int64), rows.t[vi]])
        typ = np.concatenate([np.zeros(ne, np.int8), np.ones(len(vi), np.int8)])
        sl = np.concatenate([np.array([e[0] for e in evs], np.int64), rows.s[vi]])
        seq = np.arange(len(ts_all))
        order = np.lexsort((seq, sl, typ, ts_all))
        m = self.machine
        vl = vi.tolist()
        for o in order.tolist():
            if o < ne:
                slot, ts, name = evs[o]
                m.event(slot, ts, name)
            else:
                i = vl[o - ne]
                detail = row_detail(
                    rows.v[i].tolist(),
                    float(rows.comp[i]),
                    float(rows.baseline[i]),
                    float(rows.rate_t[i]),
                )
                m.row(int(rows.s[i]), int(rows.t[i]), int(rows.flags[i]), detail)


# Machine-visible bits of an all-clear reading per kind: a no-op for an idle device.
_QUIET_FLAGS: Final = np.array(
    [
        k.Flag.PRE_CLEAR | k.Flag.BELOW,  # smoke
        k.Flag.BELOW,  # heat
        k.Flag.PRE_CLEAR | k.Flag.BELOW,  # multi
        0,  # mcp
        k.Flag.ELEC_BELOW,  # electrical
        k.Flag.LAMP_OK | k.Flag.BATT_OK,  # evac
    ],
    np.uint32,
)

# Thresholds the kernel reads per row, kept together so one gather fetches them.
_SCORE_THRESHOLDS: Final = tuple(
    sorted(
        {
            "obscuration_alarm",
            "obscuration_pre_alarm",
            "heat_rise_c_per_min",
            "fast_growth_per_min",
            "co_ppm",
            "co_rise_ppm_per_min",
            "steam_rh_rise_per_min",
            "steam_rh",
            "static_c",
            "rate_of_rise_c_per_min",
            "residual_current_ma",
            "cable_temperature_c",
            "battery_low_pct",
        }
    )
)


class _Rows:
    """The batch's fresh rows in (slot, ts) order, with kernel outputs."""

    def __init__(self, s: NDArray[np.int64], t: NDArray[np.int64], v: NDArray[np.float64]) -> None:
        self.s, self.t, self.v = s, t, v
        n = len(s)
        self.seg: k.Segments | None = None
        self.flags = np.zeros(n, np.uint32)
        self.comp = np.full(n, np.nan)
        self.baseline = np.full(n, np.nan)
        self.rate_t = np.full(n, np.nan)
        self.visit: NDArray[np.bool_] = np.zeros(n, np.bool_)
