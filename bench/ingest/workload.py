"""The fleet and the workloads: what the publishers send and what must be stored."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

KINDS = ("smoke", "heat", "multi", "electrical", "evac")
SITE_SIZE = 100  # devices per site; one gateway per site
# Supervision runs on arrival time: with the per-kind default (10 s) a device
# whose replayed burst ends early would be raised `offline` 30 s later, in the
# middle of the next measurement. 60 s keeps the bench free of that artefact.
INTERVAL_S = 60.0
STEP_MS = 10_000  # event-time spacing of one device's readings (replayed history)


def device_id(d: int) -> str:
    return f"D{d:05d}"


def site_of(d: int) -> str:
    return f"S{d // SITE_SIZE:03d}"


def kind_of(d: int) -> str:
    return KINDS[d % len(KINDS)]


def fleet(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": device_id(d),
            "site": site_of(d),
            "building": "B1",
            "floor": "1",
            "zone": f"Z{(d % SITE_SIZE) // 10}",
            "kind": kind_of(d),
            "interval_s": INTERVAL_S,
        }
        for d in range(n)
    ]


def reading(kind: str, rng: random.Random) -> dict[str, float | int]:
    """Quiet, plausible readings (nothing here should raise an alarm)."""
    r = rng.random
    if kind == "smoke":
        return {"obscuration": round(0.05 + 0.2 * r(), 3), "temperature": round(20 + 3 * r(), 2)}
    if kind == "heat":
        return {"temperature": round(20 + 3 * r(), 2)}
    if kind == "multi":
        return {
            "obscuration": round(0.05 + 0.2 * r(), 3),
            "temperature": round(20 + 3 * r(), 2),
            "co": round(2 * r(), 2),
            "humidity": round(40 + 10 * r(), 1),
        }
    if kind == "electrical":
        return {
            "residual_current": round(5 + 20 * r(), 1),
            "cable_temperature": round(25 + 8 * r(), 1),
            "current": round(2 + 8 * r(), 2),
            "voltage": round(228 + 4 * r(), 1),
        }
    return {"battery": round(95 + 5 * r(), 1), "mains": 1, "lamp_ok": 1}


# =================================================================== workload
@dataclass
class Workload:
    kind: str  # "telemetry" | "batch"
    devices: int
    messages: int  # MQTT messages
    readings: int  # rows expected in the database
    base_ts: int = 0  # event time of round 0 (ms); steady: publish schedule instead
    seq_base: int = 0
    batch: int = 100
    rate: float = 0.0  # total msg/s over all publishers; 0 = as fast as they go
    steady: bool = False
    seed: int = 1
    mix: bool = False  # the real work: duplicates, rejects and alarm-level readings


# --mixed workload (burst of single readings): every DUP_EVERY-th message is sent
# twice (a device's retry), every BAD_EVERY-th is followed by a broken payload on
# the same topic (a reject), and every ALARM_EVERY-th smoke device reads
# 5 %/m (above the 3 %/m alarm level: fire alarms open and are verified).
DUP_EVERY = 50
BAD_EVERY = 100
ALARM_EVERY = 20


def mixed_counts(readings: int) -> tuple[int, int]:
    """(duplicates, rejects) a mixed workload of `readings` single readings adds."""
    return len(range(0, readings, DUP_EVERY)), len(range(0, readings, BAD_EVERY))


def build_messages(
    w: Workload, worker: int, workers: int, t0: float | None = None
) -> tuple[list[tuple[str, bytes]], list[float] | None]:
    """This worker's share, in publish order; a device always goes to one worker."""
    rng = random.Random(w.seed * 1000 + worker)
    out: list[tuple[str, bytes]] = []
    sched: list[float] | None = [] if w.steady else None
    dumps = orjson.dumps
    if w.kind == "telemetry":
        topics = [f"fs/v1/{site_of(d)}/{device_id(d)}/telemetry" for d in range(w.devices)]
        kinds = [kind_of(d) for d in range(w.devices)]
        for i in range(w.readings):
            d = i % w.devices
            if d % workers != worker:
                continue
            k = i // w.devices
            if w.steady:
                assert sched is not None
                assert t0 is not None
                offset = i / w.rate
                sched.append(offset)
                ts = int((t0 + offset) * 1000)
            else:
                ts = w.base_ts + k * STEP_MS
            # "ts" first: consumers read it at a fixed offset for latency.
            v = reading(kinds[d], rng)
            if w.mix and kinds[d] == "smoke" and (d // len(KINDS)) % ALARM_EVERY == 0:
                v = {"obscuration": 5.0, "temperature": 21.0}
            payload = dumps({"ts": ts, "seq": w.seq_base + k, "v": v})
            out.append((topics[d], payload))
            if w.mix and i % DUP_EVERY == 0:
                out.append((topics[d], payload))
            if w.mix and i % BAD_EVERY == 0:
                out.append((topics[d], b'{"ts": broken'))
        return out, sched
    sites = math.ceil(w.devices / SITE_SIZE)
    next_reading = [0] * sites
    for m in range(w.messages):
        s = m % sites
        if s % workers != worker:
            continue
        first, last = s * SITE_SIZE, min(w.devices, (s + 1) * SITE_SIZE)
        n_site = last - first
        count = min(w.batch, w.readings - m * w.batch)
        items = []
        for _ in range(count):
            r = next_reading[s]
            next_reading[s] += 1
            d, k = first + r % n_site, r // n_site
            items.append(
                {
                    "device": device_id(d),
                    "ts": w.base_ts + k * STEP_MS,
                    "seq": w.seq_base + k,
                    "v": reading(kind_of(d), rng),
                }
            )
        payload = dumps({"ts": w.base_ts + m, "readings": items})
        out.append((f"fs/v1/S{s:03d}/gateway/GW{s:03d}/batch", payload))
    return out, sched
