"""Capacity of one ingest process against a large registry (issue #9, docs/scaling.md).

    .venv/bin/python bench/capacity.py [--devices 1000000] [--modes single,sharded]

Creates a scratch database `firesafe_bench_<random>` on --server-url, migrates
it, registers --devices devices (--site-size per site, the five kinds in
turn) with one streamed COPY per registry table, starts its own tuned
Mosquitto (firesafe.embedded.EmbeddedBroker) and measures:

1. registry load: `load_registry` (the query) and `Registry(...)` (the cache
   ingest builds from it), median of --repeat;
2. start-up of a real `IngestService` in a fresh child process per mode:
   single (`firesafe up`: every shard, one session) and sharded (one process
   taking all the shards, one session each): seconds from `run()` until it
   is ready, holds every shard and every session is subscribed;
3. resident memory per registered device in that child: VmRSS after start-up
   minus VmRSS before the service was created (imports and interpreter
   excluded), over --devices; VmHWM (the peak, which includes the rows the
   registry was built from) is printed too;
4. a supervision pass (`Supervisor.check`) over every device, median of
   --passes.

Targets (issue #9): start within 30 s, <= 1.5 KiB resident per registered
device, a supervision pass within 100 ms. Printed as PASS/FAIL lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import forget_session, scratch_database  # noqa: E402

log = logging.getLogger("bench.capacity")

KINDS = ("smoke", "heat", "multi", "electrical", "evac")
INTERVAL_S = 60.0
TARGET_START_S = 30.0
TARGET_BYTES_PER_DEVICE = 1.5 * 1024
TARGET_SUPERVISION_MS = 100.0
# Start-up gives up after this long (a regression should fail, not hang the bench).
START_TIMEOUT_S = 600.0


# ==================================================================== registry
def site_of(d: int, site_size: int) -> str:
    return f"S{d // site_size:06d}"


def layout(d: int, site_size: int) -> tuple[str, str, str]:
    """(building, floor, zone) of device d: two buildings a site, five floors each, two
    zones of five devices a floor."""
    i = d % site_size
    return f"B{i * 2 // site_size}", f"F{(i // 10) % 5}", f"Z{(i % 10) // 5}"


def register_generated(dsn: str, devices: int, site_size: int) -> None:
    """`bench.common.register_copy` for a generated estate of any size: rows are
    streamed into COPY, never held as a list (1,000,000 dicts would be ~1 GB)."""
    sites = (devices + site_size - 1) // site_size
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY sites (id) FROM STDIN") as copy:
            for s in range(sites):
                copy.write_row((site_of(s * site_size, site_size),))
        places = sorted({layout(d, site_size) for d in range(min(devices, site_size))})
        buildings = sorted({p[0] for p in places})
        floors = sorted({p[:2] for p in places})
        with cur.copy("COPY buildings (site_id, building) FROM STDIN") as copy:
            for s in range(sites):
                for b in buildings:
                    copy.write_row((site_of(s * site_size, site_size), b))
        with cur.copy("COPY floors (site_id, building, floor) FROM STDIN") as copy:
            for s in range(sites):
                for b, f in floors:
                    copy.write_row((site_of(s * site_size, site_size), b, f))
        with cur.copy("COPY zones (site_id, building, floor, zone) FROM STDIN") as copy:
            for s in range(sites):
                for place in places:
                    copy.write_row((site_of(s * site_size, site_size), *place))
        with cur.copy(
            "COPY devices (id, site_id, building, floor, zone, kind, interval_s, thresholds) "
            "FROM STDIN"
        ) as copy:
            for d in range(devices):
                copy.write_row(
                    (
                        f"D{d:07d}",
                        site_of(d, site_size),
                        *layout(d, site_size),
                        KINDS[d % len(KINDS)],
                        INTERVAL_S,
                        "{}",
                    )
                )
        cur.execute("ANALYZE")


# ===================================================================== memory
def proc_status(field: str) -> int:
    """A `kB` field of /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


# ================================================================ measurements
def load_times(dsn: str, repeat: int) -> dict[str, float]:
    """Median seconds of the registry query and of building the cache from its rows."""
    from ingest.registry import Registry, ZoneIds, device_from_row
    from storage import ingest_store as store

    async def once() -> tuple[float, float, int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            rows = await store.load_registry(conn)
            t1 = time.perf_counter()
            registry = Registry((device_from_row(r) for r in rows), ZoneIds())
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1, len(registry)

    query, build = [], []
    for _ in range(repeat):
        q, b, n = asyncio.run(once())
        query.append(q)
        build.append(b)
    return {"query_s": statistics.median(query), "build_s": statistics.median(build), "n": n}


def supervision_pass(devices: int, passes: int) -> dict[str, float]:
    """Median milliseconds of Supervisor.check over every registered device (all
    live: the usual pass, which raises nothing) and of one where all are due."""
    from ingest.supervision import Supervisor

    now = int(time.time() * 1000)
    slots = np.arange(devices, dtype=np.int64)
    interval = np.full(devices, int(INTERVAL_S * 1000), np.int64)
    sup = Supervisor()
    sup.configure(slots, interval, np.full(devices, now, np.int64))
    quiet = []
    for _ in range(passes):
        t0 = time.perf_counter()
        due, _ = sup.check(now)
        quiet.append((time.perf_counter() - t0) * 1000)
        assert due.size == 0
    t0 = time.perf_counter()
    due, _ = sup.check(now + 10 * int(INTERVAL_S * 1000))  # the whole estate silent
    everyone = (time.perf_counter() - t0) * 1000
    assert due.size == devices
    return {"quiet_ms": statistics.median(quiet), "max_ms": max(quiet), "all_due_ms": everyone}


def start_child(
    mode: str, dsn: str, mqtt_url: str, client_id: str, conn: Any, verbose: bool
) -> None:
    """Child process: one IngestService from cold; report start-up time and memory."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        from firesafe.settings import Settings
        from ingest.service import IngestService

        settings = Settings(
            mqtt_url=mqtt_url,
            database_url=dsn,
            mqtt_client_id=client_id,
            ingest_mode="sharded" if mode == "sharded" else "single",
            log_level="WARNING",
        )

        async def go() -> dict[str, Any]:
            rss0 = proc_status("VmRSS")
            service = IngestService(settings)
            t0 = time.perf_counter()
            runner = asyncio.create_task(service.run())
            own = service.ownership
            deadline = t0 + START_TIMEOUT_S

            def ready() -> bool:
                # own.count is the database's shard count once the service joined.
                sessions = own.count if mode == "sharded" else 1
                return (
                    service.ready.is_set()
                    and len(own.owned) == own.count
                    and len(own.sources) == sessions
                    and service.subscribed
                )

            while not ready():
                if runner.done():
                    await runner
                    raise RuntimeError("ingest ended before it was ready")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.01)
            started = time.perf_counter() - t0
            rss1 = proc_status("VmRSS")
            out = {
                "start_s": started,
                "rss_before": rss0,
                "rss_after": rss1,
                "hwm": proc_status("VmHWM"),
                "devices": len(service.registry),
                "shards": len(own.owned),
                "sessions": len(own.sources),
            }
            service.request_stop()
            await asyncio.wait_for(runner, 60)
            return out

        conn.send(("done", asyncio.run(go())))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def measure_start(mode: str, dsn: str, mqtt_url: str, verbose: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    client_id = f"bench-cap-{uuid.uuid4().hex[:8]}"
    proc = ctx.Process(target=start_child, args=(mode, dsn, mqtt_url, client_id, child, verbose))
    proc.start()
    child.close()  # ours: a child that dies then shows as end of file
    try:
        if not parent.poll(START_TIMEOUT_S + 120):
            raise RuntimeError(f"{mode}: no answer from the ingest child")
        status, value = parent.recv()
        if status != "done":
            raise RuntimeError(f"{mode}: ingest child failed:\n{value}")
        return dict(value)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        host, port = mqtt_url.removeprefix("mqtt://").split(":")
        forget_session(host, int(port), client_id)
        for k in range(64 if mode == "sharded" else 0):
            forget_session(host, int(port), f"{client_id}-s{k}")


# ======================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=1_000_000)
    p.add_argument("--site-size", type=int, default=100, help="devices per site")
    p.add_argument("--modes", default="single,sharded")
    p.add_argument("--repeat", type=int, default=3, help="registry loads (median)")
    p.add_argument("--passes", type=int, default=9, help="supervision passes (median)")
    p.add_argument(
        "--server-url",
        default=os.environ.get(
            "FIRESAFE_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    from firesafe.embedded import EmbeddedBroker
    from storage.migrate import migrate

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    n = args.devices
    with tempfile.TemporaryDirectory(prefix="firesafe-capacity-") as work:
        broker = EmbeddedBroker(Path(work) / "mqtt", port=None)
        mqtt_url = broker.start()
        try:
            with scratch_database(args.server_url, keep=args.keep) as dsn:
                report = migrate(dsn)
                t0 = time.perf_counter()
                register_generated(dsn, n, args.site_size)
                reg_s = time.perf_counter() - t0
                say(
                    f"firesafe capacity: {n:,} devices in {-(-n // args.site_size):,} sites "
                    f"({report.flavour} flavour), registered by COPY in {reg_s:.1f} s; "
                    f"{os.cpu_count()} cores"
                )
                loads = load_times(dsn, args.repeat)
                say(
                    f"registry load: query {loads['query_s']:.2f} s + cache "
                    f"{loads['build_s']:.2f} s = {loads['query_s'] + loads['build_s']:.2f} s "
                    f"(median of {args.repeat})"
                )
                sup = supervision_pass(n, args.passes)
                say(
                    f"supervision pass over {n:,} devices: {sup['quiet_ms']:.1f} ms median "
                    f"(max {sup['max_ms']:.1f} ms of {args.passes}); every device due at "
                    f"once: {sup['all_due_ms']:.1f} ms"
                )
                results: dict[str, dict[str, Any]] = {}
                for mode in [m for m in args.modes.split(",") if m]:
                    r = measure_start(mode, dsn, mqtt_url, args.verbose)
                    results[mode] = r
                    per = (r["rss_after"] - r["rss_before"]) / max(1, r["devices"])
                    r["per_device"] = per
                    say(
                        f"start-up ({mode}): {r['start_s']:.1f} s until ready with "
                        f"{r['shards']} shard(s) and {r['sessions']} subscribed session(s); "
                        f"RSS {r['rss_before'] / 2**20:.0f} -> {r['rss_after'] / 2**20:.0f} MiB "
                        f"= {per:,.0f} B per registered device (peak {r['hwm'] / 2**20:.0f} MiB)"
                    )
                say()
                for mode, r in results.items():
                    say(
                        verdict(
                            r["start_s"] <= TARGET_START_S,
                            f"{mode} start-up {r['start_s']:.1f} s <= {TARGET_START_S:.0f} s",
                        )
                    )
                    say(
                        verdict(
                            r["per_device"] <= TARGET_BYTES_PER_DEVICE,
                            f"{mode} {r['per_device']:,.0f} B per device <= "
                            f"{TARGET_BYTES_PER_DEVICE:,.0f} B",
                        )
                    )
                say(
                    verdict(
                        sup["quiet_ms"] <= TARGET_SUPERVISION_MS,
                        f"supervision pass {sup['quiet_ms']:.1f} ms <= "
                        f"{TARGET_SUPERVISION_MS:.0f} ms",
                    )
                )
        finally:
            broker.stop()
    return (
        0 if all(line.startswith("PASS") for line in lines if line[:4] in ("PASS", "FAIL")) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
