"""The slow, obvious reference of detection/: one loop step per reading, dicts.

Same rules as `detection.kernel` (re-derived here reading by reading, without
numpy) and every reading shown to the alarm state machine
(`detection.machine.Machine`, shared: it is the plain-Python rule book; what
this reference checks is that the engine's vectorised features and its
choice of which rows to skip never change an answer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from detection import params as p
from detection.engine import resolve_thresholds
from detection.machine import Machine, row_detail
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
FALL_RAW, FALL = 1 << 24, 1 << 25


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


def ge(a: float, b: float) -> bool:
    return a >= b  # False with NaN on either side


def fmin(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


class NaiveEngine:
    def __init__(self) -> None:
        self.devs: dict[int, Dev] = {}
        self.machine = Machine(NaiveConfig(self.devs))
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
            thr = resolve_thresholds(contract.KINDS[int(k)], t)
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
        e = ts // p.DRIFT_EPOCH_MS
        if e > d.ep:
            delta = d.m - d.b
            if delta <= p.DRIFT_TRACK_BAND:
                target = d.b + min(max(delta, -p.DRIFT_DOWN), p.DRIFT_UP)
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
            if ht >= ts - p.LOOKBACK_MS:
                ref = (ht, hv)
                break
        rate = nan4
        if ref is not None and ts - ref[0] >= p.RATE_MIN_SPAN_MS:
            span = float(ts - ref[0])
            rate = [(a - r) * p.MS_PER_MIN / span for a, r in zip(x, ref[1], strict=True)]
        step = nan4
        if d.hist:
            pt, pv = d.hist[-1]
            if pt >= ts - p.LOOKBACK_MS and ts > pt:
                dt = float(ts - pt)
                step = [(a - r) * p.MS_PER_MIN / dt for a, r in zip(x, pv, strict=True)]
        d.hist.append((ts, x))
        if len(d.hist) > p.LOOKBACK_SAMPLES:
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
            if comp < pre * p.PRE_ALARM_CLEAR_FRACTION:
                f |= PRE_CLEAR
            if drift:
                f |= DRIFT
        heat_raw = (
            fire
            and ge(rate[0], t("heat_rise_c_per_min", nan))
            and not step[0] > p.HEAT_STEP_MAX_C_PER_MIN
        )
        fast_raw = has_obs and ge(step[1], t("fast_growth_per_min", nan))
        heat = heat_raw and bool(d.last_flags & HEAT_RAW)
        alarm_obs = has_obs and ge(comp, t("obscuration_alarm", nan))
        fast = fast_raw and alarm_obs and bool(d.last_flags & FAST_RAW)
        # falling as fast as fast growth rises, at alarm level, twice running
        fall_raw = alarm_obs and ge(-step[1], t("fast_growth_per_min", nan))
        fall = fall_raw and bool(d.last_flags & FALL_RAW)
        cox = k == MULTI and ge(v[RI["co"]], p.CO_CLEAN_AIR_PPM)
        dense = k == MULTI and ge(comp, p.MULTI_AEROSOL_ONLY_ALARM)
        if k == MULTI:
            fast = fast and dense  # multi: fast growth counts only for dense aerosol
        co = k == MULTI and (
            ge(v[RI["co"]], t("co_ppm", nan)) or ge(rate[2], t("co_rise_ppm_per_min", nan))
        )
        steam = k == MULTI and (
            ge(rate[3], t("steam_rh_rise_per_min", nan))
            or ge(v[RI["humidity"]], t("steam_rh", nan))
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
        f |= CO_RAW if co else 0
        f |= COB if co and d.last_flags & CO_RAW else 0
        f |= STEAM if steam else 0
        f |= COX if cox else 0
        f |= DENSE if dense else 0
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
                if elapsed >= 300_000 and drop > 0:
                    per_ms = drop / float(elapsed)
                    autonomy_min = (elapsed + batt / per_ms) / 60_000
                    short = autonomy_min < t("rated_duration_min", nan)
                f |= BATT_DEPL if batt < low or short else 0
            if mains == 1.0 and batt >= low + p.BATTERY_CLEAR_MARGIN_PCT:
                f |= BATT_CHARGED
            # A low charge counts only on mains (1 or unknown) and once the
            # recharge grace after the last reading on battery is over.
            charged = ts - d.last_off >= p.EVAC_RECHARGE_GRACE_MS
            f |= LAMP_FAIL if lamp < 0.5 else 0
            f |= LAMP_OK if lamp >= 0.5 else 0
            f |= BATT_LOW if batt < low and mains != 0.0 and charged else 0
            f |= BATT_OK if batt >= low + p.BATTERY_CLEAR_MARGIN_PCT else 0
        return f

    # --- per batch -------------------------------------------------------------------
    def _plausible(self, d: Dev, ts: int, arrival: int, clock: int) -> bool:
        """Quarantine, reading by reading (10 min ahead; 3 agreeing readings = skew)."""
        if ts <= max(clock, arrival) + 600_000:
            d.q_run = 0
            return True
        off = ts - arrival
        run = d.q_run + 1 if d.q_run > 0 and abs(off - d.q_off) <= 60_000 else 1
        d.q_off = off
        if run >= 3:
            d.q_run = 0
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
                and ts > max(d.last_event_ts, d.last_ts, arrival_ms) + 600_000
            ):
                if name != "activated":
                    d.quarantined += 1
                    self.quarantined += 1
                    continue
                ts = arrival_ms
            if ts < d.last_event_ts and name != "activated":
                self.late_events += 1
                continue
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
                self.machine.late_alarm_event(slot, ts, hist)
            else:
                merged.append((slot, ts, name, key))
        for n, (slot, ts, vals) in enumerate(rd_list):
            d = self.devs.get(slot)
            if d is None:
                continue
            if ts <= d.last_ts:
                self.late_readings += 1
                continue
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
                if len(d.flag_hist) > p.LOOKBACK_SAMPLES:
                    d.flag_hist.pop(0)
            d.last_flags = flags
            items.append((ts, 1, slot, n, (flags, row_detail(vals, comp, base, rate[0]))))
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
        live = [
            d.last_ts
            for d in self.devs.values()
            if d.zone == zone
            and d.kind in (SMOKE, HEAT, MULTI)
            and d.last_ts > NONE
            and self.clock - d.last_arrival < 3 * d.interval_ms
        ]
        if not live:
            return 2**62
        return min(t for t in live if t >= max(live) - 300_000)

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
