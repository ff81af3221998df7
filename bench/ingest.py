"""End-to-end ingest benchmark: first MQTT publish -> last committed row.

    .venv/bin/python bench/ingest.py [--messages N] [--devices D] [--quick]

One invocation starts its own Mosquitto (firesafe.embedded.EmbeddedBroker, the
tuned config ingest ships with: `max_inflight_messages 0`,
`max_queued_messages 1000000`; stock Mosquitto's `max_queued_messages 1000`
would drop any burst for every consumer) on a free port, creates a scratch
database `firesafe_bench_<random>` on --server-url, migrates it, registers
--devices devices (smoke, heat, multi, electrical, evac) with COPY, and drops
the database at the end.

Then, on the same 2-core-sized machine that also runs the broker, PostgreSQL
and the publishers:

0. publisher alone: the burst published with no subscriber, then with a
   trivial counting subscriber, so the report shows the publisher and the
   broker are not the bottleneck;
1. burst: --messages single-reading telemetry messages (QoS 1) from every
   device;
2. gateway: --gateway-readings readings in `fs/v1/{site}/gateway/{gw}/batch`
   messages of --batch readings;
2b. mixed: the burst with the real work in it: 1 message in 50 sent twice
   (duplicates: firesafe stores them once, the bare consumers twice), 1 in
   100 followed by a broken payload (a reject for firesafe, dropped by the
   bare ones), and 1 smoke detector in 20 at an alarm level (alarms opened
   and verified);
3. steady: --steady-rate msg/s for --steady-seconds, end-to-end latency
   publish -> commit.

Each scenario runs three consumers, one after the other, on the same workload:
naive (paho on_message -> one autocommitted INSERT per message, capped and
extrapolated), bare batched (paho -> queue -> COPY every 5,000 rows or 200 ms
into a plain table) and firesafe (the real ingest.service.IngestService in a
child process). Each consumer subscribes (fresh client id, persistent session)
before the publishers start; the benchmark counts rows in the database until
every expected row is there (or a stall timeout) and reports the rate, loss
and duplicates. Publishers are --publishers processes of paho (QoS 1,
pre-encoded payloads, up to 50,000 in flight each). Targets are printed as PASS/FAIL lines.

--profile (on by default for full runs) repeats the firesafe burst under
py-spy (`.venv/bin/pip install py-spy`) and prints the top functions.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import logging
import math
import multiprocessing as mp
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.abc import Params, QueryNoTemplate
from psycopg.rows import TupleRow

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest_columnar, ingest_stats  # noqa: E402
from bench.common import (  # noqa: E402
    BufferedClient,
    CpuMeter,
    PidSpec,
    fmt_int,
    forget_session,
    percentiles,
    postgres_pids,
    register_copy,
    scratch_database,
)
from bench.ingest_stats import rotated  # noqa: E402
from firesafe.contract import READINGS  # noqa: E402

log = logging.getLogger("bench.ingest")

KINDS = ("smoke", "heat", "multi", "electrical", "evac")
SITE_SIZE = 100  # devices per site; one gateway per site
# Supervision runs on arrival time: with the per-kind default (10 s) a device
# whose replayed burst ends early would be raised `offline` 30 s later, in the
# middle of the next measurement. 60 s keeps the bench free of that artefact.
INTERVAL_S = 60.0
STEP_MS = 10_000  # event-time spacing of one device's readings (replayed history)
PUBLISH_WINDOW = 50_000  # unacknowledged messages per publisher (MQTT packet ids: 16 bits)
BATCHED_ROWS = 5_000
BATCHED_AGE_S = 0.2
PLAIN_COLUMNS = ["device_id", "ts", "seq", "received_ms", *READINGS]
PLAIN_DDL = (
    "CREATE TABLE IF NOT EXISTS {name} (device_id text NOT NULL, ts bigint NOT NULL, "
    "seq bigint NOT NULL, received_ms bigint NOT NULL, "
    + ", ".join(f"{r} double precision" for r in READINGS)
    + ")"
)
TARGET_GATEWAY_READINGS_S = 200_000


# ====================================================================== fleet
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


# ================================================================= publishers
def publisher_main(host: str, port: int, w: Workload, worker: int, workers: int, conn: Any) -> None:
    """One publisher process: pre-encode, connect, wait for `go`, publish, wait for PUBACKs."""
    try:
        msgs, sched = ([], None) if w.steady else build_messages(w, worker, workers)
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-pub-{worker}-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        # 0 = no paho limit. A positive limit makes paho scan every outstanding
        # message on each PUBACK (Client._update_inflight), quadratic for a
        # burst; the loop below keeps at most WINDOW unacknowledged instead
        # (packet ids are 16 bits).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect(host, port, keepalive=60)
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            client.loop(0.05)
        if not client.is_connected():
            raise RuntimeError("publisher could not connect")
        client.start_buffering()
        sock = client.socket()
        assert sock is not None  # connected above
        conn.send(("ready", len(msgs)))
        t0 = conn.recv()
        if w.steady:
            msgs, sched = build_messages(w, worker, workers, t0)
        n = len(msgs)

        def pump(wait: float = 0.0) -> None:
            flushed = client.flush()
            if wait > 0:
                select.select([sock], [] if flushed else [sock], [], wait)
            rc = client.loop_read()
            if rc != paho.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publisher lost the broker: {rc}")
            if client.want_write():
                client.loop_write()
            client.flush()

        while time.time() < t0:
            time.sleep(min(0.01, max(0.0, t0 - time.time())))
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        rate = w.rate / workers if w.rate else 0.0
        first = time.time()
        lags: list[float] = []
        i = 0
        chunk = 500
        publish = client.publish
        while i < n:
            now = time.time()
            if sched is not None:
                due = i
                while due < n and sched[due] <= now - t0:
                    due += 1
            elif rate:
                due = min(n, int((now - first) * rate) + 1)
            else:
                due = n
            due = min(due, i + max(0, PUBLISH_WINDOW - client.outstanding))
            if due <= i:
                if client.outstanding >= PUBLISH_WINDOW:
                    pump(0.005)
                    continue
                nxt = (t0 + sched[i]) if sched is not None else first + (i + 1) / rate
                pump(max(0.0, min(0.005, nxt - time.time())))
                continue
            end = min(due, i + chunk)
            for j in range(i, end):
                topic, payload = msgs[j]
                publish(topic, payload, qos=1)
            if sched is not None:
                lags.append((time.time() - (t0 + sched[end - 1])) * 1000)
            i = end
            pump()
        published = time.time()
        deadline = time.monotonic() + 300
        last_misc = time.monotonic()
        while client.outstanding and time.monotonic() < deadline:
            pump(0.005)
            if time.monotonic() - last_misc > 1:
                client.loop_misc()
                last_misc = time.monotonic()
        last_ack = time.time()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        p50, p99, pmax = percentiles(lags, (50, 99, 100))
        conn.send(
            (
                "done",
                {
                    "n": n,
                    "acked": n - client.outstanding,
                    "first": first,
                    "published": published,
                    "last_ack": last_ack,
                    "cpu": cpu,
                    "lag_p50": p50,
                    "lag_p99": p99,
                    "lag_max": pmax,
                },
            )
        )
        client.disconnect()
    except BaseException:
        conn.send(("error", traceback.format_exc()))


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


# ================================================================== consumers
def parse_rows(topic: str, payload: bytes | bytearray, received_ms: int) -> list[tuple[Any, ...]]:
    """What a bare consumer stores: one row per reading, no registry, no checks
    (a payload that does not parse is dropped)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    if topic.endswith("/telemetry"):
        v = obj.get("v") or {}
        device = topic.split("/")[3]
        return [(device, obj["ts"], obj["seq"], received_ms, *[v.get(r) for r in READINGS])]
    if topic.endswith("/batch"):
        rows = []
        for item in obj["readings"]:
            v = item.get("v") or {}
            rows.append(
                (
                    item["device"],
                    item["ts"],
                    item["seq"],
                    received_ms,
                    *[v.get(r) for r in READINGS],
                )
            )
        return rows
    return []


def ts_of(payload: bytes) -> int:
    """The `ts` of a payload the bench encoded (`{"ts":<ms>,...`), without parsing it."""
    return int(payload[6 : payload.index(b",", 6)])


def fetch_row(
    conn: psycopg.Connection[TupleRow], query: QueryNoTemplate, params: Params | None = None
) -> TupleRow:
    """The one row of a query that always returns one (an aggregate, SHOW)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


@dataclass
class ConsumerConfig:
    kind: str  # trivial | naive | batched | columnar | firesafe
    host: str
    port: int
    dsn: str
    client_id: str
    table: str = ""
    latency: bool = False  # steady scenario: record publish -> commit per message


def _paho_subscriber(cfg: ConsumerConfig, on_message: Any) -> paho.Client:
    """A plain paho consumer: MQTT 3.1.1, persistent session, QoS 1, auto-ack."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        protocol=paho.MQTTv311,
        clean_session=False,
    )
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("fs/v1/#", qos=1)
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    client.connect(cfg.host, cfg.port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(15):
        raise RuntimeError("subscription not acknowledged")
    return client


def consumer_main(cfg: ConsumerConfig, progress: Any, conn: Any) -> None:
    """Child process: set up one consumer, say `ready`, run until `stop`, report."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    lat: list[int] = []

    def committed(messages: int, rows: int) -> None:
        progress[0] += messages
        progress[1] += rows
        progress[2] = time.time()

    extra: dict[str, Any] = {}
    try:
        stopper: Any
        if cfg.kind == "trivial":

            def on_trivial(c: Any, u: Any, msg: paho.MQTTMessage) -> None:
                committed(1, 0)

            client = _paho_subscriber(cfg, on_trivial)

            def stopper() -> None:
                client.disconnect()
                client.loop_stop()

        elif cfg.kind == "naive":
            db = psycopg.connect(cfg.dsn, autocommit=True)
            cols = ", ".join(PLAIN_COLUMNS)
            one = f"({', '.join(['%s'] * len(PLAIN_COLUMNS))})"

            def on_naive(c: Any, u: Any, msg: paho.MQTTMessage) -> None:
                rows = parse_rows(msg.topic, msg.payload, int(time.time() * 1000))
                if not rows:
                    return
                values = ", ".join([one] * len(rows))
                db.execute(
                    f"INSERT INTO {cfg.table} ({cols}) VALUES {values}".encode(),
                    [x for row in rows for x in row],
                )
                if cfg.latency:
                    now = int(time.time() * 1000)
                    lat.extend(now - row[1] for row in rows)
                committed(1, len(rows))

            client = _paho_subscriber(cfg, on_naive)

            def stopper() -> None:
                client.disconnect()
                client.loop_stop()
                db.close()

        elif cfg.kind == "batched":
            queue: collections.deque[tuple[str, bytes | bytearray, int]] = collections.deque()
            stop = threading.Event()

            def on_batched(c: Any, u: Any, msg: paho.MQTTMessage) -> None:
                queue.append((msg.topic, msg.payload, int(time.time() * 1000)))

            def writer() -> None:
                db = psycopg.connect(cfg.dsn)
                types = ["text", "int8", "int8", "int8"] + ["float8"] * len(READINGS)
                copy_sql = (
                    f"COPY {cfg.table} ({', '.join(PLAIN_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                )
                while not (stop.is_set() and not queue):
                    rows: list[tuple[Any, ...]] = []
                    messages = 0
                    started = time.monotonic()
                    while len(rows) < BATCHED_ROWS and time.monotonic() - started < BATCHED_AGE_S:
                        try:
                            topic, payload, received = queue.popleft()
                        except IndexError:
                            if stop.is_set():
                                break
                            if not rows:
                                started = time.monotonic()
                            time.sleep(0.002)
                            continue
                        rows.extend(parse_rows(topic, payload, received))
                        messages += 1
                    if not rows:
                        continue
                    with db.cursor() as cur, cur.copy(copy_sql) as copy:
                        copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
                    db.commit()
                    if cfg.latency:
                        now = int(time.time() * 1000)
                        lat.extend(now - row[1] for row in rows)
                    committed(messages, len(rows))
                db.close()

            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            client = _paho_subscriber(cfg, on_batched)

            def stopper() -> None:
                client.disconnect()
                client.loop_stop()
                stop.set()
                thread.join(60)

        elif cfg.kind == "columnar":
            stopper = ingest_columnar.start(cfg, progress, _paho_subscriber, lat)

        elif cfg.kind == "firesafe":
            from firesafe.settings import Settings

            deadline = time.monotonic() + 300
            while True:  # detection is being finished elsewhere: give it a few minutes
                try:
                    importlib.import_module("ingest.service")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(15)
            from tests.helpers import IngestThread

            settings = Settings(
                mqtt_url=f"mqtt://{cfg.host}:{cfg.port}",
                database_url=cfg.dsn,
                mqtt_client_id=cfg.client_id,
                log_level="WARNING",
                ingest_mode="single",  # one process, one session (shards: bench/ingest_scale.py)
            )
            ingest_thread = IngestThread(settings).start()
            service = ingest_thread.service
            assert service is not None
            source = service.source
            original_ack = source.ack

            # Instrumentation only: ingest acknowledges a burst right after the
            # transaction holding it committed, so this is the commit time.
            def ack(messages: Any) -> int:
                acked = original_ack(messages)
                if cfg.latency:
                    now = int(time.time() * 1000)
                    lat.extend(now - ts_of(m.payload) for m in messages)
                committed(len(messages), 0)
                return acked

            source.ack = ack  # type: ignore[method-assign]  # wrap the bound method to time commits
            extra["instance"] = service.instance

            def stopper() -> None:
                ingest_thread.stop()
                c = service.counters
                extra.update(
                    messages=c.messages,
                    readings=c.readings,
                    duplicates=c.duplicates,
                    rejects=c.rejects,
                    batches=c.batches,
                    seq_gaps=c.seq_gaps,
                )

        else:
            raise ValueError(cfg.kind)
        conn.send(("ready", os.getpid()))
        conn.recv()  # stop
        stopper()
        p50, p90, p99, pmax = percentiles(lat, (50, 90, 99, 100))
        conn.send(("stopped", {"lat": (p50, p90, p99, pmax), "lat_n": len(lat), **extra}))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


# =================================================================== results
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
    def start_publishers(self, w: Workload) -> list[tuple[Any, Any]]:
        pubs = []
        n = self.args.publishers
        for k in range(n):
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=publisher_main, args=(self.host, self.port, w, k, n, child), daemon=True
            )
            proc.start()
            pubs.append((proc, parent))
        for _, parent in pubs:
            if not parent.poll(120):
                raise RuntimeError("publisher did not get ready")
            status, value = parent.recv()
            if status != "ready":
                raise RuntimeError(f"publisher failed:\n{value}")
        return pubs

    def collect_publishers(
        self, pubs: list[tuple[Any, Any]], timeout: float
    ) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        for proc, parent in pubs:
            if parent.poll(max(0.1, deadline - time.monotonic())):
                status, value = parent.recv()
                if status == "done":
                    out.append(value)
                else:
                    log.error("publisher failed:\n%s", value)
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        return out

    # -------------------------------------------------------------- counting
    def count(self, table: str) -> int:
        return int(fetch_row(self.db, f"SELECT count(*) FROM {table}".encode())[0])

    def prepare(self, consumer: str) -> str:
        if consumer == "firesafe":
            self.db.execute(b"TRUNCATE telemetry, telemetry_rollup_1m")
            return "telemetry"
        if consumer in ("naive", "batched", "columnar"):
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
            if res.complete and consumer not in (None, "trivial"):
                # The consumer's own commit time is exact; it is recorded once the
                # commit returned (firesafe: when the burst is acknowledged, which
                # may be a while after the commit). Take the earlier of the two.
                hook_deadline = time.monotonic() + 30
                while progress[0] < w.messages and time.monotonic() < hook_deadline:
                    time.sleep(0.02)
                if progress[0] >= w.messages and progress[2] > 0:
                    end_poll = min(end_poll, progress[2])
            res.cpu = meter.stop()
            pub_results = self.collect_publishers(pubs, 300)
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


def summarize_profile(raw: str, top: int = 15) -> str:
    """Top functions by self and by cumulative samples, from py-spy's collapsed stacks."""
    self_count: collections.Counter[str] = collections.Counter()
    cum_count: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_count[_frame(frames[-1])] += count
        for name in {_frame(f) for f in frames}:
            if not name.endswith(_PLUMBING):
                cum_count[name] += count
    if not total:
        return "(no samples)"
    lines = [f"py-spy, {total} samples at 100 Hz of non-idle threads (firesafe consumer process)"]
    for title, counter in (("self", self_count), ("cumulative", cum_count)):
        lines.append(f"  top {top} by {title} time:")
        for name, hits in counter.most_common(top):
            lines.append(f"    {100 * hits / total:5.1f}%  {name}")
    return "\n".join(lines)


# Frames every sample goes through (threads, the event loop, the bench's own
# wrapper): left out of the cumulative list, where they would only say 100%.
_PLUMBING = (
    "(threading.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(asyncio/runners.py)",
    "(tests/helpers.py)",
)


def _frame(frame: str) -> str:
    # "func (path/to/file.py)" -> "func (pkg/file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    marker = "site-packages/"
    if marker in where:
        where = where.split(marker, 1)[1]
    elif str(ROOT) in where:
        where = where.split(str(ROOT) + "/", 1)[1]
    else:
        where = "/".join(where.split("/")[-2:])
    return f"{name} ({where})"


# ==================================================================== report
def table(results: list[Result], cores: int) -> str:
    head = (
        f"{'scenario':<9} {'consumer':<16} {'msgs':>9} {'rows':>9} {'wall s':>7} "
        f"{'msg/s':>8} {'rows/s':>9} {'1st row s':>9} {'loss':>6} {'dups':>5} {'pub msg/s':>9} "
        f"{'CPU% pub/brk/cons/pg/other (of ' + str(cores * 100) + ')':>34}  note"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if not r.ok:
            lines.append(f"{r.scenario:<9} {r.consumer:<16} FAILED: {r.error[:200]}")
            continue
        wall = r.elapsed or 1e-9
        ours = (
            r.pub_cpu,
            r.cpu.get("broker", 0),
            r.cpu.get("consumer", 0),
            r.cpu.get("postgres", 0),
        )
        # Machine-wide busy time over the run window minus ours: other work on
        # the machine (publishers' CPU is their own measurement over their own
        # span, so this is approximate).
        other = max(0.0, r.cpu.get("machine", 0) - sum(ours))
        cpu = "/".join(f"{100 * v / wall:.0f}" for v in (*ours, other))
        loss = "-" if r.loss is None else f"{r.loss:,}"
        dups = "-" if r.consumer.startswith(("publisher", "trivial")) else f"{r.duplicates:,}"
        note = r.note
        first_row = "-" if r.first_row is None else f"{r.first_row:.2f}"
        if r.capped and not r.complete:
            note = (note + " capped: partial, rate extrapolated").strip()
        lines.append(
            f"{r.scenario:<9} {r.consumer:<16} {r.messages:>9,} {r.readings:>9,} {r.elapsed:>7.2f} "
            f"{r.msgs_per_s:>8,.0f} {r.rows_per_s:>9,.0f} {first_row:>9} {loss:>6} {dups:>5} "
            f"{r.pub_rate:>9,.0f} {cpu:>34}  {note}"
        )
    return "\n".join(lines)


def find(results: list[Result], scenario: str, consumer: str) -> Result | None:
    """The run of median rate (with --repeats, the verdicts judge the median round)."""
    runs = sorted(
        (r for r in results if r.scenario == scenario and r.consumer == consumer and r.ok),
        key=lambda r: r.rows_per_s,
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def verdicts(results: list[Result], args: argparse.Namespace) -> list[str]:
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    for scenario in ("burst", "gateway", "steady"):
        fs = find(results, scenario, "firesafe")
        if not any(r.scenario == scenario for r in results):
            continue
        if fs is None:
            line(False, f"{scenario}: firesafe ingest did not run (see the table)")
            continue
        for base in ("batched", "naive"):
            b = find(results, scenario, base)
            if b and b.msgs_per_s:
                out.append(
                    f"INFO  {scenario}: firesafe / {base} = {fs.msgs_per_s / b.msgs_per_s:.2f}x "
                    f"({fs.msgs_per_s:,.0f} vs {b.msgs_per_s:,.0f} msg/s"
                    + (", naive capped and extrapolated)" if base == "naive" else ")")
                )
        line(
            fs.complete and fs.loss == 0 and fs.duplicates == 0,
            f"{scenario}: firesafe stored every row once (loss {fs.loss}, duplicates "
            f"{fs.duplicates})",
        )
        if scenario == "burst":
            b = find(results, "burst", "batched")
            if b:
                line(
                    fs.msgs_per_s >= b.msgs_per_s,
                    f"burst: firesafe {fs.msgs_per_s:,.0f} msg/s >= bare batched "
                    f"{b.msgs_per_s:,.0f} msg/s",
                )
        if scenario == "gateway":
            line(
                fs.rows_per_s >= TARGET_GATEWAY_READINGS_S,
                f"gateway: firesafe {fs.rows_per_s:,.0f} readings/s >= "
                f"{TARGET_GATEWAY_READINGS_S:,}",
            )
    pub = find(results, "publish", "publisher alone")
    fs = find(results, "burst", "firesafe")
    if pub and fs and fs.msgs_per_s:
        line(
            pub.pub_rate >= 1.5 * fs.msgs_per_s,
            f"publisher alone {pub.pub_rate:,.0f} msg/s >= 1.5x firesafe burst "
            f"{fs.msgs_per_s:,.0f} msg/s (the publisher is not the bottleneck)",
        )
    return out


def latency_report(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.scenario != "steady" or not r.ok:
            continue
        p50, p90, p99, pmax = r.stats.get("lat", (None,) * 4)
        pubs = r.pub
        lag99 = max((p["lag_p99"] or 0 for p in pubs), default=None)
        a50, a99 = r.db_latency

        def ms(x: float | None) -> str:
            return "-" if x is None else f"{x:,.0f}"

        text = (
            f"  {r.consumer:<9} publish->commit p50 {ms(p50)} ms, p90 {ms(p90)}, p99 {ms(p99)}, "
            f"max {ms(pmax)} ({fmt_int(r.stats.get('lat_n'))} msgs); publish->arrival "
            f"(rows: received_at - ts) p50 {ms(a50)}, p99 {ms(a99)}; publisher schedule "
            f"lag p99 {ms(lag99)} ms"
        )
        if r.consumer == "firesafe":
            b50, bmax = r.batch_latency
            text += (
                f"; ingest_stats batch_latency_ms (p95 per 5 s) median {ms(b50)}, max {ms(bmax)}"
            )
        out.append(text)
    return out


# ====================================================================== main
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
        default="naive,batched,columnar,firesafe",
        help="columnar: the strongest bare baseline (bench/ingest_columnar.py)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds per scenario, the consumers' order rotated each round; "
        "median and range reported (bench/ingest_stats.py)",
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
                f"multi-row INSERT), capped at {args.naive_messages:,} messages / "
                f"{args.naive_seconds:.0f} s; its rate is measured on that slice and "
                "extrapolated."
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
                if r.consumer == "naive" and r.ok and r.msgs_per_s:
                    full = {
                        "burst": args.messages,
                        "gateway": math.ceil(args.gateway_readings / args.batch),
                        "steady": int(args.steady_rate * args.steady_seconds),
                    }[r.scenario]
                    naive_note.append(
                        f"  naive {r.scenario}: {r.msgs_per_s:,.0f} msg/s measured on "
                        f"{r.rows_at_end:,} rows -> the full {full:,} messages would take "
                        f"~{full / r.msgs_per_s:,.0f} s"
                    )
            if naive_note:
                print()
                print("naive extrapolation:")
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
            if c == "naive":
                bench.run("burst", c, burst(cap), cap_s=args.naive_seconds)
            else:
                bench.run("burst", c, burst(args.messages))

        each("burst", consumers, burst_run)
    if "gateway" in only:

        def gateway_run(c: str) -> None:
            if c == "naive":
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
            if c == "naive":
                bench.run("mixed", c, mixed(cap), cap_s=args.naive_seconds)
            else:
                bench.run("mixed", c, mixed(args.messages))

        each("mixed", consumers, mixed_run)
    if "steady" in only:
        full = int(args.steady_rate * args.steady_seconds)

        def steady_run(c: str) -> None:
            if c == "naive":
                bench.run("steady", c, steady(min(full, cap)), cap_s=args.naive_seconds)
            else:
                bench.run("steady", c, steady(full))

        each("steady", consumers, steady_run)
    if args.profile and "burst" in only and "firesafe" in consumers:
        bench.run("burst", "firesafe", burst(args.messages), profile=True, label="firesafe+py-spy")


if __name__ == "__main__":
    sys.exit(main())
