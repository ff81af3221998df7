"""One run: a consumer, the publishers, and the row count until every row is there."""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg.abc import Params, QueryNoTemplate
from psycopg.rows import TupleRow

from bench.common import (
    CpuMeter,
    PidSpec,
    fmt_int,
    forget_session,
    postgres_pids,
)
from bench.ingest import columnar as ingest_columnar
from bench.ingest.consumers import PLAIN_DDL, ConsumerConfig, consumer_main
from bench.ingest.publishers import Publisher, collect_publishers, start_publishers
from bench.ingest.report import summarize_profile
from bench.ingest.workload import Workload

log = logging.getLogger("bench.ingest")


def with_children(pid: int) -> list[int]:
    """`pid` and its child processes (Linux /proc)."""
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def fetch_row(
    conn: psycopg.Connection[TupleRow], query: QueryNoTemplate, params: Params | None = None
) -> TupleRow:
    """The one row of a query that always returns one (an aggregate, SHOW)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


@dataclass
class Result:
    scenario: str
    consumer: str
    messages: int  # expected (published) messages
    readings: int  # expected rows
    ok: bool = True
    error: str = ""
    complete: bool = False
    capped: bool = False
    elapsed: float = 0.0  # first publish -> last committed row
    rows_at_end: int = 0
    stored: int = 0
    unique: int = 0
    pub_rate: float = 0.0  # publishers: messages / (last PUBACK - first publish)
    pub_cpu: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    pub: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    first_row: float | None = None  # first publish -> first row seen in the database
    db_latency: tuple[float | None, float | None] = (None, None)
    batch_latency: tuple[float | None, float | None] = (None, None)
    round: int = 0  # --repeats: which round (consumers' order rotates per round)
    partial: bool = False  # capped: the rate is the capped part's (the rest waited for)

    @property
    def rows_per_s(self) -> float:
        return self.rows_at_end / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def msgs_per_s(self) -> float:
        if self.elapsed <= 0 or not self.readings:
            return 0.0
        return self.rows_per_s * self.messages / self.readings

    @property
    def loss(self) -> int | None:
        return None if self.capped and not self.complete else self.readings - self.unique

    @property
    def duplicates(self) -> int:
        return self.stored - self.unique


class Bench:
    def __init__(
        self, args: argparse.Namespace, host: str, port: int, dsn: str, broker_pid: int
    ) -> None:
        self.args = args
        self.host, self.port, self.dsn = host, port, dsn
        self.broker_pid = broker_pid
        self.ctx = mp.get_context("spawn")
        self.results: list[Result] = []
        self.profile: str = ""
        self._run = 0
        self.t_start = time.time()
        self.db = psycopg.connect(dsn, autocommit=True)
        self.dbname = str(self.db.info.dbname)

    def next_window(self) -> tuple[int, int]:
        """A fresh event-time window and seq range per run (no run sees another's keys)."""
        self._run += 1
        base = int((self.t_start - 6 * 3600) * 1000) + self._run * 20 * 60 * 1000
        return base, self._run * 1000

    # ------------------------------------------------------------ publishers
    def start_publishers(self, w: Workload) -> list[Publisher]:
        return start_publishers(self.host, self.port, w, self.args.publishers)

    # -------------------------------------------------------------- counting
    def count(self, table: str) -> int:
        return int(fetch_row(self.db, f"SELECT count(*) FROM {table}".encode())[0])

    def wait_rows(self, table: str, target: int, stall: float) -> bool:
        """Wait until `table` holds `target` rows; False once it stopped growing for `stall` s."""
        last, changed = -1, time.monotonic()
        while True:
            count = self.count(table)
            if count >= target:
                return True
            if count != last:
                last, changed = count, time.monotonic()
            elif time.monotonic() - changed > stall:
                return False
            time.sleep(0.25)

    def has_table(self, name: str) -> bool:
        row = self.db.execute(b"SELECT to_regclass(%s)", (name,)).fetchone()
        return bool(row and row[0])

    def rollup_caught_up(self, since: float, limit_s: float = 120.0) -> float | None:
        """Seconds from `since` (the last row committed) until the plain flavour's
        rollup has no minute left to refresh; None on TimescaleDB or past the limit."""
        if not self.has_table("rollup_pending"):
            return None
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.count("rollup_pending") == 0:
                return time.time() - since
            time.sleep(0.25)
        return None

    def prepare(self, consumer: str) -> str:
        if consumer == "firesafe":
            # The plain flavour's rollup table; TimescaleDB's is a continuous
            # aggregate over telemetry, emptied with it.
            tables = "telemetry"
            if self.has_table("rollup_pending"):
                tables += ", telemetry_rollup_1m, rollup_pending"
            self.db.execute(f"TRUNCATE {tables}".encode())
            return "telemetry"
        if consumer in ("naive", "batched", "columnar", "nodered"):
            table = f"bench_{consumer}"
            ddl = ingest_columnar.DDL if consumer == "columnar" else PLAIN_DDL
            self.db.execute(ddl.format(name=table).encode())
            self.db.execute(f"TRUNCATE {table}".encode())
            return table
        return ""

    # ------------------------------------------------------------------- run
    def run(
        self,
        scenario: str,
        consumer: str | None,
        w: Workload,
        *,
        cap_s: float = 0.0,
        profile: bool = False,
        label: str | None = None,
    ) -> Result:
        name = label or consumer or "none"
        res = Result(scenario, name, w.messages, w.readings)
        res.capped = cap_s > 0
        log.info(
            "%s / %s: %s messages, %s rows",
            scenario,
            name,
            fmt_int(w.messages),
            fmt_int(w.readings),
        )
        table = self.prepare(consumer) if consumer else ""
        progress = self.ctx.Array("d", 3, lock=False)
        proc = parent = None
        client_id = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        spy = None
        spy_out = Path(tempfile.gettempdir()) / f"bench-ingest-{uuid.uuid4().hex[:6]}.txt"
        pubs: list[tuple[Any, Any]] = []
        try:
            if consumer:
                cfg = ConsumerConfig(
                    consumer, self.host, self.port, self.dsn, client_id, table, latency=w.steady
                )
                parent, child = self.ctx.Pipe()
                # columnar starts its writer process: a daemonic process may not.
                proc = self.ctx.Process(
                    target=consumer_main,
                    args=(cfg, progress, child),
                    daemon=consumer != "columnar",
                )
                proc.start()
                if not parent.poll(400):
                    raise RuntimeError("consumer did not get ready")
                status, value = parent.recv()
                if status != "ready":
                    raise RuntimeError(f"consumer failed to start:\n{value}")
                assert proc.pid is not None  # started above
                log.info("  consumer pid %d", proc.pid)
                if profile:
                    spy = self.start_profiler(proc.pid, spy_out)
            pubs = self.start_publishers(w)
            pids: dict[str, PidSpec] = {
                "broker": [self.broker_pid],
                # The consumer and its children (the columnar writer process).
                "consumer": partial(with_children, proc.pid)
                if proc and proc.pid is not None
                else [],
                "postgres": lambda: postgres_pids(self.dbname),
            }
            meter = CpuMeter(pids)
            go = time.time() + 0.2
            for _, conn in pubs:
                conn.send(go)
            meter.start()
            last_count, last_change = 0, time.monotonic()
            first_row_seen = 0.0
            pub_results: list[dict[str, Any]] | None = None
            stall = self.args.stall_timeout
            while True:
                time.sleep(0.25 if consumer else 0.1)
                now = time.time()
                if consumer == "trivial" or consumer is None:
                    count = int(progress[0]) if consumer else 0
                else:
                    count = self.count(table)
                target = w.messages if consumer in (None, "trivial") else w.readings
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                    if not first_row_seen and count > 0:
                        first_row_seen = now
                if consumer is None:
                    if all(c.poll(0) for _, c in pubs):
                        break
                    if now - go > 300:
                        break
                    continue
                if count >= target:
                    res.complete = True
                    break
                if cap_s and now - go >= cap_s:
                    break
                if time.monotonic() - last_change > stall:
                    res.note = f"stalled {stall:.0f} s at {count:,} rows"
                    break
            end_poll = time.time()
            if res.complete and consumer not in (None, "trivial", "nodered"):
                # The consumer's own commit time is exact (Node-RED reports none); it
                # is recorded once the commit returned (firesafe: when the burst is
                # acknowledged, which may be a while after the commit). Take the
                # earlier of the two.
                hook_deadline = time.monotonic() + 30
                while progress[0] < w.messages and time.monotonic() < hook_deadline:
                    time.sleep(0.02)
                if progress[0] >= w.messages and progress[2] > 0:
                    end_poll = min(end_poll, progress[2])
            res.cpu = meter.stop()
            pub_results = collect_publishers(pubs, 300)
            pubs = []
            res.pub = pub_results
            if first_row_seen:
                res.first_row = first_row_seen - (
                    min(p["first"] for p in pub_results) if pub_results else go
                )
            if pub_results:
                first = min(p["first"] for p in pub_results)
                last_ack = max(p["last_ack"] for p in pub_results)
                acked = sum(p["acked"] for p in pub_results)
                res.pub_rate = acked / (last_ack - first) if last_ack > first else 0.0
                res.pub_cpu = sum(p["cpu"] for p in pub_results)
                if acked != w.messages:
                    res.note += f" publishers got {acked:,} PUBACKs of {w.messages:,}"
            else:
                first = go
                res.ok = False
                res.error = "publishers failed"
            if consumer is None:
                res.elapsed = last_ack - first if pub_results else 0.0
                res.rows_at_end = w.readings
                res.complete = True
            elif res.complete:
                res.elapsed = (progress[2] if consumer == "trivial" else end_poll) - first
                res.rows_at_end = w.readings
            else:
                res.elapsed = end_poll - first
                res.rows_at_end = last_count
            if consumer == "firesafe" and res.complete:
                # The rollup is refreshed apart (storage/rollup.py): say when it was.
                lag = self.rollup_caught_up(end_poll)
                if lag is not None:
                    res.note = (res.note + f" rollup done {lag:.1f} s after the last row").strip()
            if cap_s and not res.complete and consumer not in (None, "trivial"):
                # The rate is the capped part's; loss and duplicates are judged on
                # every row, so let the consumer finish (not timed).
                res.partial = True
                res.complete = self.wait_rows(table, w.readings, stall)
                if not res.complete:
                    res.note = (res.note + f" did not finish after the cap ({stall:.0f} s)").strip()
        except Exception as exc:
            res.ok = False
            res.error = str(exc)
            log.error("%s / %s failed: %s", scenario, name, exc)
        finally:
            for p, _ in pubs:
                p.kill()
            if spy is not None:
                self.profile = self.stop_profiler(spy, spy_out)
            if proc is not None and parent is not None:
                try:
                    if proc.is_alive():
                        parent.send("stop")
                        if parent.poll(90):
                            status, value = parent.recv()
                            if status == "stopped":
                                res.stats = value
                            else:
                                res.error = res.error or value.strip().splitlines()[-1]
                                res.ok = False
                    proc.join(10)
                finally:
                    if proc.is_alive():
                        proc.kill()
                forget_session(self.host, self.port, client_id)
        if consumer is None:
            res.stored = res.unique = w.messages
        elif consumer != "trivial" and res.ok:
            key = "device" if consumer == "columnar" else "device_id"
            res.stored, res.unique = fetch_row(
                self.db,
                f"SELECT count(*), count(DISTINCT ({key}, ts, seq)) FROM {table}".encode(),
            )
            if w.steady:
                res.db_latency = self.arrival_latency(consumer, table)
            if consumer == "firesafe" and res.stats.get("instance"):
                row = fetch_row(
                    self.db,
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY batch_latency_ms), "
                    "max(batch_latency_ms) FROM ingest_stats WHERE instance = %s",
                    (res.stats["instance"],),
                )
                res.batch_latency = (row[0], row[1])
        elif consumer == "trivial":
            res.stored = res.unique = int(progress[0])
        self.results.append(res)
        log.info(
            "  -> %.1f s, %s msg/s, %s rows/s %s",
            res.elapsed,
            fmt_int(res.msgs_per_s),
            fmt_int(res.rows_per_s),
            res.note,
        )
        return res

    def arrival_latency(self, consumer: str, table: str) -> tuple[float | None, float | None]:
        """Publish -> arrival at the consumer (ts is the scheduled publish time), from the rows."""
        if consumer == "firesafe":
            expr = "extract(epoch FROM received_at - ts) * 1000"
        else:
            expr = "received_ms - ts"
        row = fetch_row(
            self.db,
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {expr}), "
            f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {expr}) FROM {table}".encode(),
        )
        return (row[0], row[1])

    # ------------------------------------------------------------- profiling
    def start_profiler(self, pid: int, out: Path) -> subprocess.Popen[bytes] | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.profile = "(py-spy not installed: .venv/bin/pip install py-spy)"
            return None
        proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--nonblocking",
                "--nolineno",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # attach before the first publish
        return proc

    def stop_profiler(self, proc: subprocess.Popen[bytes], out: Path) -> str:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return "(py-spy did not finish)"
        if not out.exists():
            return f"(py-spy wrote nothing: {err.decode(errors='replace')[-300:]})"
        text = summarize_profile(out.read_text(), top=self.args.profile_top)
        out.unlink()
        return text
