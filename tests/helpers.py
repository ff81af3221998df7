"""Test helpers: registry rows, a real MQTT publisher, polling, ingest in a thread."""

from __future__ import annotations

import asyncio
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
from psycopg.types.json import Jsonb

from firesafe.settings import MqttEndpoint, Settings

T = TypeVar("T")


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
        if ep.username:
            self.client.username_pw_set(ep.username, ep.password)
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
    then on the broker keeps QoS 1 messages for it while it is down."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    ep = MqttEndpoint.parse(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    props.SessionExpiryInterval = 3600
    client.connect(ep.host, ep.port, clean_start=True, properties=props)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)[1]
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def forget_session(url: str, client_id: str) -> None:
    """Drop a persistent session left on a shared broker by a test."""
    ep = MqttEndpoint.parse(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    client.connect(ep.host, ep.port)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


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


def clear_retained(url: str, topic_filter: str = "fs/v1/#", settle_s: float = 1.0) -> int:
    """Delete the retained messages under a filter (tests must not leave any behind:
    every new subscriber of `fs/v1/#` would receive them)."""
    ep = MqttEndpoint.parse(url)
    seen: set[str] = set()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-clean-{uuid.uuid4().hex[:8]}"
    )
    client.max_inflight_messages_set(1000)
    client.on_message = lambda c, u, m: seen.add(m.topic) if m.retain and m.payload else None
    client.connect(ep.host, ep.port)
    client.loop_start()
    client.subscribe(topic_filter, qos=0)
    time.sleep(settle_s)
    topics = sorted(seen)
    for start in range(0, len(topics), 500):  # within paho's in-flight window
        infos = [client.publish(t, b"", qos=1, retain=True) for t in topics[start : start + 500]]
        for info in infos:
            info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()
    return len(seen)
