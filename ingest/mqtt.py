"""The MQTT side of ingest: paho-mqtt driven by the asyncio event loop.

- A persistent session (stable client id, no clean start, a long session
  expiry) so the broker keeps what is published while ingest is down.
- Manual acknowledgement: a QoS 1 message is acknowledged only once the batch
  holding it is committed (`ack`), so a crash before commit loses nothing:
  the broker delivers it again.
- MQTT 5 with a large Receive Maximum so the broker may keep a whole batch in
  flight; brokers without MQTT 5 (amqtt) get MQTT 3.1.1.
- Reconnect is an outer loop with jittered exponential backoff.
- Backpressure: `pause()` stops reading the socket; the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from firesafe.settings import MqttEndpoint
from firesafe.throttle import ThrottledWarning
from ingest.decode import RawMessage

log = logging.getLogger(__name__)
# A broker outage is one event for every session of the process (a sharded
# ingest holds up to 64): the first line at once, the rest summed up (an
# outside check counted 280 lines per process for a 25 s restart).
_trouble = ThrottledWarning(log, "MQTT connection trouble")

SUBSCRIPTION = "fs/v1/#"  # everything of the contract; malformed topics become rejects
# A broker gone without a word (a partition, a firewall) is noticed within
# about 1.5 x this: supervision gives back only the time ingest knew it was deaf.
KEEPALIVE_S = 10
# The broker keeps an offline session (and its queued QoS 1 messages) this long.
SESSION_EXPIRY_S = 7 * 24 * 3600
# MQTT 5 maximum: lets a whole batch be in flight while we wait for the commit.
RECEIVE_MAXIMUM = 65535
RECONNECT_MIN_S = 0.5
# Short: while ingest is away, fires wait in the broker and linkage commands
# cannot leave; jitter spreads a fleet's reconnections.
RECONNECT_MAX_S = 5.0
# A connection lost sooner than this after it was made is retried with backoff,
# as a failed one is (one that lasted is retried at once).
STABLE_S = 10.0
_SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: same client id connected elsewhere
# An MQTT 3.1.1-only broker may ignore an MQTT 5 CONNECT: fall back after this.
CONNECT_TIMEOUT_S = 5.0
# One recv() per socket wake-up instead of paho's byte-at-a-time header reads.
READ_CHUNK = 256 * 1024
# Packets handled per socket wake-up before yielding to the other tasks.
MAX_PACKETS_PER_WAKEUP = 500


_GENERATIONS = itertools.count(1)


class MqttError(Exception):
    """The broker could not be reached or refused us."""


class _BufferedClient(paho.Client):
    """paho reads each packet header one byte per recv(); buffer the socket instead.

    paho calls `_sock_recv(n)` for every piece of a packet; serving those from a
    large buffer turns several syscalls per message into one per burst. The
    buffer is drained completely before `BlockingIOError` is raised, so
    readiness-based wake-ups never strand buffered bytes.
    """

    _rbuf = b""
    _rpos = 0
    drained = False  # the last read found the socket empty (EAGAIN)
    # (topic, payload, retained, mid, qos, dup) -> None; set by MqttSource
    on_publish_fast: Callable[[str, bytes, bool, int, int, bool], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """QoS 0/1 PUBLISH without paho's per-message objects.

        paho builds an MQTTMessage, a Properties object (MQTT 5) and runs its
        topic matcher for every message; at tens of thousands of messages a
        second that was three quarters of ingest's time. We need neither the
        properties (no topic aliases are allowed: Topic Alias Maximum is 0)
        nor per-topic callbacks, so parse the few fields we use. QoS 2 (which
        the contract does not use) goes through paho's own handler.
        """
        deliver = self.on_publish_fast
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if deliver is None or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        end = 2 + ((packet[0] << 8) | packet[1])
        topic = packet[2:end].decode("utf-8")
        mid = 0
        if qos:
            mid = (packet[end] << 8) | packet[end + 1]
            end += 2
        if self._protocol == paho.MQTTv5:  # skip the properties (a variable-length length)
            length, shift = 0, 0
            while True:
                byte = packet[end]
                end += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            end += length
        deliver(topic, bytes(packet[end:]), bool(header & 0x01), mid, qos, bool(header & 0x08))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            try:
                self._rbuf = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                self.drained = True
                raise
            self._rpos = 0
            if not self._rbuf:
                return b""
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos = end
        return chunk

    def _reset_read_buffer(self) -> None:
        self._rbuf = b""
        self._rpos = 0


class MqttSource:
    """Receives contract messages, hands them over in bursts, acknowledges on request."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        deliver: Callable[[RawMessage], None],
        *,
        subscriptions: Sequence[str] = (SUBSCRIPTION,),
        shard: int = -1,
        still_ours: Callable[[], Awaitable[bool | None]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Asked before reconnecting a lost session: True (ours: reconnect),
        # False (no longer ours: end), None (cannot tell yet: ask again).
        self.still_ours = still_ours
        self.client_id = client_id
        self.deliver = deliver
        self.subscriptions = list(subscriptions)
        self.shard = shard  # carried by every message, so its ack finds this session
        self.generation = 0  # the current connection's number: packet ids are per connection
        self.connected = False
        self.session_present = False  # the broker still had our session (CONNACK)
        self.protocol = paho.MQTTv5
        self._client: _BufferedClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._paused = False
        self._connack: asyncio.Future[ReasonCode | int] | None = None
        self._suback: asyncio.Future[None] | None = None
        self.subscribed = False
        self.away_since: float | None = time.monotonic()  # not subscribed since (monotonic)
        self._ever_subscribed = False
        self._lost: asyncio.Event = asyncio.Event()
        self._lost_code = 0  # the reason code of the last disconnection
        self._stopping = False
        # Our own QoS 1 publications awaiting PUBACK, by packet id.
        self._inflight: dict[int, asyncio.Future[None]] = {}

    # ----------------------------------------------------------- public API
    async def run(self, on_connected: Callable[[], None] | None = None) -> None:
        """Stay connected until `stop()`; reconnect with jittered backoff."""
        self._loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            try:
                await self._connect()
            except MqttError as exc:
                attempt += 1
                delay = _backoff(attempt)
                where = f"{self.endpoint.url()} ({self.client_id})"
                _trouble(f"{where}: {exc}; retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
                continue
            up_since = time.monotonic()
            if on_connected is not None:
                on_connected()
            misc = asyncio.create_task(self._misc_loop(), name="mqtt-keepalive")
            try:
                await self._lost.wait()
            finally:
                misc.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await misc
                self._teardown()
            if self._stopping:
                break
            # The broker may have been upgraded or restarted: ask for MQTT 5 again.
            self.protocol = paho.MQTTv5
            why = ""
            if self._lost_code == _SESSION_TAKEN_OVER:
                why = " (another client took the session: another process holding this shard?)"
            # (a takeover is not always told as one: Mosquitto closed the
            # connection with no reason code in the outside check's case)
            if self.still_ours is not None and not await self._wait_until_ours():
                log.warning(
                    "MQTT session %r lost, and its shard is another process's now: "
                    "not reconnecting",
                    self.client_id,
                )
                return
            if time.monotonic() - up_since >= STABLE_S:
                attempt = 0
                _trouble(f"connection of {self.client_id!r} lost{why}; reconnecting")
                continue
            # Lost again at once: two processes taking one client id from each
            # other, or a broker that drops us. Back off as for a failed connect
            # (an outside check saw 1,000 reconnections a second without this).
            attempt += 1
            delay = _backoff(attempt)
            _trouble(
                f"connection of {self.client_id!r} lost after "
                f"{time.monotonic() - up_since:.1f} s{why} (reason {self._lost_code}); "
                f"reconnecting in {delay:.1f} s"
            )
            await asyncio.sleep(delay)

    async def _wait_until_ours(self) -> bool:
        """After a loss: whether the session is still ours to take back, asked
        again (with backoff) while that cannot be told. A process cut off from
        its database, whose shard a peer took over, would otherwise take the
        session back from the peer, and the peer back from it, until it
        noticed (an outside check: 20 s of sessions kicked to and fro)."""
        attempt = 0
        while not self._stopping:
            verdict = await self.still_ours() if self.still_ours is not None else True
            if verdict is not None:
                return verdict
            attempt += 1
            await asyncio.sleep(_backoff(attempt))
        return False

    async def stop(self) -> None:
        """Disconnect cleanly; the broker keeps the session and unacknowledged messages."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected:
            client.disconnect()
            # Let the DISCONNECT packet go out.
            for _ in range(20):
                if not self.connected:
                    break
                await asyncio.sleep(0.01)
        self._lost.set()

    def ack(self, messages: Sequence[RawMessage]) -> int:
        """Acknowledge committed QoS 1 messages that came on the current connection
        (those of an earlier one are delivered again, and stored once)."""
        client = self._client
        if client is None or not self.connected:
            return 0
        generation = self.generation
        acked = 0
        for message in messages:
            if message.qos and message.generation == generation:
                client.ack(message.mid, message.qos)
                acked += 1
        return acked

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None] | None:
        """Publish at QoS 1; the future resolves when the broker has acknowledged
        it (PUBACK), and is cancelled if the connection is lost first or fails if
        the broker refuses it. None: not connected."""
        client = self._client
        if client is None or not self.connected or self._loop is None:
            return None
        info = client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return None
        future: asyncio.Future[None] = self._loop.create_future()
        self._inflight[info.mid] = future
        return future

    def pause(self) -> None:
        """Stop reading from the broker (backpressure)."""
        if not self._paused and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
        self._paused = True

    def resume(self) -> None:
        was_paused = self._paused
        self._paused = False
        if was_paused and self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock, self._on_readable)
            self._loop.call_soon(self._on_readable)  # bytes may be buffered already

    # --------------------------------------------------------- connection
    def _new_client(self) -> _BufferedClient:
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            clean_session=False if self.protocol != paho.MQTTv5 else None,
            manual_ack=True,
        )
        self.endpoint.sign_in(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish_fast = self._on_publish_fast
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_puback
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    async def _connect(self) -> None:
        assert self._loop is not None
        self._lost = asyncio.Event()
        self._connack = self._loop.create_future()
        self._client = client = self._new_client()
        kwargs: dict[str, Any] = {"keepalive": KEEPALIVE_S}
        if self.protocol == paho.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            kwargs.update(clean_start=False, properties=props)
        try:
            # Blocking TCP connect off the loop; socket callbacks hop back onto it.
            await self._loop.run_in_executor(
                None, lambda: client.connect(self.endpoint.host, self.endpoint.port, **kwargs)
            )
        except (OSError, paho.WebsocketConnectionError) as exc:
            # The broker is down or unreachable: that says nothing of its protocol.
            self._teardown()
            raise MqttError(f"cannot connect: {exc or type(exc).__name__}") from exc
        try:
            code = await asyncio.wait_for(self._connack, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            # Connected, but no CONNACK: a 3.1.1-only broker may ignore an MQTT 5 CONNECT.
            self._teardown()
            if self.protocol == paho.MQTTv5:
                self._fallback("did not answer an MQTT 5 CONNECT")
            raise MqttError("no CONNACK within the connect timeout") from exc
        except MqttError:
            self._teardown()
            raise
        if _failed(code):
            self._teardown()
            if self.protocol == paho.MQTTv5 and _unsupported_protocol(code):
                self._fallback(f"refused MQTT 5 ({code})")
            raise MqttError(f"broker refused the connection: {code}")
        if self.subscriptions:
            self._suback = self._loop.create_future()
            self._subscribe(client, self.subscriptions)
            try:
                # Subscribed (not merely connected) is when nothing more can be missed.
                await asyncio.wait_for(self._suback, CONNECT_TIMEOUT_S)
            except (TimeoutError, MqttError) as exc:
                self._teardown()
                raise MqttError(
                    f"subscription to {len(self.subscriptions)} filter(s) not acknowledged"
                ) from exc
        reconnected = self._ever_subscribed
        self._ever_subscribed = self.subscribed = True
        self.away_since = None
        log.info(
            "MQTT connected to %s as %r (%s, persistent session)",
            self.endpoint.url(),
            self.client_id,
            "MQTT 5" if self.protocol == paho.MQTTv5 else "MQTT 3.1.1",
        )
        if reconnected and not self.session_present:
            # Ours was subscribed before: a broker that no longer has it was
            # restarted without saving it (Mosquitto: persistence, and
            # autosave_interval for a kill) or expired it. Messages published
            # while we were away were dropped: say so, the seq gaps count them.
            log.warning(
                "MQTT broker %s had lost the session of %r: what was published while it "
                "was away is gone (broker restarted without its saved sessions?)",
                self.endpoint.url(),
                self.client_id,
            )

    def _subscribe(self, client: paho.Client, topics: Sequence[str]) -> None:
        if self.protocol == paho.MQTTv5:
            options = SubscribeOptions(qos=1, noLocal=True)
            client.subscribe([(t, options) for t in topics])
        else:
            client.subscribe([(t, 1) for t in topics])

    def add_subscriptions(self, topics: Sequence[str]) -> None:
        """Subscribe to more topic filters (a site registered in this shard)."""
        new = [t for t in topics if t not in self.subscriptions]
        if not new:
            return
        self.subscriptions += new
        client = self._client
        if client is not None and self.connected:
            self._subscribe(client, new)

    def _fallback(self, why: str) -> None:
        log.info("the broker %s; trying MQTT 3.1.1", why)
        self.protocol = paho.MQTTv311

    def _teardown(self) -> None:
        self.connected = False
        self.subscribed = False
        if self.away_since is None:
            self.away_since = time.monotonic()
        inflight, self._inflight = self._inflight, {}
        for future in inflight.values():
            future.cancel()  # the connection is gone: no PUBACK will come
        client, self._client = self._client, None
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock)
        self._sock = None
        if client is not None:
            with contextlib.suppress(Exception):
                client._reset_read_buffer()
                sock = client.socket()
                if sock is not None:
                    sock.close()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            client = self._client
            if client is None:
                return
            if client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._lost.set()
                return

    # ------------------------------------------------------ paho callbacks
    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        elif not self._loop.is_closed():  # a client collected after its loop ended
            self._loop.call_soon_threadsafe(fn)

    def _on_readable(self) -> None:
        # paho's loop_read() handles one packet per call; keep reading until the
        # socket is drained (buffered packets raise no readiness event of their own).
        client = self._client
        for _ in range(MAX_PACKETS_PER_WAKEUP):
            if client is None or client is not self._client or self._paused:
                return
            client.drained = False
            rc = client.loop_read()
            if rc != paho.MQTT_ERR_SUCCESS:
                self._lost.set()
                return
            if client.drained:
                return
        assert self._loop is not None
        self._loop.call_soon(self._on_readable)  # yield to other tasks, then go on

    def _on_writable(self) -> None:
        client = self._client
        if client is not None:
            client.loop_write()

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def register() -> None:
            assert self._loop is not None
            self._sock = sock
            if not self._paused:
                self._loop.add_reader(sock, self._on_readable)

        self._call_in_loop(register)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

        self._call_in_loop(unregister)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def register() -> None:
            assert self._loop is not None
            self._loop.add_writer(sock, self._on_writable)

        self._call_in_loop(register)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(Exception):
                self._loop.remove_writer(sock)

        self._call_in_loop(unregister)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
    ) -> None:
        if not _failed(code):
            # Here, not after the await: queued messages can follow CONNACK in the
            # same read and must carry the new connection's generation. Numbered
            # process-wide, so that no other session's connection, now or later,
            # shares it: a packet id is only meaningful on its own connection.
            self.generation = next(_GENERATIONS)
            self.connected = True
            self.session_present = bool(getattr(flags, "session_present", False))
        future = self._connack
        if future is not None and not future.done():
            self._call_in_loop(lambda: None if future.done() else future.set_result(code))

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        future = self._suback
        if future is None or future.done():
            return
        if any(_failed(c) for c in codes):
            error = MqttError(f"subscription refused: {codes}")
            self._call_in_loop(lambda: None if future.done() else future.set_exception(error))
        else:
            self._call_in_loop(lambda: None if future.done() else future.set_result(None))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
    ) -> None:
        self._lost_code = int(code.value) if isinstance(code, ReasonCode) else int(code)
        self.connected = False
        self.subscribed = False
        self._call_in_loop(self._lost.set)
        future = self._connack
        if future is not None and not future.done():
            self._call_in_loop(
                lambda: (
                    None
                    if future.done()
                    else future.set_exception(MqttError(f"disconnected during connect: {code}"))
                )
            )

    def _on_puback(
        self, client: paho.Client, userdata: Any, mid: int, code: ReasonCode, props: Any
    ) -> None:
        def resolve() -> None:
            future = self._inflight.pop(mid, None)
            if future is None or future.done():
                return
            if _failed(code):
                future.set_exception(MqttError(f"broker refused the publication: {code}"))
            else:
                future.set_result(None)

        self._call_in_loop(resolve)

    def _on_publish_fast(
        self, topic: str, payload: bytes, retained: bool, mid: int, qos: int, dup: bool
    ) -> None:
        self.deliver(
            RawMessage(
                topic,
                payload,
                int(time.time() * 1000),
                retained,
                mid,
                qos,
                self.generation,
                shard=self.shard,
                dup=dup,
            )
        )

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.deliver(
            RawMessage(
                message.topic,
                bytes(message.payload),  # already bytes: no copy
                int(time.time() * 1000),
                bool(message.retain),
                message.mid,
                message.qos,
                self.generation,
                shard=self.shard,
                dup=bool(message.dup),
            )
        )


def _failed(code: ReasonCode | int) -> bool:
    if isinstance(code, ReasonCode):
        return bool(code.is_failure)
    return code != 0


def _unsupported_protocol(code: ReasonCode | int) -> bool:
    value = code.value if isinstance(code, ReasonCode) else code
    return value in (1, 0x84)  # 3.1.1 "unacceptable protocol version", 5 "unsupported"


def _backoff(attempt: int) -> float:
    """Seconds before the next connection attempt; jitter: a fleet must not
    reconnect in step."""
    return min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2.0**attempt) * random.uniform(0.5, 1.0)


async def can_connect(endpoint: MqttEndpoint, client_id: str, timeout_s: float = 2.0) -> bool:
    """Whether the broker accepts a connection now: one clean MQTT 3.1.1 session
    (CONNECT, CONNACK accepted, DISCONNECT), nothing left on the broker. For a
    process that holds no session to tell it can reach the broker; it waits
    at most 2 x `timeout_s` (connect, then CONNACK), between two batches."""

    def attempt() -> bool:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        endpoint.sign_in(client)
        client.connect_timeout = timeout_s
        answered = threading.Event()
        accepted = [False]

        def on_connect(c: Any, u: Any, flags: Any, code: Any, props: Any) -> None:
            accepted[0] = not _failed(code)
            answered.set()

        client.on_connect = on_connect
        try:
            client.connect(endpoint.host, endpoint.port, keepalive=int(KEEPALIVE_S))
        except (OSError, paho.WebsocketConnectionError):
            return False
        client.loop_start()
        try:
            answered.wait(timeout_s)
            return accepted[0]
        finally:
            client.disconnect()
            client.loop_stop()

    return await asyncio.to_thread(attempt)
