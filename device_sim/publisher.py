"""Sending a simulation over MQTT: paced to event time or as fast as possible.

One shared connection per publisher process carries most devices (as a fleet
of gateways and cheap devices would); `connections` devices hold their own
connection with a retained `offline` last will, `online` retained on connect,
exactly as the contract asks of a real device. paho is driven by hand (no
network thread) so a process spends its time encoding and writing.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from device_sim import contract as c
from device_sim.fastlink import FastLink, FastLinkError
from device_sim.timeline import Message, Simulation
from firesafe.settings import MqttEndpoint

log = logging.getLogger(__name__)

# Unacknowledged QoS 1 messages allowed in flight; above it we wait for PUBACKs
# (bounded memory, and the broker is not flooded faster than it acknowledges).
MAX_INFLIGHT = 20_000
# Service the socket every this many publishes (fewer syscalls, bigger writes).
SERVICE_EVERY = 256
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 30.0
RECONNECT_MAX_S = 5.0
# Publishing earlier than due by less than this is not worth a sleep.
PACING_SLACK_S = 0.002
REPORT_EVERY_S = 0.5


class PublishError(RuntimeError):
    pass


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Counters:
    messages: int = 0
    readings: int = 0
    errors: int = 0
    event_ms: int = 0  # event time reached
    # Wall clock (epoch ms) of the first publish and of the last acknowledgement:
    # the publishing window, without the setup (estate, simulation) before it.
    started_ms: int = 0
    finished_ms: int = 0
    cpu_ms: int = 0  # CPU time of the publishing process(es) over that window

    @property
    def publish_s(self) -> float:
        return max(0.0, (self.finished_ms - self.started_ms) / 1000.0)


class Link:
    """One MQTT connection driven by hand: publish, then `service()` the socket."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        will_topic: str | None = None,
        clean: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.will_topic = will_topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean,
        )
        self.client.max_inflight_messages_set(65_535)
        self.client.max_queued_messages_set(0)
        endpoint.sign_in(self.client)
        if will_topic:
            # Contract section 1: devices set `offline` (retained) as their last will.
            self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        self.connected = False
        self.wanted = False
        self.pending = 0
        self.errors = 0
        self._next_retry = 0.0
        self._backoff = 0.2
        self._connack_until = 0.0  # a reconnection is waiting for its CONNACK until then
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("%s: connect refused: %s", self.client_id, rc)
            return
        self.connected = True
        self._backoff = 0.2
        self._connack_until = 0.0
        if self.will_topic:
            client.publish(self.will_topic, b"online", qos=1, retain=True)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        self.connected = False
        self._connack_until = 0.0
        self.pending = 0  # paho re-sends them itself on reconnect
        if self.wanted:
            log.warning("%s: disconnected (%s)", self.client_id, rc)

    def _on_publish(self, _c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        self.pending = max(0, self.pending - 1)

    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.wanted = True
        try:
            self.client.connect(self.endpoint.host, self.endpoint.port, KEEPALIVE_S)
        except OSError as exc:
            raise PublishError(f"cannot reach broker {self.endpoint.url()}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while not self.connected:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.client_id}: no CONNACK from {self.endpoint.url()}")
            self.client.loop(0.05)

    def publish(self, msg: Message) -> None:
        info = self.client.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.errors += 1
        elif msg.qos:
            self.pending += 1

    def service(self, wait_s: float = 0.0) -> None:
        """Read acks, write queued bytes, keep alive, reconnect when needed."""
        if not self.connected:
            if time.monotonic() < self._connack_until and self.client.socket() is not None:
                # Reconnected, CONNACK not read yet: reconnecting again now would
                # drop this connection without a DISCONNECT, and the broker would
                # publish the device's last will (a false `offline`).
                self.client.loop(max(wait_s, 0.01))
            else:
                self._maybe_reconnect()
            return
        sock = self.client.socket()
        if sock is None:
            return
        want_w = self.client.want_write()
        r, w, _ = select.select([sock], [sock] if want_w else [], [], wait_s)
        if r:
            self.client.loop_read(1000)
        if w:
            self.client.loop_write()
        self.client.loop_misc()

    def _maybe_reconnect(self) -> None:
        if not self.wanted or time.monotonic() < self._next_retry:
            return
        try:
            self.client.reconnect()
            self._connack_until = time.monotonic() + CONNECT_TIMEOUT_S
            self.client.loop(0.05)
        except OSError as exc:
            self.errors += 1
            log.debug("%s: reconnect failed: %s", self.client_id, exc)
            self._next_retry = time.monotonic() + self._backoff * random.uniform(0.5, 1.0)
            self._backoff = min(RECONNECT_MAX_S, self._backoff * 2)

    def busy(self) -> bool:
        return self.pending > MAX_INFLIGHT or (self.connected and self.client.want_write())

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while (self.pending or self.client.want_write()) and time.monotonic() < deadline:
            self.service(0.05)
        if self.pending:
            log.warning("%s: %d messages unacknowledged at shutdown", self.client_id, self.pending)

    def drop(self) -> None:
        """Lose the connection without DISCONNECT: the broker publishes the last will."""
        self.wanted = False
        self.connected = False
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            # FIN without DISCONNECT; paho sees the closed socket on its next read.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.client.loop(0.05)

    def close(self) -> None:
        self.wanted = False
        if self.connected:
            self.client.disconnect()
            self.client.loop(0.05)


@dataclass
class Publisher:
    """Publishes one simulation (or a process's share of it)."""

    sim: Simulation
    endpoint: MqttEndpoint
    speed: float | None  # event-time seconds per wall second; None: as fast as possible
    connections: int = 0  # devices with their own connection and last will
    client_id: str = field(default_factory=lambda: f"fs-sim-{random.getrandbits(40):010x}")
    report: Callable[[Counters], None] | None = None
    stop: Callable[[], bool] = lambda: False

    def owned_devices(self) -> list[str]:
        gateways = self.sim.gateways()
        share = self.sim.sites
        direct = [
            d.id
            for i, d in enumerate(self.sim.estate.devices)
            if gateways[i] is None and (share is None or d.site in share)
        ]
        return direct[: self.connections]

    def run(self) -> Counters:
        # Paced (a demo, a device maker's test run): ride out a broker restart.
        shared = FastLink(self.endpoint, self.client_id, resilient=bool(self.speed))
        try:
            shared.connect()
        except FastLinkError as exc:
            raise PublishError(str(exc)) from exc
        own: dict[str, Link] = {}
        by_topic: dict[str, Link] = {}
        site_of = {d.id: d.site for d in self.sim.estate.devices}
        for dev in self.owned_devices():
            link = Link(self.endpoint, dev, will_topic=c.status_topic(site_of[dev], dev))
            link.connect()
            own[dev] = link
            for topic in (
                c.telemetry_topic(site_of[dev], dev),
                c.event_topic(site_of[dev], dev),
            ):
                by_topic[topic] = link
            by_topic[c.status_topic(site_of[dev], dev)] = link
        links = list(own.values())
        counters = Counters(started_ms=_wall_ms())
        cpu0 = time.process_time()
        try:
            self._loop(self.sim.chunks(), shared, by_topic, links, counters)
            shared.drain()
            counters.finished_ms = _wall_ms()
            counters.cpu_ms = round((time.process_time() - cpu0) * 1000)
        except FastLinkError as exc:
            raise PublishError(str(exc)) from exc
        finally:
            for link in links:
                link.drain()
                link.close()
            shared.close()
            # Set, not added: the loop's reports already set the links' errors.
            counters.errors = sum(link.errors for link in links) + shared.errors + shared.pending
            if self.report:
                self.report(counters)
        return counters

    def _loop(
        self,
        chunks: Iterable[list[Message]],
        shared: FastLink,
        by_topic: dict[str, Link],
        links: list[Link],
        counters: Counters,
    ) -> None:
        start_ms = self.sim.start_ms
        wall0 = time.monotonic()
        next_report = wall0 + REPORT_EVERY_S
        per_s = 1.0 / (1000.0 * self.speed) if self.speed else 0.0
        since_service = 0
        for chunk in chunks:
            if self.stop():
                break
            for msg in chunk:
                if per_s:
                    due = wall0 + (msg.ts_ms - start_ms) * per_s
                    while (late := due - time.monotonic()) > PACING_SLACK_S:
                        shared.service(0.0)
                        for link in links:
                            link.service(0.0)
                        time.sleep(min(late, 0.05))
                own = by_topic.get(msg.topic) if by_topic else None
                if own is None:
                    shared.publish(msg)
                elif msg.topic.endswith("/status"):
                    self._status(own, msg)
                else:
                    own.publish(msg)
                counters.messages += 1
                counters.readings += msg.readings
                since_service += 1
                if since_service >= SERVICE_EVERY:
                    since_service = 0
                    shared.service(0.0)
                    while shared.busy():
                        shared.service(0.01)
            counters.event_ms = chunk[-1].ts_ms if chunk else counters.event_ms
            shared.service(0.0)
            for link in links:
                link.service(0.0)
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_EVERY_S
                counters.errors = sum(link.errors for link in links) + shared.errors
                if self.report:
                    self.report(counters)

    @staticmethod
    def _status(link: Link, msg: Message) -> None:
        """A device with its own connection: `offline` is its last will firing."""
        if msg.payload == b"offline":
            link.drop()
        elif not link.connected:
            link.connect()  # back: `online` (retained) again on connect
        else:
            link.publish(msg)
