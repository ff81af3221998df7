"""Throughput of the detection kernel vs the plain-Python reference.

Runs the engine on >= 1 M readings over 100 k devices (a quiet estate with a
few alarms, readings every 10 s, batches of one estate-wide round in random
arrival order) and the naive reference on a sample of the same stream, in
one run; prints readings/s and the ratio. Target: >= 5 M readings/s on one
core.

    .venv/bin/python bench/detection.py [--devices 100000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection import Engine, Events, Readings
from firesafe import contract
from tests.naive_detection import NaiveEngine

RI = contract.READING_INDEX
KIND_SHARE = {
    "smoke": 0.40,
    "heat": 0.15,
    "multi": 0.15,
    "mcp": 0.05,
    "electrical": 0.10,
    "evac": 0.15,
}
T0 = 1_764_072_000_000
INTERVAL_MS = 10_000


def estate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kinds = rng.choice(
        len(contract.KINDS), size=n, p=[KIND_SHARE[k] for k in contract.KINDS]
    ).astype(np.int8)
    zones = np.arange(n) // 8  # eight devices per zone
    return np.arange(n, dtype=np.int64), kinds, zones.astype(np.int64)


def round_values(kinds: np.ndarray, r: int, rng: np.random.Generator) -> np.ndarray:
    n = len(kinds)
    v = np.full((n, len(contract.READINGS)), np.nan)
    name = np.array(contract.KINDS)[kinds]
    sm = (name == "smoke") | (name == "multi")
    v[sm, RI["obscuration"]] = rng.normal(0.1, 0.05, sm.sum())
    fire = sm | (name == "heat")
    v[fire, RI["temperature"]] = rng.normal(21.0, 0.2, fire.sum())
    mu = name == "multi"
    v[mu, RI["co"]] = rng.normal(2.0, 0.5, mu.sum())
    v[mu, RI["humidity"]] = rng.normal(45.0, 1.0, mu.sum())
    el = name == "electrical"
    v[el, RI["residual_current"]] = rng.normal(30.0, 5.0, el.sum())
    v[el, RI["cable_temperature"]] = rng.normal(35.0, 0.5, el.sum())
    v[el, RI["current"]] = rng.normal(10.0, 1.0, el.sum())
    v[el, RI["voltage"]] = rng.normal(230.0, 1.0, el.sum())
    ev = name == "evac"
    v[ev, RI["battery"]] = 100.0
    v[ev, RI["mains"]] = 1.0
    v[ev, RI["lamp_ok"]] = 1.0
    # A few devices in trouble: a fire in zone 3, a leaking circuit, a dead lamp.
    hot = np.flatnonzero(fire & (np.arange(n) // 8 == 3))
    v[hot, RI["temperature"]] += 3.0 * r
    v[hot[np.isin(hot, np.flatnonzero(sm))], RI["obscuration"]] += 0.8 * r
    v[np.flatnonzero(el)[:5], RI["residual_current"]] = 450.0
    v[np.flatnonzero(ev)[:5], RI["lamp_ok"]] = 0.0
    return v


def make_batches(
    n: int, rounds: int, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[Readings]]:
    cfg = estate(n, rng)
    out = []
    for r in range(rounds):
        order = rng.permutation(n)  # arrival order within a round is random
        jitter = rng.integers(0, INTERVAL_MS, n)
        ts = T0 + r * INTERVAL_MS + jitter
        out.append(Readings(order.astype(np.int64), ts[order], round_values(cfg[1], r, rng)[order]))
    return cfg, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--naive-devices", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    (slots, kinds, zones), batches = make_batches(a.devices, a.rounds, rng)
    total = sum(len(b.slot) for b in batches)

    fast = 0.0
    for per_batch in (1, a.rounds):
        # per_batch=1: steady state, one estate-wide round (one reading per
        # device) per call; per_batch=rounds: a backlog drained in one call.
        eng = Engine(capacity=a.devices)
        eng.configure(slots, kinds, zones, [{}] * a.devices)
        calls = [
            Readings(
                np.concatenate([b.slot for b in batches[i : i + per_batch]]),
                np.concatenate([b.ts for b in batches[i : i + per_batch]]),
                np.concatenate([b.values for b in batches[i : i + per_batch]]),
            )
            for i in range(0, len(batches), per_batch)
        ]
        changes = 0
        t = time.process_time()  # CPU time of this process: other load does not count
        for b in calls:
            arrival = int(b.ts.max())  # as ingest: the batch's newest arrival
            changes += len(eng.process(b, Events.empty(), arrival))
            changes += len(eng.advance(arrival))
        dt = time.process_time() - t
        rate = total / dt
        fast = max(fast, rate)
        print(
            f"engine: {total:,} readings over {a.devices:,} devices, {len(calls)} batches "
            f"of {len(calls[0].slot):,}: {dt:.3f} s CPU = {rate / 1e6:.2f} M readings/s "
            f"({changes} alarm changes)"
        )

    # The reference on a sample of the same stream (its first devices).
    k = a.naive_devices
    ref = NaiveEngine()
    ref.configure(slots[:k].tolist(), kinds[:k].tolist(), zones[:k].tolist(), [{}] * k)
    sample = []
    for b in batches:
        sel = b.slot < k
        sample.append(Readings(b.slot[sel], b.ts[sel], b.values[sel]))
    n_ref = sum(len(s.slot) for s in sample)
    t = time.process_time()
    for s in sample:
        ref.process(s, Events.empty(), int(s.ts.max()))
        ref.advance(int(s.ts.max()))
    dt_ref = time.process_time() - t
    slow = n_ref / dt_ref
    print(
        f"naive:  {n_ref:,} readings over {k:,} devices in {dt_ref:.3f} s "
        f"= {slow / 1e3:.1f} k readings/s"
    )
    print(
        f"ratio:  {fast / slow:.0f}x  (target >= 5 M readings/s: "
        f"{'met' if fast >= 5e6 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
