"""Scale-out and failover of sharded ingest (issue #9, docs/scaling.md).

    .venv/bin/python bench/ingest_scale.py [--messages N] [--processes 1,2,4]

Starts its own Mosquitto (firesafe.embedded.EmbeddedBroker: the tuned config
ingest ships with) on a free port. Every run gets a fresh scratch database
`firesafe_bench_<random>` on --server-url (migrated, --devices devices in
sites of 100 registered with COPY, dropped at the end) and a fresh MQTT
client id, so no run sees another's rows, state or broker sessions.

1. scale: for each N in --processes, N real `firesafe ingest` processes
   (sharded, no per-process configuration) share the 64 shards. Once every
   shard is owned, the shares are within one of each other and every shard's
   session is subscribed (a probe on `fs/v1/{site}/probe` of every site has
   come back as a reject: a message published before a shard's session
   exists would not be queued by the broker), --publishers processes publish
   the same QoS 1 burst of --messages single-reading messages as fast as they
   can. Rate = messages / (first publish -> every row in the database), and
   its ratio to one process, all in the same invocation. Where the time goes:
   CPU seconds of each ingest process, of the broker, of PostgreSQL (its
   processes for this database, from /proc) and of the publishers, and the
   database's own `active_time` (pg_stat_database: time spent executing
   statements).
2. gateway: one process, --gateway-readings readings in gateway batches of
   --batch (CPU per 1,000 gateway readings).
3. failover: 3 processes, a QoS 1 stream paced so every device reports twice
   per --interval (its offline limit is 3 intervals), `kill -9` of one
   process in the middle: the time from the kill until every shard is owned
   again (pg_locks, polled every 50 ms), then every reading stored exactly
   once, no alarm duplicated and no `offline` alarm (every device kept
   reporting).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    CpuMeter,
    PidSpec,
    fmt_int,
    forget_session,
    postgres_pids,
    register_copy,
    scratch_database,
)
from bench.ingest.publishers import collect_publishers, start_publishers  # noqa: E402
from bench.ingest.workload import SITE_SIZE, Workload, fleet  # noqa: E402
from storage import shards as leases  # noqa: E402

log = logging.getLogger("bench.ingest_scale")

SHARDS_DEFAULT = 64
READY_TIMEOUT_S = 120.0
PROBE_EVERY_S = 0.5
POLL_S = 0.2
TAKEOVER_POLL_S = 0.05
TARGET_RATIO = 0.9  # issue #9: adding processes must not cost throughput
TARGET_TAKEOVER_S = 10.0
STOP_TIMEOUT_S = 30.0


# ==================================================================== cluster
@dataclass
class Cluster:
    """N `firesafe ingest` processes against one database and broker."""

    dsn: str
    mqtt_url: str
    base: str
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, n: int) -> None:
        env = {
            **os.environ,
            "FIRESAFE_MQTT_URL": self.mqtt_url,
            "FIRESAFE_DATABASE_URL": self.dsn,
            "FIRESAFE_MQTT_CLIENT_ID": self.base,
            "FIRESAFE_INGEST_MODE": "sharded",
            "FIRESAFE_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-m", "firesafe.cli", "ingest"]
        for k in range(n):
            out = (self.log_dir / f"{self.base}-{k}.log").open("ab")
            self.procs.append(
                subprocess.Popen(
                    cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def kill(self, index: int) -> None:
        victim = self.procs.pop(index)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

    def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(p.wait(STOP_TIMEOUT_S))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
        self.procs = []
        return codes

    def forget_sessions(self, shards: int) -> None:
        host, port = endpoint(self.mqtt_url)
        for k in range(shards):
            forget_session(host, port, f"{self.base}-s{k}")


def endpoint(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


def owners(db: psycopg.Connection[Any]) -> tuple[list[int], dict[int, int]]:
    """(live processes, shard -> owner) as pg_locks shows them (storage/shards.py)."""
    rows = db.execute(
        leases.VIEW_SQL.encode(), (leases.SHARD_LOCK_CLASS, leases.MEMBER_LOCK_CLASS)
    ).fetchall()
    members = sorted({int(pid) for cls, _, pid in rows if cls == leases.MEMBER_LOCK_CLASS})
    owned = {int(obj): int(pid) for cls, obj, pid in rows if cls == leases.SHARD_LOCK_CLASS}
    return members, owned


def balanced(db: psycopg.Connection[Any], n: int, shards: int) -> bool:
    members, owned = owners(db)
    if len(members) != n or len(owned) != shards:
        return False
    per = [list(owned.values()).count(pid) for pid in members]
    return max(per) - min(per) <= 1


def count(db: psycopg.Connection[Any], query: str) -> int:
    row = db.execute(query.encode()).fetchone()
    return int(row[0]) if row else 0


def wait_until_subscribed(
    db: psycopg.Connection[Any], mqtt_url: str, sites: list[str], n: int, shards: int
) -> float:
    """Until every shard is owned, shares are balanced and a probe of every site
    has come back through its shard's session as a reject. Seconds taken."""
    t0 = time.monotonic()
    host, port = endpoint(mqtt_url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-probe-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv311,
    )
    client.connect(host, port)
    client.loop_start()
    query = "SELECT count(DISTINCT topic) FROM rejects WHERE topic LIKE 'fs/v1/%/probe'"
    try:
        while not balanced(db, n, shards):
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                raise RuntimeError(f"{n} process(es) did not share the shards in time")
            time.sleep(POLL_S)
        while count(db, query) < len(sites):
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                raise RuntimeError("not every shard's session came up in time")
            for site in sites:  # probes before a session exists are lost: resend
                client.publish(f"fs/v1/{site}/probe", b"{}", qos=1)
            time.sleep(PROBE_EVERY_S)
        if not balanced(db, n, shards):  # the probes must not have raced a handover
            raise RuntimeError("shares changed while probing")
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - t0


# ================================================================= publishers
class Publishers:
    """bench/ingest/publishers.py: the publisher processes (pre-encoded, QoS 1, windowed)."""

    def __init__(self, mqtt_url: str, w: Workload, n: int) -> None:
        host, port = endpoint(mqtt_url)
        self.pubs = start_publishers(host, port, w, n)

    def go(self, at: float) -> None:
        for _, conn in self.pubs:
            conn.send(at)

    def collect(self, timeout: float = 300) -> list[dict[str, Any]]:
        out = collect_publishers(self.pubs, timeout)
        self.pubs = []
        return out


# ===================================================================== runs
@dataclass
class Run:
    name: str
    processes: int
    messages: int
    readings: int
    ready_s: float = 0.0
    elapsed: float = 0.0
    complete: bool = False
    stored: int = 0
    unique: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    pub_cpu: float = 0.0
    db_active_s: float = 0.0
    exit_codes: list[int | None] = field(default_factory=list)
    takeover_s: float | None = None
    alarms: dict[str, int] = field(default_factory=dict)
    duplicated_alarms: int = 0
    bytes_per_row: float = 0.0  # telemetry partitions with their indexes
    rollup_bytes_per_row: float = 0.0  # telemetry_rollup_1m with its indexes
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed if self.complete and self.elapsed > 0 else 0.0

    @property
    def ingest_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith("ingest-"))


@contextmanager
def estate(args: argparse.Namespace, interval_s: float) -> Iterator[tuple[str, list[str]]]:
    """A scratch database, migrated, with the fleet registered: (dsn, sites)."""
    from storage.migrate import migrate

    with scratch_database(args.server_url, keep=args.keep) as dsn:
        migrate(dsn)
        devices = fleet(args.devices)
        for d in devices:
            d["interval_s"] = interval_s
        register_copy(dsn, devices)
        yield dsn, sorted({d["site"] for d in devices})


def db_active_ms(db: psycopg.Connection[Any]) -> float:
    row = db.execute(
        b"SELECT active_time FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return float(row[0] or 0.0) if row else 0.0


def run(
    args: argparse.Namespace,
    mqtt_url: str,
    broker_pid: int,
    name: str,
    n: int,
    w: Workload,
    *,
    kill_at: float | None = None,
    interval_s: float = 60.0,
) -> Run:
    """One run: n processes, one workload (kill_at: kill -9 one process once this
    share of the rows is stored)."""
    res = Run(name, n, w.messages, w.readings)
    log_dir = Path(tempfile.gettempdir())
    with estate(args, interval_s) as (dsn, sites), psycopg.connect(dsn, autocommit=True) as db:
        cluster = Cluster(dsn, mqtt_url, f"bench-scale-{uuid.uuid4().hex[:8]}", log_dir)
        shards = count(db, "SELECT value::int FROM firesafe_meta WHERE key = 'shards'")
        dbname = str(db.info.dbname)
        pubs: Publishers | None = None
        try:
            cluster.start(n)
            res.ready_s = wait_until_subscribed(db, mqtt_url, sites, n, shards)
            groups: dict[str, PidSpec] = {
                f"ingest-{k}": [pid] for k, pid in enumerate(cluster.pids)
            }
            groups["broker"] = [broker_pid]
            groups["postgres"] = lambda: postgres_pids(dbname)
            meter = CpuMeter(groups)
            pubs = Publishers(mqtt_url, w, args.publishers)
            go = time.time() + 0.2
            pubs.go(go)
            meter.start()
            active0 = db_active_ms(db)
            last, last_change = 0, time.monotonic()
            killed_at: float | None = None
            while True:
                time.sleep(POLL_S)
                stored = count(db, "SELECT count(*) FROM telemetry")
                if stored != last:
                    last, last_change = stored, time.monotonic()
                if kill_at is not None and killed_at is None and stored >= kill_at * w.readings:
                    cluster.kill(0)
                    killed_at = time.monotonic()
                    while not balanced(db, n - 1, shards):
                        time.sleep(TAKEOVER_POLL_S)
                        if time.monotonic() - killed_at > 120:
                            break
                    else:
                        res.takeover_s = time.monotonic() - killed_at
                    last_change = time.monotonic()
                if stored >= w.readings:
                    res.complete = True
                    break
                if time.monotonic() - last_change > args.stall_timeout:
                    res.note = f"stalled at {stored:,} of {w.readings:,} rows"
                    break
            end = time.time()
            res.cpu = meter.stop()
            published = pubs.collect()
            pubs = None
            first = min((p["first"] for p in published), default=go)
            res.elapsed = end - first
            res.pub_cpu = sum(p["cpu"] for p in published)
            acked = sum(p["acked"] for p in published)
            if acked != w.messages:
                res.note += f" publishers got {acked:,} PUBACKs of {w.messages:,}"
        finally:
            if pubs is not None:
                pubs.collect(5)
            res.exit_codes = cluster.stop()
            cluster.forget_sessions(shards or SHARDS_DEFAULT)
        # Backends flush their statistics when they exit: read them once stopped.
        time.sleep(1.0)
        res.db_active_s = (db_active_ms(db) - active0) / 1000
        stored_row = db.execute(
            b"SELECT count(*), count(DISTINCT (device_id, ts, seq)) FROM telemetry"
        ).fetchone()
        assert stored_row is not None
        res.stored, res.unique = int(stored_row[0]), int(stored_row[1])
        for kind, number in db.execute(
            b"SELECT type, count(*) FROM alarms GROUP BY type ORDER BY type"
        ).fetchall():
            res.alarms[str(kind)] = int(number)
        db.execute(b"VACUUM ANALYZE telemetry_rollup_1m")
        size = db.execute(
            b"SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            b"WHERE inhparent = 'telemetry'::regclass), "
            b"pg_total_relation_size('telemetry_rollup_1m'), "
            b"(SELECT count(*) FROM telemetry_rollup_1m)"
        ).fetchone()
        if size:
            res.bytes_per_row = float(size[0]) / max(1, res.stored)
            res.rollup_bytes_per_row = float(size[1]) / max(1, int(size[2]))
        res.duplicated_alarms = count(
            db,
            "SELECT count(*) FROM (SELECT 1 FROM alarms GROUP BY device_id, type, opened_at "
            "HAVING count(*) > 1) d",
        )
    log.info("%s: %.1f s, %s msg/s %s", name, res.elapsed, fmt_int(res.rate), res.note)
    return res


# ====================================================================== report
def where_time_goes(r: Run) -> str:
    per_proc = ", ".join(
        f"{r.cpu.get(f'ingest-{k}', 0.0):.1f}" for k in range(r.processes) if f"ingest-{k}" in r.cpu
    )
    return (
        f"ingest {r.ingest_cpu:.1f} s ({per_proc}), broker {r.cpu.get('broker', 0.0):.1f} s, "
        f"postgres {r.cpu.get('postgres', 0.0):.1f} s (statements active {r.db_active_s:.1f} s), "
        f"publishers {r.pub_cpu:.1f} s; machine {r.cpu.get('machine', 0.0):.1f} of "
        f"{r.elapsed * (os.cpu_count() or 1):.1f} core-s"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=10_000, help="in sites of 100")
    p.add_argument("--messages", type=int, default=60_000, help="burst size (issue #9: 200,000)")
    p.add_argument("--processes", default="1,2,4", help="ingest processes per scale run")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--gateway-readings", type=int, default=100_000, help="0: skip")
    p.add_argument("--batch", type=int, default=100, help="readings per gateway message")
    p.add_argument("--failover", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--interval", type=float, default=10.0, help="failover: the devices' reporting interval"
    )
    p.add_argument("--failover-seconds", type=float, default=20.0)
    p.add_argument("--stall-timeout", type=float, default=60.0)
    p.add_argument(
        "--server-url",
        default=os.environ.get(
            "FIRESAFE_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch databases")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    from firesafe.embedded import EmbeddedBroker

    verdicts: list[tuple[bool, str]] = []
    base_ts = int((time.time() - 6 * 3600) * 1000)
    with tempfile.TemporaryDirectory(prefix="firesafe-scale-") as work:
        broker = EmbeddedBroker(Path(work) / "mqtt", port=None)
        mqtt_url = broker.start()
        assert broker.proc is not None
        broker_pid = broker.proc.pid
        print(
            f"firesafe sharded ingest: {args.devices:,} devices in "
            f"{math.ceil(args.devices / SITE_SIZE):,} sites, burst of {args.messages:,} QoS 1 "
            f"messages, {args.publishers} publisher processes; {os.cpu_count()} cores "
            f"shared by broker, PostgreSQL, publishers and ingest",
            flush=True,
        )
        try:
            runs: list[Run] = []
            for n in [int(x) for x in args.processes.split(",") if x]:
                w = Workload("telemetry", args.devices, args.messages, args.messages, base_ts)
                r = run(args, mqtt_url, broker_pid, f"burst x{n}", n, w)
                runs.append(r)
                one = runs[0].rate
                ratio = r.rate / one if one else 0.0
                print(
                    f"{n} process(es): {fmt_int(r.rate)} msg/s (ratio to 1: {ratio:.2f}); "
                    f"ready in {r.ready_s:.1f} s; {r.unique:,} of {r.messages:,} stored once "
                    f"({r.stored - r.unique} twice) {r.note}\n  where the time goes: "
                    f"{where_time_goes(r)}; ingest {1000 * r.ingest_cpu / r.messages:.3f} "
                    f"CPU-s per 1,000 messages; database {r.bytes_per_row:,.0f} B per row "
                    f"(+ {r.rollup_bytes_per_row:,.0f} B per 1-minute rollup row)",
                    flush=True,
                )
                verdicts.append(
                    (r.complete and r.stored == r.unique == r.messages, f"{r.name}: exactly once")
                )
                if n != runs[0].processes:
                    verdicts.append(
                        (ratio >= TARGET_RATIO, f"{r.name}: ratio {ratio:.2f} >= {TARGET_RATIO}")
                    )
            if args.gateway_readings:
                messages = math.ceil(args.gateway_readings / args.batch)
                w = Workload(
                    "batch",
                    args.devices,
                    messages,
                    args.gateway_readings,
                    base_ts,
                    batch=args.batch,
                )
                r = run(args, mqtt_url, broker_pid, "gateway x1", 1, w)
                print(
                    f"gateway, 1 process: {fmt_int(r.readings / r.elapsed if r.complete else 0)} "
                    f"readings/s in {r.messages:,} batches of {args.batch}; {r.unique:,} of "
                    f"{r.readings:,} stored once {r.note}\n  where the time goes: "
                    f"{where_time_goes(r)}; ingest {1000 * r.ingest_cpu / r.readings:.3f} CPU-s "
                    f"per 1,000 gateway readings; postgres "
                    f"{r.readings / max(r.cpu.get('postgres', 0.0), 1e-9):,.0f} rows per CPU-s",
                    flush=True,
                )
                verdicts.append(
                    (r.complete and r.stored == r.unique == r.readings, f"{r.name}: exactly once")
                )
            if args.failover:
                rate = 2 * args.devices / args.interval
                messages = int(rate * args.failover_seconds)
                w = Workload(
                    "telemetry", args.devices, messages, messages, base_ts, rate=rate, seq_base=0
                )
                r = run(
                    args,
                    mqtt_url,
                    broker_pid,
                    "failover x3",
                    3,
                    w,
                    kill_at=0.5,
                    interval_s=args.interval,
                )
                took = f"{r.takeover_s:.2f} s" if r.takeover_s is not None else "never"
                print(
                    f"failover, 3 processes, kill -9 of one at half of a {rate:,.0f} msg/s "
                    f"stream of {messages:,}: every shard owned again {took} after the kill; "
                    f"{r.unique:,} of {r.messages:,} stored once ({r.stored - r.unique} twice); "
                    f"alarms {r.alarms or 'none'}, {r.duplicated_alarms} duplicated; survivors "
                    f"exited {r.exit_codes} {r.note}",
                    flush=True,
                )
                verdicts += [
                    (r.complete and r.stored == r.unique == r.messages, "failover: exactly once"),
                    (r.duplicated_alarms == 0, "failover: no alarm duplicated"),
                    (r.alarms.get("offline", 0) == 0, "failover: no offline alarm"),
                    (
                        r.takeover_s is not None and r.takeover_s <= TARGET_TAKEOVER_S,
                        f"failover: shards owned again within {TARGET_TAKEOVER_S:.0f} s",
                    ),
                    (all(c == 0 for c in r.exit_codes), "failover: survivors stop cleanly"),
                ]
        finally:
            broker.stop()
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
