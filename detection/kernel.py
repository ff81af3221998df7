"""Pure numpy kernels: no state of their own, no I/O, no Python loop per reading.

The stateful wrapper (`detection.engine.Engine`) owns the per-device arrays
and, for each batch:

1. `fresh_layers` - the lateness policy (which rows feed detection) and the
   batch cut into *layers*: layer r holds the r-th fresh row of every device,
   so inside a layer each device appears once and its state can be gathered,
   updated and scattered back with plain fancy indexing (no per-device loop,
   no segment scans). The steady state (one reading per device per batch) is
   a single layer and needs no sort at all.
2. per layer and per kind, only the columns that kind reads: drift-compensated
   obscuration (`drift_step`), a quiet-path bound that proves a row's event-time
   rates cannot set any bit (`quiet_rates`), exact rates from the device's
   look-back ring only for the other rows (`ring_rates`), and the condition
   bits (`score_fire`, `score_electrical`, `score_evac`).

Every quantity is computed from the device's own rows in ts order with the
same floating-point operations whatever the batch boundaries, so a stream cut
into batches differently gives bit-identical features.
"""

from __future__ import annotations

import itertools
from enum import IntFlag
from typing import Final

import numpy as np
from numpy.typing import NDArray

from detection import params as p

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
B = NDArray[np.bool_]
U32 = NDArray[np.uint32]
Thr = dict[str, F64 | float]  # per-row thresholds, or one scalar for the whole kind

# Below any real epoch-ms timestamp yet far from int64 overflow when a
# window length is subtracted from a real one. A power of two: exact as float64.
TS_NONE: Final = -(2**62)

# Look-back ring columns: ts (float64, exact for epoch ms) and the rate columns.
RING_COLUMNS: Final = ("ts", "temperature", "obscuration", "co", "humidity")
RING_W: Final = len(RING_COLUMNS)
R_T, R_OBS, R_CO, R_RH = range(4)  # rate columns (ring column - 1)


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
    BATT_LOW = 1 << 15  # low charge while on mains and past the recharge grace
    BATT_OK = 1 << 16  # battery >= low + margin
    HEAT_RAW = 1 << 17  # heat rise on this reading alone (kernel-internal)
    FAST_RAW = 1 << 18  # fast rise since the previous reading (kernel-internal)
    COX = 1 << 19  # multi: CO above clean air (independent chemical evidence)
    DENSE = 1 << 20  # multi: obscuration at the aerosol-only alarm level
    BATT_DEPL = 1 << 21  # on battery: charge low or projected autonomy short of rated
    BATT_CHARGED = 1 << 22  # on mains and charged to low + margin again
    CO_RAW = 1 << 23  # CO level or rise on this reading alone (kernel-internal)
    FALL_RAW = 1 << 24  # at alarm level, falling fast since the previous reading (internal)
    FALL = 1 << 25  # at alarm level, falling fast on two consecutive intervals
    THICK = 1 << 26  # multi: obscuration at the thick level (a longer verification)
    DROP = 1 << 27  # at pre-alarm level or above, falling fast since the previous reading
    WARM = 1 << 28  # multi: the ceiling warming (a slower heat rise than HEAT's)
    GROWING = 1 << 29  # multi: fast obscuration growth at alarm level, below DENSE too
    JUMP = 1 << 30  # at alarm level with a temperature step no fire makes (EMI)


NBITS: Final = 31
# Rows with any of these are always shown to the state machine (they count
# samples, refresh zone activity or corroborate); other rows only when their
# machine-visible bits differ from the device's previous reading.
VISIT_ALWAYS: Final = int(
    Flag.PRE | Flag.ALARM | Flag.HEAT | Flag.CO | Flag.FAST | Flag.STEAM | Flag.RC | Flag.CABLE
)
MACHINE_MASK: Final = int(~(Flag.HEAT_RAW | Flag.FAST_RAW | Flag.CO_RAW | Flag.FALL_RAW)) & (
    (1 << NBITS) - 1
)

KIND_SMOKE, KIND_HEAT, KIND_MULTI, KIND_MCP, KIND_ELECTRICAL, KIND_EVAC = range(6)
# Gateway kinds (contract.GATEWAY_KINDS): no readings scored, panel states only.
KIND_UITD, KIND_PANEL, KIND_POINT = range(6, 9)

# Quiet-path margin: a bound proven with this much room cannot be undone by
# the rounding of the exact rate expression (a few ulps).
_QUIET_MARGIN: Final = 1.0 - 1e-9


def fresh_layers(
    slot: I64, ts: I64, last_ts: I64, mark: NDArray[np.int32]
) -> tuple[list[I64], int]:
    """Rows that feed detection, cut into layers; and how many rows are late.

    Lateness policy: rows are taken in the order given (arrival order). A
    row feeds detection only if its ts is newer than every earlier row of
    the same device, in this batch or any before (`last_ts[slot]`). Older or
    equal ones are late: stored by ingest, not fed. A newer one in the same
    DETECTION_SLOT_MS slot of the device's clock as an earlier row is not fed
    either (nor counted late): at most one step per slot of event time.
    Defined on arrival order, the decision does not depend on where batches
    are cut. The fed rows of a device are therefore in ts order; layer r
    holds each device's r-th one (indices into `slot`), so each device
    appears at most once per layer.
    """
    grid = p.DETECTION_SLOT_MS
    n = len(slot)
    if n == 0:
        return [], 0
    if _unique(slot, mark):
        # One row per device (the steady state): one layer, no sort.
        last = np.take(last_ts, slot)
        newer = ts > last
        keep = newer & (ts // grid > last // grid)
        if keep.all():
            return [np.arange(n)], 0
        return [np.flatnonzero(keep)], int(n - np.count_nonzero(newer))
    order = _argsort_slots(slot)
    s = slot[order]
    t = ts[order]
    first = np.empty(n, np.bool_)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    start = np.flatnonzero(first)
    seg = np.cumsum(first) - 1
    run = _segment_running_max(t, seg, start)
    before = np.empty(n, np.int64)
    before[0] = TS_NONE
    before[1:] = run[:-1]
    before[first] = TS_NONE
    np.maximum(before, np.take(last_ts, s), out=before)
    newer = t > before
    keep = newer & (t // grid > before // grid)
    kept = order[keep]
    # Rank of each fed row among its device's fed rows (sorted by slot, in order).
    kf = np.flatnonzero(keep)
    kseg = seg[kf]
    kfirst = np.empty(len(kf), np.bool_)
    if len(kf):
        kfirst[0] = True
        np.not_equal(kseg[1:], kseg[:-1], out=kfirst[1:])
    kstart = np.flatnonzero(kfirst)
    rank = np.arange(len(kf)) - np.repeat(kstart, np.diff(np.append(kstart, len(kf))))
    counts = np.bincount(rank) if len(rank) else np.zeros(0, np.int64)
    by_rank = kept[np.argsort(rank, kind="stable")]
    layers = np.split(by_rank, np.cumsum(counts)[:-1]) if len(counts) else []
    return layers, int(n - np.count_nonzero(newer))


def _argsort_slots(slot: I64) -> I64:
    """Stable argsort of non-negative slots: two 16-bit radix passes (O(n))."""
    if int(slot.max()) < 1 << 16:
        out: I64 = np.argsort(slot.astype(np.uint16), kind="stable")
        return out
    if int(slot.max()) < 1 << 32:
        o1 = np.argsort((slot & 0xFFFF).astype(np.uint16), kind="stable")
        o2 = np.argsort((slot[o1] >> 16).astype(np.uint16), kind="stable")
        res: I64 = o1[o2]
        return res
    res = np.argsort(slot, kind="stable")
    return res


def _unique(slot: I64, mark: NDArray[np.int32]) -> bool:
    """No slot twice. `mark` is scratch space of capacity size (int32: half the
    memory traffic): with a duplicate, some row cannot find its own index
    there, whichever write won."""
    if len(slot) > np.iinfo(np.int32).max:
        return len(np.unique(slot)) == len(slot)
    pos = np.arange(len(slot), dtype=np.int32)
    mark[slot] = pos
    return bool((np.take(mark, slot) == pos).all())


def _segment_running_max(t: I64, seg: I64, start: I64) -> I64:
    """Inclusive running max of t inside each segment (segment id `seg`, sorted)."""
    lo = int(t.min())
    span = int(t.max()) - lo + 1
    if (int(seg[-1]) + 1) * span < 2**62:
        key = seg * span + (t - lo)
        out: I64 = np.maximum.accumulate(key) - seg * span + lo
        return out
    # Timestamps spread too far to pack: one accumulate per device.
    out = np.empty_like(t)
    bounds = [*start.tolist(), len(t)]
    for a, b in itertools.pairwise(bounds):
        out[a:b] = np.maximum.accumulate(t[a:b])
    return out


def drift_step(b: F64, m: F64, drift: B, limit: F64) -> tuple[F64, B]:
    """One epoch of clean-air tracking: baseline `b` towards epoch minimum `m`."""
    d = m - b
    with np.errstate(invalid="ignore"):
        track = d <= p.DRIFT_TRACK_BAND  # False for NaN (no reading in the epoch)
        target = b + np.clip(d, -p.DRIFT_DOWN, p.DRIFT_UP)
        hit = target >= limit
    nb = np.where(track, np.where(hit, limit, np.maximum(target, 0.0)), b)
    return nb, np.where(track, hit, drift)


def quiet_bound(thr: F64) -> F64:
    """Largest rise over the look-back that provably gives a rate below `thr`.

    A rate is (x - ref) / span with span >= RATE_MIN_SPAN_MS, so a rise under
    thr x RATE_MIN_SPAN_MS / MS_PER_MIN (with a rounding margin) cannot reach
    `thr`. A threshold <= 0 has no such bound (-inf: never quiet).
    """
    with np.errstate(invalid="ignore"):
        q = thr * (p.RATE_MIN_SPAN_MS / p.MS_PER_MIN) * _QUIET_MARGIN
        out: F64 = np.where(thr > 0, q, -np.inf)
    return out


def ring_rates(ring: F64, head: I64, ts: I64, x: F64) -> tuple[F64, F64]:
    """Exact event-time rates of the rows against their devices' look-back rings.

    `ring` (k, H, RING_W): each row's device ring before this row, `head` the
    next write position (the oldest entry), `x` (k, 4) the row's values of the
    rate columns. Reference: the oldest of the last H samples that is at most
    LOOKBACK_MS old; a rate needs a span >= RATE_MIN_SPAN_MS. Also the rate of
    temperature and obscuration since the previous sample (step). Returns
    (rate (k, 4), step (k, 2)), NaN where undefined.
    """
    k, h_w, _ = ring.shape
    j = (head[:, None] + np.arange(h_w)[None, :]) % h_w  # oldest first
    rows = np.arange(k)[:, None]
    ordered = ring[rows, j]  # (k, H, W) oldest first
    rts = ordered[:, :, 0]
    lo = (ts - p.LOOKBACK_MS).astype(np.float64)
    inside = rts >= lo[:, None]  # a suffix (ring ts increase)
    any_in = inside.any(1)
    first = np.argmax(inside, axis=1)
    ref = ordered[np.arange(k), first]  # (k, W)
    tsf = ts.astype(np.float64)
    span = tsf - ref[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (x - ref[:, 1:]) * p.MS_PER_MIN / span[:, None]
    rate[~any_in | (span < p.RATE_MIN_SPAN_MS)] = np.nan
    prev = ordered[:, -1]
    step_t = tsf - prev[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        step = (x[:, :2] - prev[:, 1:3]) * p.MS_PER_MIN / step_t[:, None]
    step[(prev[:, 0] < lo) | (step_t <= 0)] = np.nan
    return rate, step


def ring_min(ring: F64) -> F64:
    """Per row, the smallest finite value of each rate column in the ring (+inf if none)."""
    out: F64 = np.fmin.reduce(ring[:, :, 1:], axis=1, initial=np.inf)
    return out


def _ge(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.greater_equal(a, b)


def _gt(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.greater(a, b)


def _lt(a: F64, b: F64 | float) -> B:
    with np.errstate(invalid="ignore"):
        return np.less(a, b)


def _bit(cond: B, bit: Flag) -> U32:
    out: U32 = cond.astype(np.uint32) << np.uint32(int(bit).bit_length() - 1)
    return out


def score_fire(
    kind: int,
    thr: Thr,
    temp: F64,
    comp: F64,
    drift: B,
    co: F64,
    rh: F64,
    rate: F64,
    step: F64,
    prev_flags: U32,
) -> U32:
    """Condition bits of smoke / heat / multi rows of one kind (one row per device).

    `thr[name]` per row, `comp` the drift-compensated obscuration (NaN for
    heat), `rate` (k, 4) / `step` (k, 2) the event-time rates (NaN where
    undefined or where the quiet bound proved they set no bit), `prev_flags`
    the device's flags on its previous reading.
    """
    has_obs = kind in (KIND_SMOKE, KIND_MULTI)
    heat_alarm = kind in (KIND_HEAT, KIND_MULTI)
    multi = kind == KIND_MULTI
    k = len(temp)
    false = np.zeros(k, np.bool_)
    # A jump faster than any fire heats a ceiling is a sensor artefact (EMI);
    # so is a drop as fast (an outside check's EMI read -20 °C).
    plausible = ~_gt(np.abs(step[:, 0]), p.HEAT_STEP_MAX_C_PER_MIN)
    heat_raw = _ge(rate[:, R_T], thr["heat_rise_c_per_min"]) & plausible
    if multi:
        steam = _ge(rate[:, R_RH], thr["steam_rh_rise_per_min"]) | _ge(rh, thr["steam_rh"])
        # Air a fire heats gets drier (relative humidity falls as it warms);
        # warm air whose humidity jumps at the same time is steam (a shower),
        # so such a reading's heat rise is no evidence of fire.
        heat_raw &= ~steam
    heat = heat_raw & ((prev_flags & np.uint32(Flag.HEAT_RAW)) != 0)
    f = _bit(heat_raw, Flag.HEAT_RAW) | _bit(heat, Flag.HEAT)
    if multi:  # a slower warming, judged at a window's end (machine: combined)
        f |= _bit(_ge(rate[:, R_T], p.MULTI_WARM_C_PER_MIN) & plausible & ~steam, Flag.WARM)
    if has_obs:
        pre = thr["obscuration_pre_alarm"]
        alarm_obs = _ge(comp, thr["obscuration_alarm"])
        is_pre = _ge(comp, pre)
        fast_raw = _ge(step[:, 1], thr["fast_growth_per_min"])
        fast = fast_raw & alarm_obs & ((prev_flags & np.uint32(Flag.FAST_RAW)) != 0)
        # The mirror of fast growth: a chamber emptying as fast as a flaming
        # fire fills it (a spray, a puff of cooking fumes), still at alarm level.
        # At pre-alarm level the same fall tells an aerosol on its way out from
        # a signal that hovers there (machine: hovering).
        emptying = _ge(-step[:, 1], thr["fast_growth_per_min"])
        fall_raw = emptying & alarm_obs
        fall = fall_raw & ((prev_flags & np.uint32(Flag.FALL_RAW)) != 0)
        f |= _bit(fall_raw, Flag.FALL_RAW) | _bit(fall, Flag.FALL)
        f |= _bit(emptying & is_pre, Flag.DROP)
        f |= _bit(is_pre, Flag.PRE) | _bit(
            _lt(comp, pre * p.PRE_ALARM_CLEAR_FRACTION), Flag.PRE_CLEAR
        )
        f |= _bit(fast_raw, Flag.FAST_RAW) | _bit(drift, Flag.DRIFT)
        f |= _bit(alarm_obs & ~plausible, Flag.JUMP)
    else:
        alarm_obs = is_pre = fast = false
    if multi:
        cox = _ge(co, p.CO_CLEAN_AIR_PPM)
        dense = _ge(comp, p.MULTI_AEROSOL_ONLY_ALARM)
        thick = _ge(comp, p.MULTI_AEROSOL_THICK)
        # On a multi-criteria detector fast growth is the same optical channel:
        # it corroborates only once the aerosol is dense (see machine: aerosol);
        # under that it only tells a growing aerosol (a longer verification).
        f |= _bit(fast, Flag.GROWING)
        fast = fast & dense
        co_ev = _ge(co, thr["co_ppm"]) | _ge(rate[:, R_CO], thr["co_rise_ppm_per_min"])
        # CO corroborates on two consecutive readings (a one-sample jump of
        # every channel is EMI, not combustion), as heat rise does.
        co_corr = co_ev & ((prev_flags & np.uint32(Flag.CO_RAW)) != 0)
        f |= _bit(co_ev, Flag.CO_RAW) | _bit(co_corr, Flag.CO) | _bit(steam, Flag.STEAM)
        f |= _bit(cox, Flag.COX) | _bit(dense, Flag.DENSE) | _bit(thick, Flag.THICK)
    else:
        co_ev = false
    f |= _bit(fast, Flag.FAST)
    alarm = alarm_obs | (is_pre & (heat | co_ev))
    if heat_alarm:
        alarm |= _ge(temp, thr["static_c"]) | _ge(rate[:, R_T], thr["rate_of_rise_c_per_min"])
    f |= _bit(alarm, Flag.ALARM)
    f |= _bit(alarm & ((prev_flags & np.uint32(Flag.ALARM)) == 0), Flag.EDGE)
    if has_obs:
        below = ~alarm & np.isfinite(comp) & _lt(comp, thr["obscuration_pre_alarm"])
    else:
        below = ~alarm & np.isfinite(temp)
    f |= _bit(below, Flag.BELOW)
    return f


def score_electrical(thr: Thr, rc: F64, cable: F64) -> U32:
    rc_hi = _ge(rc, thr["residual_current_ma"])
    cable_hi = _ge(cable, thr["cable_temperature_c"])
    below = ~rc_hi & ~cable_hi & (np.isfinite(rc) | np.isfinite(cable))
    return _bit(rc_hi, Flag.RC) | _bit(cable_hi, Flag.CABLE) | _bit(below, Flag.ELEC_BELOW)


def score_evac(
    thr: Thr,
    ts: I64,
    battery: F64,
    mains: F64,
    lamp: F64,
    last_off: I64,
    dis_t0: I64,
    dis_b0: F64,
) -> U32:
    """Evac bits. `last_off`: ts of the device's latest reading on battery
    (mains == 0), this row included. A low charge on mains (1 or unknown) is a
    fault EVAC_RECHARGE_GRACE_MS after the last reading on battery
    (`BATT_LOW`). On battery, `dis_t0`/`dis_b0` are the ts and charge of the
    first reading of the current discharge: `BATT_DEPL` when the charge is
    below the low level or the projected autonomy (elapsed + charge / rate,
    the rate measured over >= DISCHARGE_MIN_SPAN_MS) is short of
    `rated_duration_min`."""
    low = thr["battery_low_pct"]
    on_mains = ~(mains == 0.0)
    charged = (ts - last_off) >= p.EVAC_RECHARGE_GRACE_MS
    f = _bit(_lt(lamp, 0.5), Flag.LAMP_FAIL) | _bit(_ge(lamp, 0.5), Flag.LAMP_OK)
    f |= _bit(_lt(battery, low) & on_mains & charged, Flag.BATT_LOW)
    ok = _ge(battery, low + p.BATTERY_CLEAR_MARGIN_PCT)
    f |= _bit(ok, Flag.BATT_OK)
    off = mains == 0.0
    elapsed = (ts - dis_t0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (dis_b0 - battery) / elapsed  # % per ms
        autonomy_min = (elapsed + battery / rate) / p.MS_PER_MIN
        short = (elapsed >= p.DISCHARGE_MIN_SPAN_MS) & (rate > 0)
        short &= autonomy_min < thr["rated_duration_min"]
    f |= _bit(off & (_lt(battery, low) | short), Flag.BATT_DEPL)
    f |= _bit((mains == 1.0) & ok, Flag.BATT_CHARGED)
    return f


def fire_calm_bits(kind: int) -> int:
    """The bits `score_fire` gives a calm row (see `fire_calm`), drift aside."""
    return int(Flag.BELOW | (Flag.PRE_CLEAR if kind in (KIND_SMOKE, KIND_MULTI) else 0))


def fire_calm(
    kind: int, thr: Thr, temp: F64, comp: F64, co: F64, rh: F64, step_obs: F64, quiet: B
) -> B:
    """Rows whose `score_fire` bits are known without scoring: `quiet` (the
    event-time rates provably below every rate threshold, see `quiet_bound`)
    and every level well clear of its threshold. Their bits are
    `fire_calm_bits(kind)`, plus DRIFT where the baseline is at its limit
    (property-tested against `score_fire`). One home for this shortcut: a
    rule added to `score_fire` must be added here too, or the test fails."""
    calm = quiet.copy()
    with np.errstate(invalid="ignore"):
        if kind in (KIND_SMOKE, KIND_MULTI):
            pre = thr["obscuration_pre_alarm"]
            lim = np.minimum(
                np.minimum(pre * p.PRE_ALARM_CLEAR_FRACTION, pre), thr["obscuration_alarm"]
            )
            calm &= comp < lim
            calm &= ~(step_obs >= thr["fast_growth_per_min"])
        else:
            calm &= np.isfinite(temp)  # a heat row without temperature is not BELOW
        if kind != KIND_SMOKE:
            calm &= temp < thr["static_c"]
        if kind == KIND_MULTI:
            calm &= comp < p.MULTI_AEROSOL_ONLY_ALARM
            calm &= co < np.minimum(thr["co_ppm"], p.CO_CLEAN_AIR_PPM)
            calm &= rh < thr["steam_rh"]
    out: B = calm
    return out
