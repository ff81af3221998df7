"""A QoS 1 publisher that tells when the broker has acknowledged each message.

A gateway answers its device only after the broker holds what the device
sent (PUBACK received, and with MQTT 5 a success reason code), so it needs
per-message acknowledgements. paho runs on the gateway's own event loop (its
socket registered with the loop, no network thread): `publish_all` queues a
frame's messages, paho writes them when the socket is writable (all that
queued since, in one send), and each PUBACK is matched to its frame as paho
reads it. While the broker is away nothing is acknowledged: `publish_all`
returns False at once and the gateway does not confirm; the connection is
retried with jittered backoff (MQTT 5, falling back to 3.1.1).

At most MAX_OUTSTANDING messages (fewer if the broker's Receive Maximum says
so) are handed to paho and unacknowledged at a time; the rest wait here, in
order, for PUBACKs to free the window. A QoS 1 packet identifier is 16 bits:
without the window a burst of more than 65,535 (a garbage flood used to make
one reject per byte) reused identifiers still in flight, and the PUBACKs of
the first messages settled the later ones while the overwritten ones timed out
as "lost". A message whose frame was given up (timeout) before its turn is
not sent at all. Callers bound what they queue (a gateway connection stops
reading with too many frames unacknowledged).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from firesafe.settings import MqttEndpoint
from firesafe.throttle import ThrottledWarning

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 30
CONNECT_TIMEOUT_S: Final = 10.0
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 5.0  # a panel's alarms wait for it
MISC_EVERY_S: Final = 1.0  # keepalive pings and dead-connection checks
# How long one frame's messages may wait for their PUBACKs before the frame is
# given up (not confirmed; the device resends). A broker holds a PUBACK only
# while it persists the message: seconds mean it is in trouble.
ACK_TIMEOUT_S: Final = 10.0
# paho's in-flight window: 0 = none. Its window costs a scan of every queued
# message per PUBACK (quadratic at a thousand in flight). The window is kept
# here instead (MAX_OUTSTANDING), at O(1) per PUBACK.
MAX_INFLIGHT: Final = 0
# Messages published and not yet acknowledged, at most: far below the 65,535
# packet identifiers of MQTT, and plenty to keep a broker busy (a PUBACK comes
# back within a millisecond or so: thousands in flight fill any link).
MAX_OUTSTANDING: Final = 4096


class _Ack:
    """One frame's messages: done when every PUBACK came (ok) or one failed."""

    __slots__ = ("future", "left", "timer")

    def __init__(self, future: asyncio.Future[bool], left: int) -> None:
        self.future = future
        self.left = left
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, ok: bool) -> None:
        if not self.future.done():
            self.future.set_result(ok)
        if self.timer is not None:
            self.timer.cancel()


class AckPublisher:
    """Publishes at QoS 1 and awaits PUBACKs. `start()` inside the running loop."""

    def __init__(self, endpoint: MqttEndpoint, client_prefix: str = "firesafe-gateway") -> None:
        self.endpoint = endpoint
        self.client_id = f"{client_prefix}-{uuid.uuid4().hex[:8]}"
        self.protocol = paho.MQTTv5
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[int, _Ack] = {}  # mid -> its frame
        # (topic, payload, retain, frame): waiting for room in the window.
        self._backlog: collections.deque[tuple[str, bytes, bool, _Ack]] = collections.deque()
        self._window = MAX_OUTSTANDING
        self._refused = ThrottledWarning(log, "broker refused a message")
        self._ever: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._receive_maximum = MAX_OUTSTANDING  # the broker's, from its CONNACK (MQTT 5)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ever = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="gateway-mqtt")

    async def wait_connected(self, wait_s: float) -> bool:
        assert self._ever is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ever.wait(), wait_s)
        return self.connected

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        client = self._client
        if client is not None and self.connected:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_write()
        self._teardown()

    # -------------------------------------------------------------- publish
    @property
    def outstanding(self) -> int:
        """Messages handed to the broker, not acknowledged yet (<= the window)."""
        return len(self._waiting)

    @property
    def backlog(self) -> int:
        """Messages waiting for room in the window."""
        return len(self._backlog)

    async def publish_all(
        self, messages: Sequence[tuple[str, bytes, bool]], ack_timeout_s: float = ACK_TIMEOUT_S
    ) -> bool:
        """Publish (topic, payload, retain) at QoS 1; True once the broker has
        acknowledged every one, False if any was not (not connected, refused,
        connection lost, timeout)."""
        return await self.publish_nowait(messages, ack_timeout_s)

    def publish_nowait(
        self, messages: Sequence[tuple[str, bytes, bool]], ack_timeout_s: float = ACK_TIMEOUT_S
    ) -> asyncio.Future[bool]:
        """The same, without a coroutine: the future resolves as `publish_all` returns."""
        loop = self._loop
        assert loop is not None, "start() first"
        future: asyncio.Future[bool] = loop.create_future()
        if not messages:
            future.set_result(True)
            return future
        client = self._client
        ack = _Ack(future, len(messages))
        if not self.connected or client is None:
            ack.settle(False)
            return future
        # The timeout counts from here: time spent waiting for the window too
        # (a frame given up is resent by its device; its messages left in the
        # backlog are then not sent).
        ack.timer = loop.call_later(ack_timeout_s, ack.settle, False)
        for topic, payload, retain in messages:
            if self._backlog or len(self._waiting) >= self._window:
                self._backlog.append((topic, payload, retain, ack))
            elif not self._send(client, topic, payload, retain, ack):
                return future
        return future

    def _send(
        self, client: paho.Client, topic: str, payload: bytes, retain: bool, ack: _Ack
    ) -> bool:
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            ack.settle(False)
            return False
        earlier = self._waiting.get(info.mid)
        if earlier is not None:  # cannot happen within the window; never mix two up
            earlier.settle(False)
        self._waiting[info.mid] = ack
        return True

    def _drain(self) -> None:
        """Hand waiting messages to paho as PUBACKs free the window."""
        client = self._client
        backlog = self._backlog
        while backlog and len(self._waiting) < self._window:
            if client is None or not self.connected:
                return
            topic, payload, retain, ack = backlog.popleft()
            if ack.future.done():
                continue  # given up (timeout, or one of its messages failed)
            self._send(client, topic, payload, retain, ack)

    # ----------------------------------------------------------- connection
    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
            except (OSError, TimeoutError, ConnectionError) as exc:
                self._teardown()
                attempt += 1
                delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # jitter: gateways must not retry in step
                log.warning(
                    "gateway MQTT %s: %s; retrying in %.1f s", self.endpoint.url(), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            assert self._lost is not None
            misc = asyncio.create_task(self._misc(), name="gateway-mqtt-misc")
            try:
                await self._lost.wait()
            finally:
                misc.cancel()
                self._teardown()
            log.warning("gateway MQTT connection lost; reconnecting")

    async def _connect(self) -> None:
        loop = self._loop
        assert loop is not None
        self._lost = asyncio.Event()
        self._connack = loop.create_future()
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol
        )
        self.endpoint.sign_in(client)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client
        # The blocking TCP connect off the loop; socket callbacks hop back onto it.
        await loop.run_in_executor(
            None, lambda: client.connect(self.endpoint.host, self.endpoint.port, KEEPALIVE_S)
        )
        # paho wakes its network thread through a socket pair on every publish;
        # there is no such thread here (the loop watches the socket), so drop
        # the pair instead of paying a send() per message.
        client._reset_sockets(sockpair_only=True)
        code = await asyncio.wait_for(self._connack, CONNECT_TIMEOUT_S)
        if code.is_failure:
            if self.protocol == paho.MQTTv5 and code.value in (1, 0x84):
                log.info("broker refused MQTT 5 (%s); trying MQTT 3.1.1", code)
                self.protocol = paho.MQTTv311
            raise ConnectionError(f"broker refused the connection: {code}")
        self.connected = True
        self._window = min(MAX_OUTSTANDING, self._receive_maximum)
        assert self._ever is not None
        self._ever.set()
        log.info("gateway MQTT connected to %s as %s", self.endpoint.url(), self.client_id)

    def _teardown(self) -> None:
        """The connection is gone: what was not acknowledged counts as not sent."""
        self.connected = False
        waiting, self._waiting = self._waiting, {}
        for ack in waiting.values():
            ack.settle(False)
        backlog, self._backlog = self._backlog, collections.deque()
        for *_, ack in backlog:
            ack.settle(False)
        client, self._client = self._client, None
        if client is not None:
            sock = client.socket()
            if sock is not None and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock)
                with contextlib.suppress(Exception):
                    self._loop.remove_writer(sock)
                with contextlib.suppress(Exception):
                    sock.close()

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_EVERY_S)
            client = self._client
            if client is None or client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                if self._lost is not None:
                    self._lost.set()
                return

    # ----------------------------------------------- socket <-> event loop
    def _in_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _readable(self) -> None:
        client = self._client
        failed = client is not None and client.loop_read() != paho.MQTT_ERR_SUCCESS
        if failed and self._lost is not None:
            self._lost.set()
        elif self._backlog:
            self._drain()  # the PUBACKs just read freed room

    def _writable(self) -> None:
        client = self._client
        if client is not None:
            client.loop_write()

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.add_reader(sock, self._readable))  # type: ignore[union-attr]

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(sock)

        self._in_loop(unregister)

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.add_writer(sock, self._writable))  # type: ignore[union-attr]

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(Exception):
                self._loop.remove_writer(sock)

        self._in_loop(unregister)

    # ------------------------------------------------------ paho callbacks
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        fut = self._connack
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self._receive_maximum = (
            int(receive_maximum)
            if isinstance(receive_maximum, int) and receive_maximum > 0
            else MAX_OUTSTANDING
        )
        self._in_loop(lambda: None if fut is None or fut.done() else fut.set_result(reason))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connected = False
        lost = self._lost
        if lost is not None:
            self._in_loop(lost.set)
        fut = self._connack
        if fut is not None:
            error = ConnectionError(f"disconnected during connect: {reason}")
            self._in_loop(lambda: None if fut.done() else fut.set_exception(error))

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # Called from loop_read, on the loop.
        ack = self._waiting.pop(mid, None)
        if ack is None:
            return
        if reason.is_failure:
            self._refused(str(reason))
            ack.settle(False)
            return
        ack.left -= 1
        if ack.left == 0:
            ack.settle(True)
