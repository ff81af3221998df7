"""Publisher processes: paho, QoS 1, pre-encoded payloads, a window of PUBACKs."""

from __future__ import annotations

import logging
import multiprocessing as mp
import resource
import select
import time
import traceback
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import (
    BufferedClient,
    percentiles,
)
from bench.ingest.workload import Workload, build_messages

PUBLISH_WINDOW = 50_000  # unacknowledged messages per publisher (MQTT packet ids: 16 bits)


log = logging.getLogger("bench.ingest")

Publisher = tuple[Any, Any]  # (process, its end of the pipe)


def start_publishers(host: str, port: int, w: Workload, n: int) -> list[Publisher]:
    """n publisher processes for workload `w`, each ready (its messages built)."""
    ctx = mp.get_context("spawn")
    pubs = []
    for k in range(n):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=publisher_main, args=(host, port, w, k, n, child), daemon=True)
        proc.start()
        pubs.append((proc, parent))
    for _, parent in pubs:
        if not parent.poll(120):
            raise RuntimeError("publisher did not get ready")
        status, value = parent.recv()
        if status != "ready":
            raise RuntimeError(f"publisher failed:\n{value}")
    return pubs


def collect_publishers(pubs: list[Publisher], timeout: float) -> list[dict[str, Any]]:
    """Each publisher's result (those that finished within `timeout`); all stopped."""
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
