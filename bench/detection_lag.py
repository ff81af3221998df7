"""Detection with a lagging connection: what holding readings for a late
neighbour costs per batch.

An estate of detectors (eight per zone) reporting every 10 s, a fifth of
them at pre-alarm level (a hazy building: the readings the alarm machine
must see); the devices on one publisher connection (30 %) arrive 100 s
behind the rest, so their zone mates' readings wait, queued, for them
(event-time order, issue 16). Each
batch also asks the engine what each device holds (`held_from`, marked with
every batch so a restart replays it). Prints the engine's per-batch time and
that of reading what is held, against a baseline measured in the same run:
the same question answered by scanning the queues (how `held_from` worked
before 2026-12-07).

    .venv/bin/python bench/detection_lag.py [--devices 20000] [--seconds 300]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection import Engine, Events, Readings
from firesafe import contract
from tests.test_detection_load import held_by_scan  # the baseline: scan every queued item

RI = contract.READING_INDEX
NR = len(contract.READINGS)
T0 = 1_764_072_000_000
INTERVAL_MS = 10_000
LAG_MS = 100_000
BATCH_MS = 1_000  # one batch per second of arrivals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--seconds", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    n = args.devices
    slots = np.arange(n, dtype=np.int64)
    kind = contract.KINDS.index("smoke")
    engine = Engine(capacity=n)
    engine.configure(slots.tolist(), [kind] * n, (slots // 8).tolist(), [{}] * n, [INTERVAL_MS] * n)
    phase = rng.integers(0, INTERVAL_MS, n)
    lagging = rng.random(n) < 0.3
    # Every reading of the run with its arrival time, in arrival order.
    rounds = args.seconds * 1000 // INTERVAL_MS
    ts = (T0 + phase[None, :] + INTERVAL_MS * np.arange(rounds)[:, None]).ravel()
    slot = np.tile(slots, rounds)
    arrival = ts + np.where(lagging[slot], LAG_MS, 0) + rng.integers(0, 500, ts.size)
    order = np.argsort(arrival, kind="stable")
    ts, slot, arrival = ts[order], slot[order], arrival[order]
    values = np.full((ts.size, NR), np.nan)
    values[:, RI["obscuration"]] = rng.normal(0.1, 0.03, ts.size)
    # A hazy building (dust, a building site, a smoky kitchen extract): a fifth
    # of the detectors at pre-alarm level, whose readings the alarm machine
    # must see (quiet readings never wait in a zone queue).
    hazy = (slot // 8) % 5 == 0
    values[hazy, RI["obscuration"]] = rng.uniform(1.6, 2.4, int(hazy.sum()))
    values[:, RI["temperature"]] = rng.normal(21.0, 0.2, ts.size)
    cuts = np.searchsorted(arrival, np.arange(arrival[0], arrival[-1], BATCH_MS))
    process_s: list[float] = []
    held_s: list[float] = []
    scan_s: list[float] = []
    queued: list[int] = []
    for a, b in itertools.pairwise(cuts.tolist()):
        if a == b:
            continue
        now = int(arrival[b - 1])
        started = time.perf_counter()
        engine.process(Readings(slot[a:b], ts[a:b], values[a:b]), Events.empty(), now)
        process_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        held = engine.held_from()
        held_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        scanned = held_by_scan(engine)
        scan_s.append(time.perf_counter() - started)
        assert held == scanned
        queued.append(sum(len(q) for q in engine._zq.values()))
    steady = slice(len(queued) // 2, None)  # once the lag is established
    items = int(statistics.median(queued[steady]))
    proc = statistics.median(process_s[steady]) * 1000
    mine = statistics.median(held_s[steady]) * 1000
    scan = statistics.median(scan_s[steady]) * 1000
    print(f"{n} detectors, 30 % of them {LAG_MS // 1000} s late, one batch per second")
    print(f"readings held for a late neighbour (median, steady): {items}")
    print(f"engine.process per batch: {proc:.1f} ms")
    print(f"held_from per batch: {mine:.2f} ms; scanning the queues (baseline): {scan:.1f} ms")
    print(f"baseline / held_from: {scan / max(mine, 1e-6):.0f}x")


if __name__ == "__main__":
    main()
