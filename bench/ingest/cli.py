"""The command line: options, the scenarios in order, the printed report."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench.common import (
    register_copy,
    scratch_database,
)
from bench.ingest import nodered
from bench.ingest import stats as ingest_stats
from bench.ingest.consumers import PLAIN_DDL
from bench.ingest.report import latency_report, table, verdicts
from bench.ingest.runner import Bench, fetch_row
from bench.ingest.stats import rotated
from bench.ingest.workload import INTERVAL_S, KINDS, Workload, fleet, mixed_counts

log = logging.getLogger("bench.ingest")

# Consumers too slow for the whole workload: they get a slice and a time cap.
CAPPED = ("naive", "nodered")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--server-url",
        default=os.environ.get("FIRESAFE_BENCH_SERVER_URL"),
        help="PostgreSQL server where a scratch database is made (env "
        "FIRESAFE_BENCH_SERVER_URL); default: an embedded PostgreSQL in a temporary directory",
    )
    p.add_argument("--quick", action="store_true", help="small numbers, under 90 s")
    p.add_argument("--messages", type=int, help="burst: single-reading messages (200,000)")
    p.add_argument("--devices", type=int, help="registered devices (10,000)")
    p.add_argument("--gateway-readings", type=int, help="gateway: readings in total (1,000,000)")
    p.add_argument("--batch", type=int, default=100, help="gateway: readings per batch message")
    p.add_argument("--steady-rate", type=float, help="steady: msg/s (5,000)")
    p.add_argument("--steady-seconds", type=float, help="steady: duration (20)")
    p.add_argument("--naive-messages", type=int, help="cap of the naive consumer (20,000)")
    p.add_argument("--naive-seconds", type=float, help="time cap of the naive consumer (60)")
    p.add_argument("--publishers", type=int, default=3, help="publisher processes")
    p.add_argument(
        "--burst-rate",
        type=float,
        default=0.0,
        help="pace burst/gateway publishing to this many msg/s in total (0: flat out)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="give up when the row count has not moved for this long",
    )
    p.add_argument(
        "--profile",
        dest="profile",
        action="store_true",
        default=None,
        help="repeat the firesafe burst under py-spy (default: on unless --quick)",
    )
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument(
        "--only",
        default="",
        help="comma list of scenarios: publish,burst,mixed,gateway,steady",
    )
    p.add_argument(
        "--consumers",
        default="naive,batched,columnar,nodered,firesafe",
        help="columnar: the strongest bare baseline (bench/ingest/columnar.py)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds per scenario, the consumers' order rotated each round; "
        "median and range reported (bench/ingest/stats.py)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "messages": 30_000 if quick else 200_000,
        "devices": 10_000,
        "gateway_readings": 200_000 if quick else 1_000_000,
        "steady_rate": 2_000.0 if quick else 5_000.0,
        "steady_seconds": 5.0 if quick else 20.0,
        "naive_messages": 3_000 if quick else 20_000,
        "naive_seconds": 15.0 if quick else 60.0,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.profile is None:
        args.profile = not quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.INFO)
    from firesafe.embedded import EmbeddedBroker, free_port
    from storage.migrate import migrate

    cores = os.cpu_count() or 1
    only = set(filter(None, args.only.split(","))) or {
        "publish",
        "burst",
        "mixed",
        "gateway",
        "steady",
    }
    consumers = [c for c in args.consumers.split(",") if c]
    if "nodered" in consumers:
        why = nodered.ensure_installed()
        if why:
            print(f"bench: {why}", file=sys.stderr)
            consumers.remove("nodered")
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = EmbeddedBroker(work / "mqtt", port=free_port())
    if broker.implementation != "mosquitto":
        print("mosquitto is not on PATH: this benchmark measures Mosquitto", file=sys.stderr)
        return 2
    url = broker.start()
    assert broker.proc is not None
    assert broker.port is not None
    embedded_pg = None
    server_url = args.server_url
    if not server_url:
        from firesafe.embedded import EmbeddedPostgres

        embedded_pg = EmbeddedPostgres(work / "pg")
        server_url = embedded_pg.start()
        print(
            f"bench: no FIRESAFE_BENCH_SERVER_URL: using an embedded PostgreSQL ({server_url}); "
            "set it to measure your own server",
            file=sys.stderr,
        )
    try:
        with scratch_database(server_url, keep=args.keep) as dsn:
            report = migrate(dsn)
            t = time.perf_counter()
            register_copy(dsn, fleet(args.devices))
            reg_s = time.perf_counter() - t
            with psycopg.connect(dsn, autocommit=True) as conn:
                pg = {
                    k: fetch_row(conn, f"SHOW {k}".encode())[0]
                    for k in (
                        "server_version",
                        "synchronous_commit",
                        "shared_buffers",
                        "max_wal_size",
                    )
                }
            conf = (work / "mqtt" / "mosquitto.conf").read_text()
            tuned = [
                ln
                for ln in conf.splitlines()
                if ln.split(" ")[0]
                in (
                    "max_inflight_messages",
                    "max_queued_messages",
                    "max_queued_bytes",
                    "persistence",
                    "autosave_interval",
                )
            ]
            header = [
                "firesafe ingest benchmark" + (" (--quick)" if args.quick else ""),
                f"machine: {cores} cores, {socket.gethostname()}; broker, PostgreSQL, "
                "publishers and the consumer share them",
                f"broker: mosquitto {url} (firesafe.embedded.EmbeddedBroker config: "
                + ", ".join(tuned)
                + "; stock max_queued_messages 1000 would drop a burst)",
                f"database: scratch {dsn.split('dbname=')[-1].split()[0]} on PostgreSQL "
                f"{pg['server_version']} ({report.flavour} flavour, synchronous_commit="
                f"{pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}); "
                f"{args.devices:,} devices registered by COPY in {reg_s:.2f} s "
                f"({', '.join(KINDS)}; interval_s {INTERVAL_S:.0f})",
                f"publishers: {args.publishers} processes, paho QoS 1, pre-encoded, <= 50,000 in "
                f"flight; burst/gateway "
                + (f"paced at {args.burst_rate:,.0f} msg/s" if args.burst_rate else "flat out"),
            ]
            print("\n".join(header), flush=True)
            assert broker.proc is not None
            bench = Bench(args, "127.0.0.1", broker.port, dsn, broker.proc.pid)
            with bench.db:
                for table_name in ("bench_naive", "bench_batched"):
                    bench.db.execute(PLAIN_DDL.format(name=table_name).encode())
                run_all(bench, args, only, consumers)
            elapsed = time.time() - started
            print()
            print(table(bench.results, cores))
            print()
            if args.repeats > 1:
                print(
                    f"median (range) over {args.repeats} interleaved rounds; ratio paired "
                    "per round:"
                )
                print("\n".join(ingest_stats.report(bench.results)))
                print("\n".join(ingest_stats.report_pair(bench.results, ("firesafe", "columnar"))))
                print()
            print(
                "wall s: first publish -> last committed row (consumer's commit time, "
                "confirmed by counting rows in the database); rows = readings."
            )
            print("loss = expected - stored unique (device, ts, seq); dups = stored - unique.")
            print(
                "CPU%: CPU seconds / wall s of the run, per process group: publishers, "
                "broker, consumer process, PostgreSQL (this database's backends and the "
                "server's own processes), other = the rest of the machine (foreign load)."
            )
            print(
                "naive: one autocommitted INSERT per message (a gateway message is one "
                "multi-row INSERT); nodered: Node-RED, mqtt in (QoS 1) -> function building "
                "the same INSERT -> postgres node (node-red-contrib-postgres-multi, pooled). Both "
                f"run on a slice of {args.naive_messages:,} messages, their rate measured "
                f"over at most {args.naive_seconds:.0f} s (extrapolated below); loss and "
                "duplicates are counted once every row of the slice is in."
            )
            print(
                "firesafe: telemetry and its 1-minute rollup are truncated before each run "
                "(ingest stopped); each run gets its own event-time window."
            )
            lat = latency_report(bench.results)
            if lat:
                print()
                print(
                    "steady latency (ts = scheduled publish time; commit = after the "
                    "consumer's COMMIT returned):"
                )
                print("\n".join(lat))
            naive_note = []
            for r in bench.results:
                if r.consumer in CAPPED and r.ok and r.msgs_per_s:
                    full = {
                        "burst": args.messages,
                        "mixed": args.messages,
                        "gateway": math.ceil(args.gateway_readings / args.batch),
                        "steady": int(args.steady_rate * args.steady_seconds),
                    }[r.scenario]
                    naive_note.append(
                        f"  {r.consumer} {r.scenario}: {r.msgs_per_s:,.0f} msg/s measured on "
                        f"{r.rows_at_end:,} rows -> the full {full:,} messages would take "
                        f"~{full / r.msgs_per_s:,.0f} s"
                    )
            if naive_note:
                print()
                print("naive / nodered extrapolation:")
                print("\n".join(naive_note))
            print()
            print("\n".join(verdicts(bench.results, args)))
            if bench.profile:
                print()
                print(bench.profile)
            print(f"\ntotal {elapsed:.0f} s")
    finally:
        broker.stop()
        if embedded_pg is not None:
            embedded_pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_all(bench: Bench, args: argparse.Namespace, only: set[str], consumers: list[str]) -> None:
    d = args.devices
    cap = min(args.naive_messages, args.messages)

    def burst(messages: int) -> Workload:
        base, seq = bench.next_window()
        return Workload(
            "telemetry",
            d,
            messages,
            messages,
            base_ts=base,
            seq_base=seq,
            rate=args.burst_rate,
            seed=1,
        )

    def gateway(readings: int) -> Workload:
        base, seq = bench.next_window()
        return Workload(
            "batch",
            d,
            math.ceil(readings / args.batch),
            readings,
            base_ts=base,
            seq_base=seq,
            batch=args.batch,
            rate=args.burst_rate,
            seed=2,
        )

    def steady(messages: int) -> Workload:
        _, seq = bench.next_window()
        return Workload(
            "telemetry",
            d,
            messages,
            messages,
            seq_base=seq,
            rate=args.steady_rate,
            steady=True,
            seed=3,
        )

    def each(scenario: str, names: list[str], go: Callable[[str], None]) -> None:
        """Every consumer, --repeats rounds, the order rotated per round."""
        for rnd in range(args.repeats):
            for c in rotated(names, rnd):
                go(c)
                bench.results[-1].round = rnd

    if "publish" in only:

        def publish(c: str) -> None:
            if c == "alone":
                bench.run("publish", None, burst(args.messages), label="publisher alone")
            else:
                bench.run("publish", "trivial", burst(args.messages), label="trivial consumer")

        each("publish", ["alone", "trivial"], publish)
    if "burst" in only:

        def burst_run(c: str) -> None:
            if c in CAPPED:
                bench.run("burst", c, burst(cap), cap_s=args.naive_seconds)
            else:
                bench.run("burst", c, burst(args.messages))

        each("burst", consumers, burst_run)
    if "gateway" in only:

        def gateway_run(c: str) -> None:
            if c in CAPPED:
                readings = min(args.gateway_readings, cap * args.batch // 10)
                bench.run("gateway", c, gateway(readings), cap_s=args.naive_seconds)
            else:
                bench.run("gateway", c, gateway(args.gateway_readings))

        each("gateway", consumers, gateway_run)
    if "mixed" in only:

        def mixed(readings: int) -> Workload:
            base, seq = bench.next_window()
            dups, bad = mixed_counts(readings)
            return Workload(
                "telemetry",
                d,
                readings + dups + bad,
                readings,
                base_ts=base,
                seq_base=seq,
                rate=args.burst_rate,
                seed=4,
                mix=True,
            )

        def mixed_run(c: str) -> None:
            if c in CAPPED:
                bench.run("mixed", c, mixed(cap), cap_s=args.naive_seconds)
            else:
                bench.run("mixed", c, mixed(args.messages))

        each("mixed", consumers, mixed_run)
    if "steady" in only:
        full = int(args.steady_rate * args.steady_seconds)

        def steady_run(c: str) -> None:
            if c in CAPPED:
                bench.run("steady", c, steady(min(full, cap)), cap_s=args.naive_seconds)
            else:
                bench.run("steady", c, steady(full))

        each("steady", consumers, steady_run)
    if args.profile and "burst" in only and "firesafe" in consumers:
        bench.run("burst", "firesafe", burst(args.messages), profile=True, label="firesafe+py-spy")
