"""Test helpers: registry rows, a real MQTT publisher, polling, ingest in a thread."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.types.json import Jsonb

from api.errors import localize
from firesafe.settings import MqttEndpoint, Settings

T = TypeVar("T")


# The property tests' example counts are scaled by this (CI's 15 minutes on 2
# cores; FIRESAFE_PROPERTY_SCALE=3 (`make fuzz`) makes a deeper run, as
# FIRESAFE_FUZZ_EXAMPLES does for the API's schema tests).
PROPERTY_SCALE = float(os.environ.get("FIRESAFE_PROPERTY_SCALE", "0.6"))


def examples(n: int) -> int:
    """`n` property examples, scaled by FIRESAFE_PROPERTY_SCALE (at least 1)."""
    return max(1, round(n * PROPERTY_SCALE))


def ingest_process(settings: Settings) -> subprocess.Popen[bytes]:
    """`firesafe ingest` in a process of its own (one a test can SIGKILL), in
    single mode (one process, one session; shards: test_ingest_shards), on
    these settings' broker, database and client id."""
    env = {
        **os.environ,
        "FIRESAFE_MQTT_URL": settings.mqtt_url or "",
        "FIRESAFE_DATABASE_URL": settings.require_database_url(),
        "FIRESAFE_MQTT_CLIENT_ID": settings.mqtt_client_id,
        "FIRESAFE_LOG_LEVEL": "WARNING",
        "FIRESAFE_INGEST_MODE": "single",
    }
    cmd = [sys.executable, "-m", "firesafe.cli", "ingest"]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as an operator stops it; killed if it has not ended in 20 s.
    Its exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def register(dsn: str, devices: Sequence[Mapping[str, Any]]) -> None:
    """Register devices straight into the registry tables (what POST /devices does)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for d in devices:
            site, building, floor, zone = d["site"], d["building"], d["floor"], d["zone"]
            conn.execute("INSERT INTO sites (id) VALUES (%s) ON CONFLICT DO NOTHING", (site,))
            conn.execute(
                "INSERT INTO buildings VALUES (%s, %s) ON CONFLICT DO NOTHING", (site, building)
            )
            conn.execute(
                "INSERT INTO floors VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (site, building, floor),
            )
            conn.execute(
                "INSERT INTO zones (site_id, building, floor, zone) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (site, building, floor, zone),
            )
            conn.execute(
                """
                INSERT INTO devices (id, site_id, building, floor, zone, kind, interval_s,
                    thresholds, routes)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET site_id = EXCLUDED.site_id,
                    kind = EXCLUDED.kind, interval_s = EXCLUDED.interval_s,
                    thresholds = EXCLUDED.thresholds, routes = EXCLUDED.routes,
                    updated_at = now()
                """,
                (
                    d["id"],
                    site,
                    building,
                    floor,
                    zone,
                    d["kind"],
                    d.get("interval_s"),
                    Jsonb(d.get("thresholds", {})),
                    Jsonb(d["routes"]) if d.get("routes") else None,
                ),
            )


def wait_for(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.1) -> T:
    """Poll until `check()` is truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    assert value, f"condition not met within {timeout} s (last value: {value!r})"
    return value


def query(dsn: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


class Publisher:
    """A real MQTT client publishing with QoS 1 and waiting for each PUBACK."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        ep = MqttEndpoint.parse(url)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        ep.sign_in(self.client)
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()

    def send(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        if not isinstance(payload, bytes | str):
            payload = orjson.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def create_session(url: str, client_id: str, topic_filter: str = "fs/v1/#") -> None:
    """Create ingest's persistent session ahead of time, as a first run would: from
    then on the broker keeps QoS 1 messages for it while it is down. Returns once
    the broker has acknowledged the subscription (SUBACK)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    ep = MqttEndpoint.parse(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    # clean_start=False, as ingest connects: Mosquitto 2.0.11 does not restore a
    # session begun with clean_start=True from its persistence after a restart.
    client.connect(ep.host, ep.port, clean_start=False, properties=props)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    try:
        assert subscribed.wait(10), "no SUBACK from the broker"
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(url: str, client_id: str) -> None:
    """Drop a persistent session left on a shared broker by a test (a clean
    3.1.1 connection under its client id replaces it once the CONNACK is in)."""
    ep = MqttEndpoint.parse(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK from the broker"
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """A device-side (or observer) client: subscribed, SUBACK received, before
    the constructor returns; collects (topic, payload) in arrival order."""

    def __init__(self, url: str, *filters: str, qos: int = 1) -> None:
        ep = MqttEndpoint.parse(url)
        self._lock = threading.Lock()
        self.received: list[tuple[str, bytes, bool]] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_inflight_messages_set(1000)
        ep.sign_in(self.client)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        self.client.subscribe([(f, qos) for f in filters])
        assert subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload), bool(message.retain)))

    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drain(db: str, publisher: Publisher, site: str) -> None:
    """Wait until ingest has committed everything `publisher` sent before this
    call: a sentinel message (from an unregistered device, so a reject with a
    unique topic) sent after them is committed after them, since ingest
    commits its batches in arrival order. A condition, not a sleep."""
    topic = f"fs/v1/{site}/sentinel-{uuid.uuid4().hex[:12]}/telemetry"
    publisher.send(topic, {"ts": int(time.time() * 1000), "seq": 0, "v": {}})
    wait_for(lambda: query(db, "SELECT 1 FROM rejects WHERE topic = %s", (topic,)), timeout=30)


class IngestThread:
    """An IngestService running on its own event loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        from ingest.service import IngestService

        self.settings = settings
        self.service: IngestService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        from ingest.service import IngestService

        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self.service = IngestService(self.settings)
            runner = asyncio.create_task(self.service.run())
            while not (self.service.ready.is_set() and self.service.subscribed):
                if runner.done():
                    break
                await asyncio.sleep(0.02)
            self._started.set()
            await runner

        try:
            asyncio.run(go())
        except BaseException as exc:  # surfaced in stop()
            self._error = exc
        finally:
            self._started.set()

    def start(self) -> IngestThread:
        self._thread.start()
        assert self._started.wait(30), "ingest did not start"
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self.service is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.service.request_stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "ingest did not stop"
        if self._error:
            raise self._error


@contextmanager
def running_ingest(settings: Settings) -> Iterator[IngestThread]:
    thread = IngestThread(settings).start()
    try:
        yield thread
    finally:
        thread.stop()


def clear_retained(url: str, topic_filter: str = "fs/v1/#") -> int:
    """Delete the retained messages under a filter (tests must not leave any behind:
    every new subscriber of `fs/v1/#` would receive them). The broker sends a
    subscription's retained messages before anything published after its SUBACK,
    so a sentinel published then marks the end of them."""
    ep = MqttEndpoint.parse(url)
    seen: set[str] = set()
    sentinel = f"firesafe-test/sentinel/{uuid.uuid4().hex}"
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(c: Any, u: Any, m: paho.MQTTMessage) -> None:
        if m.topic == sentinel:
            done.set()
        elif m.retain and m.payload:
            seen.add(m.topic)

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-clean-{uuid.uuid4().hex[:8]}"
    )
    client.max_inflight_messages_set(1000)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        client.subscribe([(topic_filter, 1), (sentinel, 1)])
        assert subscribed.wait(10), "no SUBACK from the broker"
        client.publish(sentinel, b"end", qos=1).wait_for_publish(10)
        assert done.wait(30), "the sentinel never came back"
        topics = sorted(seen)
        for start in range(0, len(topics), 500):  # within paho's in-flight window
            infos = [
                client.publish(t, b"", qos=1, retain=True) for t in topics[start : start + 500]
            ]
            for info in infos:
                info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(seen)


def refresh_rollup(conn: psycopg.Connection[Any], query: sql.Composed | str) -> None:
    """CALL refresh_continuous_aggregate(...) on TimescaleDB, waiting out the policy
    job's own refresh (TimescaleDB refuses a second concurrent one at once)."""
    for _ in range(120):
        try:
            conn.execute(query)
            return
        except psycopg.errors.LockNotAvailable:
            time.sleep(0.25)
    conn.execute(query)


def reads_in_chinese(detail: str) -> None:
    """An operator or device maker reading /api/v1/rejects in Chinese gets the
    whole detail in Chinese: a template covers it (`detail_label`), and no
    English words are left but the JSON parser's own message."""
    text = localize(detail, "zh-CN")
    assert text is not None, f"no template for {detail!r}: add one to api.errors._TEMPLATES"
    text = text.split("JSON：")[0]
    assert not re.search(r"[A-Za-z]{3,} [A-Za-z]{3,}", text), (detail, text)
