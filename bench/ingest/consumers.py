"""The consumers measured: trivial, naive, bare batched, columnar, Node-RED and firesafe.

Each runs in a child process (`consumer_main`): set up, say `ready`, run until
`stop`, report. Every one but `trivial` writes rows the bench counts.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import (
    percentiles,
)
from bench.ingest import columnar as ingest_columnar
from bench.ingest import nodered
from firesafe.contract import READINGS

BATCHED_ROWS = 5_000
BATCHED_AGE_S = 0.2
PLAIN_COLUMNS = ["device_id", "ts", "seq", "received_ms", *READINGS]
PLAIN_DDL = (
    "CREATE TABLE IF NOT EXISTS {name} (device_id text NOT NULL, ts bigint NOT NULL, "
    "seq bigint NOT NULL, received_ms bigint NOT NULL, "
    + ", ".join(f"{r} double precision" for r in READINGS)
    + ")"
)


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


@dataclass
class ConsumerConfig:
    kind: str  # trivial | naive | batched | columnar | nodered | firesafe
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

        elif cfg.kind == "nodered":
            stopper, extra["node_pid"] = nodered.start(
                cfg.host, cfg.port, cfg.dsn, cfg.client_id, cfg.table
            )

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
