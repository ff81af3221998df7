"""The strongest bare baseline of the ingest benchmark (bench/ingest): `columnar`.

paho (MQTT 3.1.1, persistent session, QoS 1, acknowledged on receipt) in the
consumer process only collects raw messages; a writer in **its own process**
decodes each batch with orjson into numpy columns and stores it with **one
binary COPY built from the arrays** (`storage.ingest_store.binary_copy`, the
encoder firesafe itself uses) into a table of fixed-size columns (device as an
integer index). No registry, no checks, no de-duplication, no detection: what
storing the same readings costs with everything firesafe does left out, and
with decoding not sharing a GIL with the MQTT client.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import psycopg

from firesafe.contract import READINGS
from storage.ingest_store import binary_copy

BATCH_ROWS = 5_000
BATCH_AGE_S = 0.2
COLUMNS = ["device", "ts", "seq", "received_ms", *READINGS]
DDL = (
    "CREATE TABLE IF NOT EXISTS {name} (device integer NOT NULL, ts bigint NOT NULL, "
    "seq bigint NOT NULL, received_ms bigint NOT NULL, "
    + ", ".join(f"{r} double precision" for r in READINGS)
    + ")"
)
# NaN (an absent reading) is stored as NULL, as firesafe's stage does.
_INSERT = (
    "INSERT INTO {name} SELECT device, ts, seq, received_ms, "
    + ", ".join(f"NULLIF({r}, 'NaN')" for r in READINGS)
    + " FROM {name}_stage"
)

Message = tuple[str, bytes, int]  # topic, payload, received ms


def _decode(batch: list[Message], index: dict[str, int]) -> tuple[list[Any], int]:
    """Columns (device, ts, seq, received, readings...) of the batch's readings."""
    dev: list[int] = []
    ts: list[int] = []
    seq: list[int] = []
    rec: list[int] = []
    vals: list[list[float]] = [[] for _ in READINGS]

    def add(device: str, item: dict[str, Any], received: int) -> None:
        d = index.get(device)
        if d is None:
            d = index[device] = len(index)
        dev.append(d)
        ts.append(item["ts"])
        seq.append(item["seq"])
        rec.append(received)
        v = item.get("v") or {}
        for j, r in enumerate(READINGS):
            x = v.get(r)
            vals[j].append(np.nan if x is None else float(x))

    for topic, payload, received in batch:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue  # a bare consumer drops what does not parse
        if topic.endswith("/telemetry"):
            add(topic.split("/")[3], obj, received)
        elif topic.endswith("/batch"):
            for item in obj["readings"]:
                add(item["device"], item, received)
    cols = [
        ("device", ">i4", np.asarray(dev, np.int32)),
        ("ts", ">i8", np.asarray(ts, np.int64)),
        ("seq", ">i8", np.asarray(seq, np.int64)),
        ("received_ms", ">i8", np.asarray(rec, np.int64)),
        *((r, ">f8", np.asarray(vals[j], np.float64)) for j, r in enumerate(READINGS)),
    ]
    return cols, len(dev)


def writer_main(dsn: str, table: str, inbox: Any, progress: Any, latency: bool, out: Any) -> None:
    """Writer process: batches from `inbox` (None ends), one binary COPY each."""
    index: dict[str, int] = {}
    lat: list[int] = []
    with psycopg.connect(dsn) as db:
        db.execute(f"CREATE TEMP TABLE {table}_stage (LIKE {table})".encode())
        db.commit()
        copy_sql = f"COPY {table}_stage FROM STDIN (FORMAT BINARY)".encode()
        insert = _INSERT.format(name=table).encode()
        while True:
            batch = inbox.recv()
            if batch is None:
                break
            cols, n = _decode(batch, index)
            if not n:
                continue
            with db.cursor() as cur:
                cur.execute(f"TRUNCATE {table}_stage".encode())
                with cur.copy(copy_sql) as copy:
                    copy.write(binary_copy(cols))
                cur.execute(insert)
            db.commit()
            if latency:
                now = int(time.time() * 1000)
                lat.extend((now - cols[1][2]).tolist())
            progress[0] += len(batch)
            progress[1] += n
            progress[2] = time.time()
    out.send(lat)


def start(
    cfg: Any, progress: Any, subscribe: Callable[[Any, Any], Any], lat: list[int]
) -> Callable[[], None]:
    """Start the columnar consumer in this process; returns its stopper."""
    ctx = mp.get_context("spawn")
    to_writer, inbox = ctx.Pipe()
    lat_in, lat_out = ctx.Pipe()
    writer = ctx.Process(
        target=writer_main,
        args=(cfg.dsn, cfg.table, inbox, progress, cfg.latency, lat_out),
        daemon=True,
    )
    writer.start()
    pending: list[Message] = []
    lock = threading.Lock()
    stop = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        with lock:
            pending.append((msg.topic, bytes(msg.payload), int(time.time() * 1000)))

    def shipper() -> None:
        """Hand the writer a batch at BATCH_ROWS messages or BATCH_AGE_S of age."""
        started = time.monotonic()
        while True:
            with lock:
                full = len(pending) >= BATCH_ROWS
                due = pending and time.monotonic() - started >= BATCH_AGE_S
                batch = pending[:] if (full or due or stop.is_set()) else None
                if batch is not None:
                    pending.clear()
            if batch:
                to_writer.send(batch)
                started = time.monotonic()
            elif stop.is_set():
                break
            else:
                time.sleep(0.005)
        to_writer.send(None)

    thread = threading.Thread(target=shipper, daemon=True)
    thread.start()
    client = subscribe(cfg, on_message)

    def stopper() -> None:
        client.disconnect()
        client.loop_stop()
        stop.set()
        thread.join(60)
        if lat_in.poll(120):
            lat.extend(lat_in.recv())
        writer.join(60)

    return stopper
