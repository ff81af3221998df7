"""What a simulated estate publishes, in event time, with no I/O.

`simulate(estate, scenarios, duration_s=..., seed=..., start_ms=...)` places
the scenarios, then `Simulation.messages` generates every MQTT message the
devices send (lazily, re-iterable, deterministic for the seed) and
`Simulation.labels` is the ground truth. `Message.ts_ms` is when the message
is sent (event time); the payload's `ts` is the device's clock, which a
scenario may skew, and a delayed message arrives after later ones.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from device_sim import contract as c
from device_sim.estate import Estate
from device_sim.gwtext import ObjectArray, ReadingText, batch_payloads, single_row
from device_sim.physics import (
    DEVICE_ALARM_CONFIRM_SAMPLES,
    DEVICE_ALARM_OBSCURATION,
    DEVICE_ALARM_TEMPERATURE,
    Physics,
    Plan,
    finish,
)
from device_sim.scenarios import (
    LIBRARY,
    Context,
    Effect,
    Injection,
    Label,
    ScheduledEvent,
    StreamEffect,
)

log = logging.getLogger(__name__)

TICK_MS = 1000  # event time advances in 1 s steps; every interval is whole seconds
# Clean air before the first scenario so a detector's baseline can settle.
WARMUP_S = 120.0
WARMUP_FRACTION = 0.2  # ...or this share of a short run
# A user-information transmission unit forwards readings every few seconds.
GATEWAY_FLUSH_MS = 5000
# Readings per batch: ~130 bytes each keeps a batch well under 64 KiB.
MAX_BATCH_READINGS = 400
# Keep the due devices and physics plan of each tick of a period up to this long.
MAX_PLAN_PERIOD = 600
EVENT_QOS = 1  # contract section 1: events, status and batches are QoS 1
DETECTOR_KINDS = ("smoke", "heat", "multi")
# `firesafe sim --demo` (and `firesafe up --sim`): the opening minutes of a run,
# so a newcomer sees each kind of outcome within 3 minutes instead of waiting
# for chance: (scenario, start second). Each runs with its honest physics;
# only where it starts is fixed. After these, the others come at random.
DEMO_PLAN: tuple[tuple[str, float], ...] = (
    ("offline_will", 15.0),  # a device drops off: offline at once (retained last will)
    ("spike", 20.0),  # insect in a chamber: opens, judged transient, suppressed
    ("flaming_fire", 30.0),  # confirmed fire, the building's exit signs commanded
    ("insulation_fault", 40.0),  # earth fault past 300 mA: electrical alarm
    ("steam", 25.0),  # shower steam on a multi-sensor: suppressed by its humidity signature
)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    ts_ms: int  # event time at which it is sent
    readings: int = 0  # telemetry readings it carries (1, or a batch's length)


def expand_scenarios(names: Sequence[str]) -> list[str]:
    """Names as given, with `all` meaning one of each; unknown names raise."""
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(LIBRARY)
        elif name in LIBRARY:
            out.append(name)
        else:
            raise ValueError(f"unknown scenario {name!r} (try --scenario list)")
    return out


@dataclass
class Simulation:
    estate: Estate
    labels: list[Label]
    injections: list[Injection]
    start_ms: int
    end_ms: int
    seed: int
    gateway_fraction: float = 0.0
    sites: frozenset[str] | None = None  # only these sites' messages (a publisher's share)
    telemetry_qos: int = 1
    skipped: list[str] = field(default_factory=list)
    # Gateway batches built from columns and per-kind text templates (fast); False:
    # every reading as a dict through orjson (the reference the fast path is tested against).
    columnar: bool = True

    @property
    def messages(self) -> _MessageStream:
        return _MessageStream(self)

    def chunks(self) -> Iterator[list[Message]]:
        """Messages one event-time second at a time (cheaper to consume in bulk)."""
        return _Engine(self).run()

    def gateways(self) -> list[str | None]:
        """Per device (estate order): the gateway that forwards its telemetry, or None."""
        devs = self.estate.devices
        behind = np.random.default_rng([self.seed, 13]).random(len(devs)) < self.gateway_fraction
        return [f"{d.site}-{d.building}-GW" if behind[i] else None for i, d in enumerate(devs)]

    def messages_per_s(self) -> float:
        """Telemetry messages per second of event time (readings, batched or not)."""
        return sum(
            1.0 / d.interval_s
            for d in self.estate.devices
            if self.sites is None or d.site in self.sites
        )

    def with_sites(self, sites: Collection[str]) -> Simulation:
        """The same simulation, publishing only the messages of `sites`."""
        return Simulation(
            self.estate,
            self.labels,
            self.injections,
            self.start_ms,
            self.end_ms,
            self.seed,
            self.gateway_fraction,
            frozenset(sites),
            self.telemetry_qos,
            self.skipped,
            self.columnar,
        )


class _MessageStream:
    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def __iter__(self) -> Iterator[Message]:
        for chunk in self._sim.chunks():
            yield from chunk


def simulate(
    estate: Estate,
    scenarios: Sequence[str],
    *,
    duration_s: float,
    seed: int,
    start_ms: int,
    gateway_fraction: float = 0.0,
    telemetry_qos: int = 1,
    pinned: Sequence[tuple[str, float]] = (),
) -> Simulation:
    """Place `scenarios` (names, repeats allowed, `all`) in a run of `duration_s`.

    `pinned`: (scenario, start second) placed first, at exactly those times
    (e.g. the demo's opening minutes); the others go at random after them."""
    if duration_s <= 0:
        raise ValueError("duration_s must be > 0")
    end_ms = start_ms + round(duration_s * 1000)
    warmup = min(WARMUP_S, duration_s * WARMUP_FRACTION)
    ctx = Context(
        estate=estate,
        start_ms=start_ms,
        end_ms=end_ms,
        by_zone=estate.by_zone(),
        used_zones=set(),
        used_devices=set(),
    )
    injections: list[Injection] = []
    skipped: list[str] = []
    plan: list[tuple[str, float | None]] = [(name, at) for name, at in pinned]
    plan += [(name, None) for name in expand_scenarios(scenarios)]
    if pinned:
        warmup = max(warmup, max(at for _, at in pinned))
    for n, (name, at) in enumerate(plan):
        if name not in LIBRARY:
            raise ValueError(f"unknown scenario {name!r} (try --scenario list)")
        spec = LIBRARY[name]
        rng = np.random.default_rng([seed, 7, n] if at is None else [seed, 23, n])
        room = max(0.0, duration_s - warmup - spec.nominal_s)
        offset = warmup + float(rng.uniform(0.0, room)) if at is None else at
        start = start_ms + round(offset * 1000)
        inj = spec.build(ctx, rng, start)
        if inj is None:
            log.warning("scenario %s skipped: no fitting devices in this estate", name)
            skipped.append(name)
            continue
        injections.append(inj)
    return Simulation(
        estate=estate,
        labels=[i.label for i in injections],
        injections=injections,
        start_ms=start_ms,
        end_ms=end_ms,
        seed=seed,
        gateway_fraction=gateway_fraction,
        telemetry_qos=telemetry_qos,
        skipped=skipped,
    )


def _dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


class _Engine:
    """The per-second loop that turns physics and scenarios into messages."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        devs = sim.estate.devices
        n = len(devs)
        self.devices = devs
        self.physics = Physics([d.baseline for d in devs], sim.seed)
        rng = np.random.default_rng([sim.seed, 11])
        self.interval_ms = np.array([d.interval_s * 1000 for d in devs], dtype=np.int64)
        self.phase_ms = (rng.random(n) * self.interval_ms).astype(np.int64)
        self.emit = np.array(
            [sim.sites is None or d.site in sim.sites for d in devs], dtype=np.bool_
        )
        self.emit_all = bool(self.emit.all())
        self.gateway = sim.gateways()
        # Devices have been running for a while: counters start anywhere low.
        self.seq: NDArray[np.int64] = np.random.default_rng([sim.seed, 17]).integers(
            0, 10_000, n, dtype=np.int64
        )
        self.kind = [d.kind for d in devs]
        self.telemetry_topic = [c.telemetry_topic(d.site, d.id) for d in devs]
        self.event_topic = [c.event_topic(d.site, d.id) for d in devs]
        self.status_topic = [c.status_topic(d.site, d.id) for d in devs]
        # Due devices per residue of the tick: (interval in ticks, residue) -> sorted indices.
        self.groups: dict[int, list[NDArray[np.intp]]] = {}
        ticks = self.interval_ms // TICK_MS
        slot = self.phase_ms // TICK_MS
        sub = self.phase_ms % TICK_MS
        for every in sorted(set(ticks.tolist())):
            members = np.nonzero(ticks == every)[0]
            per_slot = []
            for s in range(every):
                m = members[slot[members] == s]
                per_slot.append(m[np.argsort(sub[m], kind="stable")])
            self.groups[every] = per_slot
        self.sub = sub
        # Which devices are due repeats every `period` ticks: their plans are kept.
        period = math.lcm(*self.groups) if self.groups else 0
        self.period = period if 0 < period <= MAX_PLAN_PERIOD else 0
        self._plans: dict[int, tuple[NDArray[np.intp], NDArray[np.int64], Plan | None]] = {}
        self.effects: dict[int, list[Effect]] = {}
        self.stream: dict[int, list[StreamEffect]] = {}
        events: list[ScheduledEvent] = []
        self.status: list[tuple[int, int, bytes]] = []  # (ts, device, payload)
        for inj in sim.injections:
            for e in inj.effects:
                self.effects.setdefault(e.device, []).append(e)
            for s_eff in inj.stream:
                self.stream.setdefault(s_eff.device, []).append(s_eff)
                if s_eff.mode == "status":
                    self.status.append((s_eff.start_ms, s_eff.device, b"offline"))
                    self.status.append((s_eff.end_ms, s_eff.device, b"online"))
            events.extend(inj.events)
        self.events = sorted(events, key=attrgetter("ts_ms"))
        self.status.sort()
        self.has_effect = np.zeros(n, dtype=np.bool_)
        self.has_effect[list(self.effects)] = True
        self.is_detector = np.array([k in DETECTOR_KINDS for k in self.kind], dtype=np.bool_)
        # Smoke detectors report temperature but alarm on smoke only.
        self.heat_sensing = np.array([k in ("heat", "multi") for k in self.kind], dtype=np.bool_)
        self.alarm_count = np.zeros(n, dtype=np.int64)
        self.latched = np.zeros(n, dtype=np.bool_)
        self.corrupt_left: dict[int, list[str]] = {}
        self.jumped: set[int] = set()
        self.delayed: list[tuple[int, int, Message]] = []
        self.delayed_n = 0
        # Gateways: per device its gateway's number (-1: none), per gateway (site, id).
        gw_keys: dict[tuple[str, str], int] = {}
        self.gw_of = np.full(n, -1, dtype=np.int64)
        for i, gw in enumerate(self.gateway):
            if gw is not None:
                self.gw_of[i] = gw_keys.setdefault((devs[i].site, gw), len(gw_keys))
        self.gw_topic = [c.batch_topic(site, gw) for site, gw in gw_keys]
        # Per gateway, the readings waiting for the next flush, as rows of text pieces.
        self.buffers: dict[int, list[ObjectArray]] = {}
        # The columnar path: readings of gateway devices without stream effects.
        self.columnar = sim.columnar
        self.fast_gw = self.gw_of >= 0
        self.fast_gw[list(self.stream)] = False
        self.text = ReadingText([d.id for d in devs], self.kind)
        other_sites = list(sim.estate.sites)
        self.other_site = {
            s: next((o for o in other_sites if o != s), f"{s}x") for s in other_sites
        }

    # --- the loop ----------------------------------------------------------

    def run(self) -> Iterator[list[Message]]:
        sim = self.sim
        n_ticks = math.ceil((sim.end_ms - sim.start_ms) / TICK_MS)
        ev_i = 0
        st_i = 0
        first = [
            Message(self.status_topic[i], b"online", EVENT_QOS, True, sim.start_ms)
            for i in np.nonzero(self.emit)[0].tolist()
        ]
        yield first
        for t in range(n_ticks):
            t0 = sim.start_ms + t * TICK_MS
            t1 = min(t0 + TICK_MS, sim.end_ms)
            out: list[Message] = []
            resort = False
            if t and (t * TICK_MS) % GATEWAY_FLUSH_MS == 0:
                out.extend(self._flush(t0))
            while st_i < len(self.status) and self.status[st_i][0] < t1:
                ts, d, payload = self.status[st_i]
                st_i += 1
                if self.emit[d]:
                    out.append(Message(self.status_topic[d], payload, EVENT_QOS, True, ts))
                    resort = True
            items: list[tuple[int, int, int, Any]] = []  # (ts, order, device, body)
            while ev_i < len(self.events) and self.events[ev_i].ts_ms < t1:
                ev = self.events[ev_i]
                ev_i += 1
                items.append((ev.ts_ms, 1, ev.device, ev))
            telemetry = self._telemetry(t, t0, [it[2] for it in items])
            if items or telemetry[1]:
                # Readings and events of this second interleaved in event time, so
                # each device's seq follows its ts.
                items.extend(telemetry[1])
                items.extend((ts, 0, d, v) for d, ts, v in telemetry[0])
                items.sort(key=lambda it: (it[0], it[1]))
                for ts, _, d, body in items:
                    if isinstance(body, ScheduledEvent):
                        self._send_event(out, d, ts, body.type, body.detail)
                    else:
                        self._send_telemetry(out, d, ts, body)
            else:
                for d, ts, v in telemetry[0]:
                    self._send_telemetry(out, d, ts, v)
            while self.delayed and self.delayed[0][0] < t1:
                out.append(heapq.heappop(self.delayed)[2])
                resort = True
            if resort:
                out.sort(key=attrgetter("ts_ms"))
            if out:
                yield out
        tail = self._flush(sim.end_ms)
        tail.extend(m for _, _, m in sorted(self.delayed))
        if tail:
            yield tail

    def _telemetry(
        self, t: int, t0: int, busy: list[int]
    ) -> tuple[list[tuple[int, int, dict[str, Any]]], list[tuple[int, int, int, Any]]]:
        """This tick's readings: (device, ts, v) plus device-raised alarm events.

        Readings of gateway devices without stream effects, and without an event
        in this tick (`busy` or a device alarm: their seq must follow ts), go
        straight to their gateway's buffer as JSON text (`_buffer_columns`)."""
        due, sub, plan = self._due(t)
        if plan is None:
            return [], []
        t_ms = t0 + sub
        rng = np.random.default_rng([self.sim.seed, 19, t])
        # Only this publisher's devices (the noise is drawn for all the due ones).
        vals = self.physics.sample_plan(plan, t_ms, self.sim.start_ms, rng)
        if not len(due):
            return [], []
        for j in np.nonzero(self.has_effect[due])[0].tolist():
            d = int(due[j])
            tj = int(t_ms[j])
            for e in self.effects[d]:
                if e.onset_ms <= tj <= e.end_ms:
                    v = {name: float(vals[name][j]) for name in self.devices[d].baseline}
                    e.shape((tj - e.onset_ms) / 1000.0, v)
                    for name, x in v.items():
                        vals[name][j] = x
        alarms = self._device_alarms(due, t_ms, vals)
        keep = np.ones(len(due), dtype=np.bool_)
        if self.columnar:
            fast = keep & self.fast_gw[due]
            if busy or alarms:
                fast &= ~np.isin(due, [*busy, *(a[2] for a in alarms)])
            if fast.any():
                self._buffer_columns(due, t0, vals, np.flatnonzero(fast))
                keep &= ~fast
        rest = np.flatnonzero(keep)
        if not rest.size:
            return [], alarms
        cols = {name: finish(name, col[rest]) for name, col in vals.items()}
        due_l: list[int] = due[rest].tolist()
        t_l: list[int] = t_ms[rest].tolist()
        out = []
        for j, d in enumerate(due_l):
            out.append((d, t_l[j], {name: cols[name][j] for name in c.KIND_READINGS[self.kind[d]]}))
        return out, alarms

    def _due(self, t: int) -> tuple[NDArray[np.intp], NDArray[np.int64], Plan | None]:
        """This publisher's devices due in tick t (in ms order), their ms in the
        tick, and the physics plan (None: no device of the estate is due)."""
        key = t % self.period if self.period else None
        found = self._plans.get(key) if key is not None else None
        if found is not None:
            return found
        parts = [slots[t % every] for every, slots in self.groups.items()]
        due = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(parts) > 1:
            due = due[np.argsort(self.sub[due], kind="stable")]
        if not len(due):
            found = (due, self.sub[due], None)
        else:
            own = None if self.emit_all else self.emit[due]
            plan = self.physics.plan(due, own)
            mine = due if own is None else due[own]
            found = (mine, self.sub[mine], plan)
        if key is not None:
            self._plans[key] = found
        return found

    def _buffer_columns(
        self,
        due: NDArray[np.intp],
        t0: int,
        vals: dict[str, NDArray[np.float64]],
        sel: NDArray[np.intp],
    ) -> None:
        """Readings `due[sel]` into their gateways' buffers as rows of text (gwtext)."""
        # Grouped by gateway, each gateway's readings in event-time order (due's order).
        sel = sel[np.argsort(self.gw_of[due[sel]], kind="stable")]
        dev = due[sel]
        seq = self.seq[dev]
        self.seq[dev] = (seq + 1) % c.SEQ_MODULUS
        rows = self.text.rows(dev, t0, self.sub[dev], seq, vals, sel)
        gws = self.gw_of[dev]
        cuts = [0, *(np.flatnonzero(gws[1:] != gws[:-1]) + 1).tolist(), len(dev)]
        gw_l: list[int] = gws[cuts[:-1]].tolist()
        for g, a, b in zip(gw_l, cuts, cuts[1:], strict=False):
            self.buffers.setdefault(g, []).append(rows[a:b])

    def _device_alarms(
        self, due: NDArray[np.intp], t_ms: NDArray[np.int64], vals: dict[str, NDArray[np.float64]]
    ) -> list[tuple[int, int, int, Any]]:
        """A detector's own decision: `fire_alarm` after N samples over its threshold."""
        det = self.is_detector[due]
        if not det.any():
            return []
        has_obs = self.physics.has["obscuration"][due]
        heat_ok = self.heat_sensing[due]
        obs_hi = has_obs & (vals["obscuration"] >= DEVICE_ALARM_OBSCURATION)
        temp_hi = heat_ok & (vals["temperature"] >= DEVICE_ALARM_TEMPERATURE)
        above = det & (obs_hi | temp_hi)
        count = np.where(above, self.alarm_count[due] + 1, 0)
        self.alarm_count[due] = count
        # Re-arm once well back below threshold (hysteresis).
        calm = ~(
            (has_obs & (vals["obscuration"] >= DEVICE_ALARM_OBSCURATION / 2))
            | (heat_ok & (vals["temperature"] >= DEVICE_ALARM_TEMPERATURE - 10))
        )
        self.latched[due[calm]] = False
        new = (count >= DEVICE_ALARM_CONFIRM_SAMPLES) & ~self.latched[due]
        out: list[tuple[int, int, int, Any]] = []
        for j in np.nonzero(new)[0].tolist():
            d = int(due[j])
            self.latched[d] = True
            if obs_hi[j]:
                detail = f"obscuration {vals['obscuration'][j]:.1f} %/m"
            else:
                detail = f"temperature {vals['temperature'][j]:.1f} °C"
            ts = int(t_ms[j])
            out.append((ts, 2, d, ScheduledEvent(ts, d, "fire_alarm", detail)))
        return out

    # --- sending -------------------------------------------------------------

    def _next_seq(self, d: int) -> int:
        seq = int(self.seq[d])
        self.seq[d] = (seq + 1) % c.SEQ_MODULUS
        return seq

    def _special(self, d: int, ts: int) -> StreamEffect | None:
        for s in self.stream.get(d, ()):
            if s.start_ms <= ts < s.end_ms:
                return s
        return None

    def _send_event(
        self, out: list[Message], d: int, ts: int, type_: str, detail: str | None
    ) -> None:
        if not self.emit[d]:
            return
        body: dict[str, Any] = {"ts": ts, "seq": 0, "type": type_}
        if detail:
            body["detail"] = detail
        self._send(out, d, ts, body, self.event_topic[d], EVENT_QOS)

    def _send_telemetry(self, out: list[Message], d: int, ts: int, v: dict[str, Any]) -> None:
        if d not in self.stream and self.gateway[d] is None:
            payload = orjson.dumps({"ts": ts, "seq": self._next_seq(d), "v": v})
            out.append(
                Message(self.telemetry_topic[d], payload, self.sim.telemetry_qos, False, ts, 1)
            )
            return
        body = {"ts": ts, "seq": 0, "v": v}
        gw = self.gateway[d]
        if gw is not None and self._special(d, ts) is None:
            body["seq"] = self._next_seq(d)
            body = {"device": self.devices[d].id, **body}
            self.buffers.setdefault(int(self.gw_of[d]), []).append(
                single_row(_dumps(body).decode())
            )
            return
        self._send(out, d, ts, body, self.telemetry_topic[d], self.sim.telemetry_qos, 1)

    def _send(
        self,
        out: list[Message],
        d: int,
        ts: int,
        body: dict[str, Any],
        topic: str,
        qos: int,
        readings: int = 0,
    ) -> None:
        """One message of device d through whatever its stream effects do to it."""
        s = self._special(d, ts)
        if s is None:
            body["seq"] = self._next_seq(d)
            out.append(Message(topic, _dumps(body), qos, False, ts, readings))
            return
        if s.mode in ("drop", "status"):
            return  # the device is off the air
        if s.mode == "seq_jump" and d not in self.jumped:
            self.jumped.add(d)
            self.seq[d] = int(s.value) % c.SEQ_MODULUS
        body["seq"] = self._next_seq(d)
        if s.mode == "skew":
            body["ts"] = ts + int(s.value)
        if s.mode == "corrupt" and topic == self.telemetry_topic[d]:
            left = self.corrupt_left.setdefault(d, list(s.modes))
            if left:
                out.append(self._corrupt(d, ts, body, left.pop(0)))
                return
        msg = Message(topic, _dumps(body), qos, False, ts, readings)
        if s.mode == "duplicate":
            out.extend((msg, msg))
        elif s.mode == "delay":
            # Deterministic jitter from the seq: 0..value ms late.
            late = (body["seq"] * 2654435761 % 1000) * int(s.value) // 1000
            self.delayed_n += 1
            heapq.heappush(
                self.delayed,
                (
                    ts + late,
                    self.delayed_n,
                    Message(topic, msg.payload, qos, False, ts + late, readings),
                ),
            )
        else:
            out.append(msg)

    def _corrupt(self, d: int, ts: int, body: dict[str, Any], mode: str) -> Message:
        """One bad input of contract section 3 in place of a telemetry message."""
        dev = self.devices[d]
        topic = self.telemetry_topic[d]
        first = c.KIND_READINGS[dev.kind][0]
        payload: bytes
        if mode == "invalid_json":
            payload = _dumps(body)[:-3]  # truncated frame
        elif mode == "missing_ts":
            payload = _dumps({k: v for k, v in body.items() if k != "ts"})
        elif mode == "non_finite":
            body["v"][first] = "__nan__"
            payload = _dumps(body).replace(b'"__nan__"', b"NaN")
        elif mode in ("non_numeric", "null_value", "bool_value"):
            body["v"][first] = {"non_numeric": "23.4", "null_value": None, "bool_value": True}[mode]
            payload = _dumps(body)
        elif mode == "too_large":
            body["note"] = "x" * (c.MAX_PAYLOAD_BYTES + 1024)
            payload = _dumps(body)
        elif mode == "unknown_device":
            topic = c.telemetry_topic(dev.site, f"{dev.site}-UNREGISTERED")
            payload = _dumps(body)
        elif mode == "site_mismatch":
            topic = c.telemetry_topic(self.other_site[dev.site], dev.id)
            payload = _dumps(body)
        elif mode == "bad_batch_reading":
            good = {"device": dev.id, **body}
            bad = {"device": dev.id, "ts": ts, "seq": self._next_seq(d), "v": {first: None}}
            topic = c.batch_topic(dev.site, f"{dev.site}-{dev.building}-GW")
            payload = _dumps({"ts": ts, "readings": [good, bad]})
        else:
            raise ValueError(mode)
        return Message(topic, payload, EVENT_QOS, False, ts)

    def _flush(self, now_ms: int) -> list[Message]:
        """Every gateway sends what it holds: `{"ts": now, "readings": [...]}`."""
        out: list[Message] = []
        for g, parts in self.buffers.items():
            rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
            for payload, n in batch_payloads(now_ms, rows, MAX_BATCH_READINGS, c.MAX_PAYLOAD_BYTES):
                out.append(Message(self.gw_topic[g], payload, EVENT_QOS, False, now_ms, n))
        self.buffers = {}
        return out
