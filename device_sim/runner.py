"""Running a publish job in one or several processes, with live counters.

A job is plain, picklable data: every worker rebuilds the same estate and
simulation from the seed and publishes its share of the sites, so the
traffic is identical whatever the number of processes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from device_sim.estate import generate_estate, make_site_ids
from device_sim.publisher import Counters, Publisher
from device_sim.timeline import Simulation, simulate
from firesafe.settings import MqttEndpoint

log = logging.getLogger(__name__)

POLL_S = 0.5
# Slots per worker in the shared counters array.
_FIELDS = 8  # messages, readings, errors, event_ms, started_ms, finished_ms, cpu_ms, finished


@dataclass(frozen=True)
class Job:
    sites: int
    devices_per_site: int
    seed: int
    scenarios: tuple[str, ...]
    duration_s: float
    start_ms: int
    endpoint: MqttEndpoint
    speed: float | None
    site_prefix: str = "S"
    gateway_fraction: float = 0.0
    telemetry_qos: int = 1
    connections: int = 0
    share: tuple[str, ...] | None = None
    client_id: str = ""
    pinned: tuple[tuple[str, float], ...] = ()

    def simulation(self) -> Simulation:
        estate = generate_estate(
            self.sites, self.devices_per_site, self.seed, site_prefix=self.site_prefix
        )
        sim = simulate(
            estate,
            self.scenarios,
            duration_s=self.duration_s,
            seed=self.seed,
            start_ms=self.start_ms,
            gateway_fraction=self.gateway_fraction,
            telemetry_qos=self.telemetry_qos,
            pinned=self.pinned,
        )
        return sim if self.share is None else sim.with_sites(self.share)


def _worker(job: Job, slot: int, shared: SynchronizedArray[Any]) -> None:
    logging.basicConfig(level=logging.WARNING)
    base = slot * _FIELDS

    def report(cn: Counters) -> None:
        shared[base : base + 7] = [
            cn.messages,
            cn.readings,
            cn.errors,
            cn.event_ms,
            cn.started_ms,
            cn.finished_ms,
            cn.cpu_ms,
        ]

    try:
        Publisher(
            job.simulation(), job.endpoint, job.speed, job.connections, job.client_id, report
        ).run()
    finally:
        shared[base + 7] = 1


def run_job(
    job: Job, processes: int, progress: Callable[[Counters, float], None] | None = None
) -> Counters:
    """Publish `job` from `processes` processes; `progress(totals, elapsed_s)` while it runs."""
    tag = f"fs-sim-{random.getrandbits(32):08x}"
    if processes <= 1:
        wall0 = time.monotonic()
        pub = Publisher(
            job.simulation(),
            job.endpoint,
            job.speed,
            job.connections,
            f"{tag}-0",
            (lambda cn: progress(cn, time.monotonic() - wall0)) if progress else None,
        )
        return pub.run()
    sites = make_site_ids(job.sites, job.site_prefix)
    shares = [tuple(sites[i::processes]) for i in range(processes)]
    shares = [s for s in shares if s]
    per_conn = _split(job.connections, len(shares))
    ctx = mp.get_context("spawn")
    shared: SynchronizedArray[Any] = ctx.Array("q", _FIELDS * len(shares), lock=False)
    workers = [
        ctx.Process(
            target=_worker,
            args=(
                replace(job, share=share, connections=per_conn[i], client_id=f"{tag}-{i}"),
                i,
                shared,
            ),
            name=f"sim-publisher-{i}",
        )
        for i, share in enumerate(shares)
    ]
    wall0 = time.monotonic()
    for w in workers:
        w.start()
    totals = Counters()
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(POLL_S)
            totals = _totals(shared, len(shares))
            if progress:
                progress(totals, time.monotonic() - wall0)
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                log.error("publisher %s did not stop; terminating it", w.name)
                w.terminate()
    totals = _totals(shared, len(shares))
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        log.error("publisher processes failed: %s", ", ".join(failed))
        totals.errors += len(failed)
    return totals


def _totals(shared: SynchronizedArray[Any], n: int) -> Counters:
    t = Counters()
    for i in range(n):
        b = i * _FIELDS
        t.messages += shared[b]
        t.readings += shared[b + 1]
        t.errors += shared[b + 2]
        t.event_ms = max(t.event_ms, shared[b + 3])
    started = [shared[i * _FIELDS + 4] for i in range(n) if shared[i * _FIELDS + 4]]
    t.started_ms = min(started, default=0)
    t.finished_ms = max(shared[i * _FIELDS + 5] for i in range(n)) if n else 0
    t.cpu_ms = sum(shared[i * _FIELDS + 6] for i in range(n))
    return t


def _split(total: int, parts: int) -> Sequence[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
