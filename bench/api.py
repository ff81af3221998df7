"""API benchmark: seed a large estate with COPY, then time the hot queries under concurrency.

    .venv/bin/python bench/api.py [--database-url DSN] [--clients 8] [--requests 400]

Without --database-url (or FIRESAFE_DATABASE_URL) a scratch database is
created on --server-url and dropped at the end (unless --keep). Seeds
>= 10 M telemetry rows over the last 24 h and >= 100 k alarms over >= 10 k
devices, starts the API in a child process (uvicorn, as `firesafe api`
does) and measures, with concurrent clients, p50/p99 of:

- the alarm list filtered by site and status, first page and a deep page;
- a 24 h bucketed (5 min) telemetry query of one device.

Targets: alarm list p99 <= 50 ms, 24 h bucketed telemetry p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_database
from firesafe.contract import ALARM_TYPES
from storage.migrate import current_flavour, migrate

log = logging.getLogger("bench.api")

SITES = 100
DEVICES = 10_000
TELEMETRY_ROWS = 10_000_000
ALARMS = 100_000
# Seeding runs in parallel: one COPY per worker process.
SEED_WORKERS = max(2, min(8, os.cpu_count() or 2))
TARGET_ALARMS_P99_MS = 50.0
TARGET_TELEMETRY_P99_MS = 200.0
ADMIN_TOKEN = "bench-admin-" + secrets.token_hex(16)
TELEMETRY_COLUMNS = ["ts", "device_id", "seq", "received_at", "obscuration", "temperature"]


def site_of(device: int, sites: int) -> str:
    return f"S{device % sites:03d}"


def seed_registry(dsn: str, devices: int, sites: int) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY sites (id) FROM STDIN") as copy:
            for s in range(sites):
                copy.write_row((f"S{s:03d}",))
        with cur.copy("COPY buildings (site_id, building) FROM STDIN") as copy:
            for s in range(sites):
                copy.write_row((f"S{s:03d}", "B1"))
        with cur.copy("COPY floors (site_id, building, floor) FROM STDIN") as copy:
            for s in range(sites):
                copy.write_row((f"S{s:03d}", "B1", "1"))
        zones = {(site_of(d, sites), f"Z{d % 20}") for d in range(devices)}
        with cur.copy("COPY zones (site_id, building, floor, zone) FROM STDIN") as copy:
            for site, zone in sorted(zones):
                copy.write_row((site, "B1", "1", zone))
        with cur.copy("COPY devices (id, site_id, building, floor, zone, kind) FROM STDIN") as copy:
            for d in range(devices):
                copy.write_row(
                    (
                        f"D{d:05d}",
                        site_of(d, sites),
                        "B1",
                        "1",
                        f"Z{d % 20}",
                        "multi" if d % 2 else "smoke",
                    )
                )


def seed_telemetry_part(dsn: str, first: int, last: int, per_device: int, now_s: float) -> int:
    """Readings of devices [first, last), evenly over the last 24 h; binary COPY."""
    step = 86_400.0 / per_device
    rng = random.Random(first)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = now_s - 86_400.0
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(
            f"COPY telemetry ({', '.join(TELEMETRY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["timestamptz", "text", "int8", "timestamptz", "float8", "float8"])
        for d in range(first, last):
            device = f"D{d:05d}"
            offset = rng.random() * step
            for i in range(per_device):
                ts = epoch + timedelta(seconds=start + offset + i * step)
                copy.write_row((ts, device, i, ts, rng.random(), 20.0 + rng.random() * 5))
    return (last - first) * per_device


def seed_alarms(dsn: str, alarms: int, devices: int, sites: int) -> None:
    """Mostly cleared history over 90 days; open ones unique per (device, type)."""
    rng = random.Random(1)
    now = datetime.now(UTC)
    open_slots = devices * len(ALARM_TYPES)
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY alarms (id, device_id, site_id, building, floor, zone, type, verdict, status, "
            "reason, opened_at, confirmed_at, cleared_at) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["text"] * 10 + ["timestamptz"] * 3)
        for k in range(alarms):
            is_open = k % 10 == 0 and k // 10 < open_slots
            if is_open:
                slot = k // 10
                d, type_ = slot % devices, ALARM_TYPES[slot // devices]
                status = "active" if k % 20 == 0 else "acknowledged"
            else:
                d, type_ = rng.randrange(devices), rng.choice(ALARM_TYPES)
                status = "cleared"
            opened = now - timedelta(seconds=rng.randrange(90 * 86_400))
            copy.write_row(
                (
                    f"AL{k:07d}",
                    f"D{d:05d}",
                    site_of(d, sites),
                    "B1",
                    "1",
                    f"Z{d % 20}",
                    type_,
                    "confirmed",
                    status,
                    "bench",
                    opened,
                    opened,
                    opened + timedelta(minutes=5) if status == "cleared" else None,
                )
            )


def seed(dsn: str, args: argparse.Namespace) -> None:
    report = migrate(dsn)
    log.info("migrated (%s)", report.flavour)
    started = time.perf_counter()
    seed_registry(dsn, args.devices, args.sites)
    per_device = -(-args.rows // args.devices)
    bounds = [round(i * args.devices / SEED_WORKERS) for i in range(SEED_WORKERS + 1)]
    now_s = time.time()
    with ProcessPoolExecutor(SEED_WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [
            ex.submit(seed_telemetry_part, dsn, a, b, per_device, now_s)
            for a, b in itertools.pairwise(bounds)
        ]
        alarms_started = time.perf_counter()
        seed_alarms(dsn, args.alarms, args.devices, args.sites)
        log.info("alarms seeded in %.1fs", time.perf_counter() - alarms_started)
        rows = sum(f.result() for f in futures)
    log.info("%d telemetry rows seeded in %.1fs", rows, time.perf_counter() - started)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if current_flavour(dsn) == "timescale":
            conn.execute("CALL refresh_continuous_aggregate('telemetry_1m', NULL, NULL)")
        else:
            # Ingest maintains the rollup as it writes; the bench builds it in one go.
            # Only the seeded readings: the other columns' defaults (n = 0) are right.
            seeded = TELEMETRY_COLUMNS[4:]
            parts = ", ".join(f"min({r}), max({r}), sum({r}), count({r})" for r in seeded)
            names = ", ".join(f"{r}_min, {r}_max, {r}_sum, {r}_n" for r in seeded)
            conn.execute(
                f"INSERT INTO telemetry_rollup_1m (bucket, device_id, samples, {names}) "
                f"SELECT date_trunc('minute', ts), device_id, count(*), {parts} "
                "FROM telemetry GROUP BY 1, 2"
            )
        conn.execute("VACUUM ANALYZE")
    log.info("seeded and analysed in %.1fs", time.perf_counter() - started)


def serve(dsn: str, port: int, token: str) -> None:
    import uvicorn
    from pydantic import SecretStr

    from api.app import create_app
    from firesafe.settings import Settings

    settings = Settings(database_url=dsn, admin_token=SecretStr(token), api_port=port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


async def measure(
    base: str, clients: int, requests: int, make_url: Callable[[random.Random], str]
) -> list[float]:
    """Latencies (ms) of `requests` GETs issued by `clients` concurrent clients."""
    latencies: list[float] = []
    rng = random.Random(3)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for _ in range(requests):
            queue.put_nowait(make_url(rng))

        async def worker() -> None:
            while not queue.empty():
                url = queue.get_nowait()
                started = time.perf_counter()
                response = await http.get(url)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def deep_cursor(base: str, site: str, pages: int) -> str:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        cursor = None
        for _ in range(pages):
            params: dict[str, str | int] = {"site": site, "status": "cleared", "limit": 100}
            if cursor:
                params["cursor"] = cursor
            cursor = str(http.get("/api/v1/alarms", params=params).json()["next_cursor"] or "")
            if not cursor:
                cursor = None
            if cursor is None:
                raise RuntimeError(f"site {site} has fewer than {pages} pages")
        assert cursor is not None
        return cursor


def run(dsn: str, args: argparse.Namespace) -> bool:
    if not args.skip_seed:
        seed(dsn, args)
    port = args.port
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(dsn, port, ADMIN_TOKEN), daemon=True
    )
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code in (200, 503):
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        since = int((time.time() - 86_400) * 1000)  # epoch ms: nothing to URL-escape
        deep = {f"S{s:03d}": deep_cursor(base, f"S{s:03d}", args.deep_pages) for s in range(10)}
        cases: list[tuple[str, Callable[[random.Random], str], float]] = [
            (
                "alarms site+status, first page",
                lambda r: (
                    f"/api/v1/alarms?site=S{r.randrange(args.sites):03d}&status=cleared&limit=100"
                ),
                TARGET_ALARMS_P99_MS,
            ),
            (
                f"alarms site+status, page {args.deep_pages + 1}",
                lambda r: (
                    lambda s: f"/api/v1/alarms?site={s}&status=cleared&limit=100&cursor={deep[s]}"
                )(f"S{r.randrange(10):03d}"),
                TARGET_ALARMS_P99_MS,
            ),
            (
                "alarms site+status=active, first page",
                lambda r: (
                    f"/api/v1/alarms?site=S{r.randrange(args.sites):03d}&status=active&limit=100"
                ),
                TARGET_ALARMS_P99_MS,
            ),
            (
                "telemetry 24h, bucket=5m",
                lambda r: (
                    f"/api/v1/devices/D{r.randrange(args.devices):05d}/telemetry"
                    f"?bucket=5m&since={since}&limit=1000"
                ),
                TARGET_TELEMETRY_P99_MS,
            ),
            (
                "telemetry 24h, bucket=1h",
                lambda r: (
                    f"/api/v1/devices/D{r.randrange(args.devices):05d}/telemetry"
                    f"?bucket=1h&since={since}"
                ),
                TARGET_TELEMETRY_P99_MS,
            ),
        ]
        ok = True
        rows = []
        for name, make_url, target in cases:
            asyncio.run(measure(base, args.clients, max(20, args.requests // 10), make_url))
            lat = sorted(asyncio.run(measure(base, args.clients, args.requests, make_url)))
            p50 = statistics.median(lat)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            passed = p99 <= target
            ok &= passed
            rows.append((name, len(lat), p50, p99, target, "ok" if passed else "MISSED"))
        with psycopg.connect(dsn) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM alarms), "
                "(SELECT count(*) FROM devices)"
            ).fetchone()
        assert counts is not None
        print(
            f"\nestate: {counts[0]:,} telemetry rows, {counts[1]:,} alarms, "
            f"{counts[2]:,} devices, {current_flavour(dsn)}; {args.clients} concurrent "
            "clients\n"
        )
        print(f"{'query':42} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'target':>8}  result")
        for name, n, p50, p99, target, verdict in rows:
            print(f"{name:42} {n:5d} {p50:8.1f} {p99:8.1f} {target:8.0f}  {verdict}")
        return ok
    finally:
        server.terminate()
        server.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("FIRESAFE_DATABASE_URL"))
    parser.add_argument(
        "--server-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="where the scratch database is created",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--skip-seed", action="store_true", help="the database is seeded")
    parser.add_argument("--devices", type=int, default=DEVICES)
    parser.add_argument("--sites", type=int, default=SITES)
    parser.add_argument("--rows", type=int, default=TELEMETRY_ROWS)
    parser.add_argument("--alarms", type=int, default=ALARMS)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--deep-pages", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.database_url:
        return 0 if run(args.database_url, args) else 1
    with scratch_database(args.server_url, keep=args.keep) as dsn:
        return 0 if run(dsn, args) else 1


if __name__ == "__main__":
    sys.exit(main())
