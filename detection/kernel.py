"""Pure numpy kernels: no state of their own, no I/O, no Python loop per reading.

The stateful wrapper (`detection.engine.Engine`) owns the per-device arrays
and calls these in order for each batch:

1. `fresh_order` - the lateness policy: which rows feed detection, sorted by
   (slot, ts).
2. `segments` - where each device's rows start in that order.
3. `baseline_scan` - drift-compensated obscuration (clean-air baseline per
   device, one step per event-time epoch).
4. `lookback` / `ring_update` - event-time rates against the device's recent
   samples, across batch boundaries.
5. `score` - the per-row condition bits (`Flag`) the alarm state machine reads.

Every quantity is computed from the device's own rows in ts order with the
same floating-point operations whatever the batch boundaries, so a stream cut
into batches differently gives bit-identical features.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Final

import numpy as np
from numpy.typing import NDArray

from detection import params as p

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
B = NDArray[np.bool_]
U32 = NDArray[np.uint32]

# Below any real epoch-ms timestamp yet far from int64 overflow when a
# window length is subtracted from a real one.
TS_NONE: Final = -(2**62)

# Columns of the rate look-back (a subset of contract.READINGS).
RATE_COLUMNS: Final = ("temperature", "obscuration", "co", "humidity")
R_T, R_OBS, R_CO, R_RH = range(4)
STEP_COLUMNS: Final = [R_T, R_OBS]  # sample-to-sample rates: heat plausibility, fast growth


class Flag(IntFlag):
    """Condition bits of one reading, as the alarm state machine sees them."""

    PRE = 1 << 0  # compensated obscuration >= pre-alarm level
    PRE_CLEAR = 1 << 1  # ... < pre-alarm level x PRE_ALARM_CLEAR_FRACTION
    ALARM = 1 << 2  # fire condition (obscuration, static heat, rate of rise, combined)
    EDGE = 1 << 3  # ALARM now, not on the device's previous reading
    BELOW = 1 << 4  # fire signal known and back under pre-alarm / alarm level
    HEAT = 1 << 5  # heat rise on two consecutive readings (corroboration)
    CO = 1 << 6  # CO level or rise (corroboration)
    FAST = 1 << 7  # fast obscuration growth on two consecutive intervals
    STEAM = 1 << 8  # humidity jump or near condensation (nuisance signature)
    DRIFT = 1 << 9  # drift compensation at its limit
    RC = 1 << 10  # residual current >= limit
    CABLE = 1 << 11  # cable temperature >= limit
    ELEC_BELOW = 1 << 12  # electrical values known and below both limits
    LAMP_FAIL = 1 << 13
    LAMP_OK = 1 << 14
    BATT_LOW = 1 << 15
    BATT_OK = 1 << 16  # battery >= low + margin
    HEAT_RAW = 1 << 17  # heat rise on this reading alone (kernel-internal)
    FAST_RAW = 1 << 18  # fast rise since the previous reading (kernel-internal)


# Rows with any of these are always shown to the state machine (they count
# samples, refresh zone activity or corroborate); other rows only when their
# machine-visible bits differ from the device's previous reading.
VISIT_ALWAYS: Final = int(
    Flag.PRE | Flag.ALARM | Flag.HEAT | Flag.CO | Flag.FAST | Flag.STEAM | Flag.RC | Flag.CABLE
)
MACHINE_MASK: Final = int(~(Flag.HEAT_RAW | Flag.FAST_RAW)) & ((1 << 19) - 1)

KIND_SMOKE, KIND_HEAT, KIND_MULTI, KIND_MCP, KIND_ELECTRICAL, KIND_EVAC = range(6)


def fresh_order(slot: I64, ts: I64, last_ts: I64, mark: I64) -> tuple[I64, int]:
    """Rows that feed detection, as indices grouped by slot in ts order; and how many are late.

    Lateness policy: rows are taken in the order given (arrival order). A
    row feeds detection only if its ts is newer than every earlier row of
    the same device, in this batch or any before (`last_ts[slot]`). Older or
    equal ones are late: stored by ingest, not fed. Defined on arrival order,
    the decision does not depend on where batches are cut.
    """
    n = len(slot)
    if n == 0:
        return np.empty(0, np.int64), 0
    if _unique(slot, mark):
        # One row per device (the steady state): no order to establish.
        keep = ts > np.take(last_ts, slot)
        return np.flatnonzero(keep), int(n - np.count_nonzero(keep))
    order = np.argsort(slot, kind="stable")
    s = slot[order]
    t = ts[order]
    first = np.empty(n, np.bool_)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    run = _segment_running_max(t, first)
    before = np.empty(n, np.int64)
    before[0] = TS_NONE
    before[1:] = run[:-1]
    before[first] = TS_NONE
    np.maximum(before, last_ts[s], out=before)
    keep = t > before
    return order[keep], int(n - np.count_nonzero(keep))


def _unique(slot: I64, mark: I64) -> bool:
    """No slot twice. `mark` is scratch space of capacity size: with a duplicate,
    some row cannot find its own index there, whichever write won."""
    pos = np.arange(len(slot))
    np.put(mark, slot, pos)
    return bool((np.take(mark, slot) == pos).all())


def _segment_running_max(t: I64, first: B) -> I64:
    """Inclusive running max of t inside each segment (segments start at `first`)."""
    seg = np.cumsum(first) - 1
    lo = int(t.min())
    span = int(t.max()) - lo + 1
    if (int(seg[-1]) + 1) * span < 2**62:
        key = seg * span + (t - lo)
        out: I64 = np.maximum.accumulate(key) - seg * span + lo
        return out
    # Timestamps spread too far to pack: one accumulate per device.
    out = np.empty_like(t)
    bounds = [*np.flatnonzero(first).tolist(), len(t)]
    for a, b in itertools.pairwise(bounds):
        out[a:b] = np.maximum.accumulate(t[a:b])
    return out


@dataclass(frozen=True, slots=True)
class Segments:
    start: I64  # first row of each device segment
    length: I64
    slot: I64  # the device of each segment
    seg: I64  # per row: its segment
    rank: I64  # per row: position inside its segment


def segments(slot: I64) -> Segments:
    """Segments of rows already sorted by slot."""
    n = len(slot)
    first = np.empty(n, np.bool_)
    if n:
        first[0] = True
        np.not_equal(slot[1:], slot[:-1], out=first[1:])
    start = np.flatnonzero(first)
    length = np.diff(np.append(start, n))
    seg = np.cumsum(first) - 1
    rank = np.arange(n) - start[seg]
    return Segments(start, length, slot[start], seg, rank)


def drift_step(b: F64, m: F64, drift: B, limit: F64) -> tuple[F64, B]:
    """One epoch of clean-air tracking: baseline `b` towards epoch minimum `m`."""
    d = m - b
    with np.errstate(invalid="ignore"):
        track = d <= p.DRIFT_TRACK_BAND  # False for NaN (no reading in the epoch)
        target = b + np.clip(d, -p.DRIFT_DOWN, p.DRIFT_UP)
        hit = target >= limit
    nb = np.where(track, np.where(hit, limit, np.maximum(target, 0.0)), b)
    return nb, np.where(track, hit, drift)


def baseline_scan(
    seg: I64, ts: I64, obs: F64, b: F64, ep: I64, m: F64, drift: B, limit: F64
) -> tuple[F64, B]:
    """Per-row baseline and drift flag; updates the per-segment state in place.

    `b, ep, m, drift, limit` are per segment: baseline, current epoch,
    running minimum of the current epoch, drift-limit state. A row's
    baseline is the one finalised at the end of the device's previous epoch.
    Loops over epoch *steps* (how many epochs one batch spans, usually 1),
    vectorised across devices.
    """
    n = len(ts)
    if n == 0:
        return np.empty(0), np.empty(0, np.bool_)
    e = ts // p.DRIFT_EPOCH_MS
    newg = np.empty(n, np.bool_)
    newg[0] = True
    newg[1:] = (seg[1:] != seg[:-1]) | (e[1:] != e[:-1])
    gstart = np.flatnonzero(newg)
    glen = np.diff(np.append(gstart, n))
    gseg = seg[gstart]
    gep = e[gstart]
    with np.errstate(invalid="ignore"):
        gmin = np.fmin.reduceat(obs, gstart)
    g = len(gstart)
    gfirst = np.empty(g, np.bool_)
    gfirst[0] = True
    gfirst[1:] = gseg[1:] != gseg[:-1]
    idx = np.arange(g)
    grank = idx - np.maximum.accumulate(np.where(gfirst, idx, 0))
    gb = np.empty(g)
    gd = np.empty(g, np.bool_)
    by_rank = np.argsort(grank, kind="stable")
    cuts = np.searchsorted(grank[by_rank], np.arange(1, int(grank.max()) + 1))
    for gi in np.split(by_rank, cuts):
        d = gseg[gi]
        roll = gep[gi] > ep[d]
        if roll.any():
            dr = d[roll]
            b[dr], drift[dr] = drift_step(b[dr], m[dr], drift[dr], limit[dr])
            ep[dr] = gep[gi[roll]]
            m[dr] = np.nan
        gb[gi] = b[d]
        gd[gi] = drift[d]
        m[d] = np.fmin(m[d], gmin[gi])
    return np.repeat(gb, glen), np.repeat(gd, glen)


def lookback(
    slot: I64,
    ts: I64,
    vals: F64,
    rank: I64,
    ring_ts: I64,
    ring_val: Sequence[F64],
    head: I64,
) -> tuple[F64, F64]:
    """Rates per minute of the `vals` columns, and of STEP_COLUMNS since the previous row.

    Reference: the oldest of the device's last H samples (H = ring width)
    that is at most LOOKBACK_MS old; a rate needs a span >= RATE_MIN_SPAN_MS.
    Rows are sorted by (slot, ts); `ring_ts[slot]` / `ring_val[c][slot]` are
    circular buffers of the device's last H samples before this batch,
    `head[slot]` the next write position. Returns (rate (n, c), step_rate
    (n, len(STEP_COLUMNS))), NaN where undefined.
    """
    n = len(ts)
    h_w = ring_ts.shape[1]
    lo = ts - p.LOOKBACK_MS
    hd = np.take(head, slot)
    # Previous rows of this batch inside the window (they are the newest).
    count_in = np.zeros(n, np.int64)
    alive = np.flatnonzero(rank >= 1)
    for h in range(1, h_w + 1):
        alive = alive[rank[alive] >= h]
        alive = alive[ts[alive - h] >= lo[alive]]
        if len(alive) == 0:
            break
        count_in[alive] = h
    # Then the ring's samples inside the window: a suffix of it (ts increase
    # from the oldest slot), so counting them is enough.
    ring_ok = (np.take(ring_ts, slot, axis=0) >= lo[:, None]).sum(1)
    hmax = np.minimum(count_in + np.where(count_in == rank, ring_ok, 0), h_w)
    ref_ts, ref_val = _gather_back(hmax, slot, ts, vals, rank, ring_ts, ring_val, hd, None)
    prev_ts, prev_val = _gather_back(
        np.ones(n, np.int64), slot, ts, vals, rank, ring_ts, ring_val, hd, STEP_COLUMNS
    )
    span = (ts - ref_ts).astype(np.float64)
    step = (ts - prev_ts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (vals - ref_val) * p.MS_PER_MIN / span[:, None]
        step_rate = (vals[:, STEP_COLUMNS] - prev_val) * p.MS_PER_MIN / step[:, None]
    rate[(hmax == 0) | (span < p.RATE_MIN_SPAN_MS)] = np.nan
    step_rate[(prev_ts < lo) | (step <= 0)] = np.nan
    return rate, step_rate


def _gather_back(
    h: I64,
    slot: I64,
    ts: I64,
    vals: F64,
    rank: I64,
    ring_ts: I64,
    ring_val: Sequence[F64],
    hd: I64,
    columns: Sequence[int] | None,
) -> tuple[I64, F64]:
    """ts and values (all columns, or some) of the h-th previous sample of each row."""
    h_w = ring_ts.shape[1]
    n = len(ts)
    cols = range(vals.shape[1]) if columns is None else columns
    src = np.maximum(np.arange(n) - h, 0)
    out_ts = np.take(ts, src)
    out_val = np.empty((n, len(cols)))
    for j, c in enumerate(cols):
        out_val[:, j] = np.take(vals[:, c], src)
    old = (rank < h) & (h >= 1)
    if old.any():
        o = np.flatnonzero(old)
        flat = slot[o] * h_w + (hd[o] + rank[o] - h[o]) % h_w
        out_ts[o] = np.take(ring_ts.reshape(-1), flat)
        for j, c in enumerate(cols):
            out_val[o, j] = np.take(ring_val[c].reshape(-1), flat)
    none = h < 1
    if none.any():
        out_ts[none] = TS_NONE
        out_val[none] = np.nan
    return out_ts, out_val


def ring_update(
    ring_ts: I64,
    ring_val: Sequence[F64],
    head: I64,
    slot: I64,
    rank: I64,
    length: I64,
    ts: I64,
    vals: F64,
) -> None:
    """Write each device's newest (at most H) rows into its circular buffer."""
    h_w = ring_ts.shape[1]
    keep = np.flatnonzero(rank >= length - h_w)  # `length` per row: its segment's
    s = slot[keep]
    flat = s * h_w + (np.take(head, s) + rank[keep]) % h_w
    np.put(ring_ts, flat, ts[keep])
    for c, plane in enumerate(ring_val):
        np.put(plane, flat, vals[keep, c])


def _ge(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.greater_equal(a, b)


def _gt(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.greater(a, b)


def _lt(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.less(a, b)


def score(
    kind: NDArray[np.int8],
    thr: dict[str, F64],
    values: F64,
    comp: F64,
    drift: B,
    rate: F64,
    step_rate: F64,
    prev_flags: U32,
    first: B,
) -> U32:
    """Condition bits of each row (rows sorted by (slot, ts)).

    `thr[name]` is the per-row threshold, `comp` the drift-compensated
    obscuration, `rate`/`step_rate` from `lookback`, `prev_flags` the
    device's last flags before this batch (used on each segment's first row).
    """
    from firesafe.contract import READING_INDEX as RI

    has_obs = (kind == KIND_SMOKE) | (kind == KIND_MULTI)
    heat_alarm = (kind == KIND_HEAT) | (kind == KIND_MULTI)
    multi = kind == KIND_MULTI
    fire = has_obs | heat_alarm
    elec = kind == KIND_ELECTRICAL
    evac = kind == KIND_EVAC
    temp = values[:, RI["temperature"]]
    n = len(kind)
    f = np.zeros(n, np.uint32)

    def put(bit: Flag, cond: B) -> None:
        f[...] |= cond.astype(np.uint32) * np.uint32(bit)

    pre = thr["obscuration_pre_alarm"]
    alarm_obs = has_obs & _ge(comp, thr["obscuration_alarm"])
    put(Flag.PRE, has_obs & _ge(comp, pre))
    put(Flag.PRE_CLEAR, has_obs & _lt(comp, pre * p.PRE_ALARM_CLEAR_FRACTION))
    # A jump faster than any fire heats a ceiling is a sensor artefact (EMI).
    plausible = ~_gt(step_rate[:, 0], p.HEAT_STEP_MAX_C_PER_MIN)
    heat_raw = fire & _ge(rate[:, R_T], thr["heat_rise_c_per_min"]) & plausible
    fast_raw = has_obs & _ge(step_rate[:, 1], thr["fast_growth_per_min"])
    put(Flag.HEAT_RAW, heat_raw)
    put(Flag.FAST_RAW, fast_raw)
    prev = np.empty(n, np.uint32)
    if n:
        prev[1:] = f[:-1]
    prev[first] = prev_flags[first]
    heat = heat_raw & ((prev & np.uint32(Flag.HEAT_RAW)) != 0)
    fast = fast_raw & alarm_obs & ((prev & np.uint32(Flag.FAST_RAW)) != 0)
    co = multi & (
        _ge(values[:, RI["co"]], thr["co_ppm"]) | _ge(rate[:, R_CO], thr["co_rise_ppm_per_min"])
    )
    put(Flag.HEAT, heat)
    put(Flag.FAST, fast)
    put(Flag.CO, co)
    put(
        Flag.STEAM,
        multi
        & (
            _ge(rate[:, R_RH], thr["steam_rh_rise_per_min"])
            | _ge(values[:, RI["humidity"]], thr["steam_rh"])
        ),
    )
    alarm = (
        alarm_obs
        | (
            heat_alarm
            & (_ge(temp, thr["static_c"]) | _ge(rate[:, R_T], thr["rate_of_rise_c_per_min"]))
        )
        | (has_obs & _ge(comp, pre) & (heat | co))
    )
    put(Flag.ALARM, alarm)
    if n:
        prev[1:] = f[:-1]
    prev[first] = prev_flags[first]
    put(Flag.EDGE, alarm & ((prev & np.uint32(Flag.ALARM)) == 0))
    known = np.where(has_obs, np.isfinite(comp), np.isfinite(temp))
    put(Flag.BELOW, fire & ~alarm & known & (~has_obs | _lt(comp, pre)))
    put(Flag.DRIFT, has_obs & drift)

    rc = values[:, RI["residual_current"]]
    cable = values[:, RI["cable_temperature"]]
    rc_hi = elec & _ge(rc, thr["residual_current_ma"])
    cable_hi = elec & _ge(cable, thr["cable_temperature_c"])
    put(Flag.RC, rc_hi)
    put(Flag.CABLE, cable_hi)
    put(Flag.ELEC_BELOW, elec & ~rc_hi & ~cable_hi & (np.isfinite(rc) | np.isfinite(cable)))

    lamp = values[:, RI["lamp_ok"]]
    batt = values[:, RI["battery"]]
    low = thr["battery_low_pct"]
    put(Flag.LAMP_FAIL, evac & _lt(lamp, 0.5))
    put(Flag.LAMP_OK, evac & _ge(lamp, 0.5))
    put(Flag.BATT_LOW, evac & _lt(batt, low))
    put(Flag.BATT_OK, evac & _ge(batt, low + p.BATTERY_CLEAR_MARGIN_PCT))
    return f
