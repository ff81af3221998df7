"""A minimal MQTT 3.1.1 publisher for the shared, high-rate connection.

paho spends most of its time per message (a Properties object, a send()
syscall and a wake-up byte per publish); this writes pre-encoded PUBLISH
packets into one buffer and sends it in large writes, counting PUBACKs.
Only what a publisher needs: CONNECT, PUBLISH QoS 0/1, PUBACK, PINGREQ,
DISCONNECT. Devices that need a last will use paho (`publisher.Link`).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import time

from device_sim.timeline import Message
from firesafe.settings import MqttEndpoint

# Send when this much is buffered: big writes, few syscalls.
FLUSH_BYTES = 256 * 1024
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
# Packet ids are 16 bit; stay well below so no id is reused while in flight.
MAX_INFLIGHT = 30_000
DRAIN_TIMEOUT_S = 30.0

# A paced run rides out a broker restart: it reconnects, backing off to this.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0

log = logging.getLogger(__name__)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_PINGREQ, _PINGRESP, _DISCONNECT = b"\xc0\x00", 0xD0, b"\xe0\x00"


class FastLinkError(RuntimeError):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class FastLink:
    """`resilient`: a lost connection is not an error to stop on (as for a
    benchmark) but what a device meets: what it carried is counted lost, and
    the link connects again, backing off, while later messages are dropped."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, resilient: bool = False) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.resilient = resilient
        self._retry_at = 0.0
        self._backoff = RECONNECT_MIN_S
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.inbuf = bytearray()
        self.pending = 0
        self.errors = 0
        self.connected = False
        self._mid = 0
        self._last_send = 0.0
        self._topics: dict[str, bytes] = {}

    def connect(self) -> None:
        try:
            sock = socket.create_connection(
                (self.endpoint.host, self.endpoint.port), timeout=CONNECT_TIMEOUT_S
            )
            if self.endpoint.tls:
                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=self.endpoint.host
                )
        except OSError as exc:
            raise FastLinkError(f"cannot reach broker {self.endpoint.url()}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02  # clean session
        payload = _utf8(self.client_id)
        if self.endpoint.username:
            flags |= 0x80
            payload += _utf8(self.endpoint.username)
            if self.endpoint.password:
                flags |= 0x40
                payload += _utf8(self.endpoint.password)
        var = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S)
        body = var + payload
        sock.sendall(bytes([_CONNECT]) + _varint(len(body)) + body)
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                raise FastLinkError("broker closed the connection during CONNECT")
            ack += chunk
        if ack[0] != _CONNACK or ack[3] != 0:
            raise FastLinkError(f"broker refused the connection (CONNACK {ack.hex()})")
        self.sock = sock
        self.connected = True
        self._last_send = time.monotonic()

    def _lose(self, why: str) -> None:
        """The connection is gone: stop (FastLinkError), or, resilient, count what
        was in flight as lost and connect again later."""
        self.connected = False
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        if not self.resilient:
            raise FastLinkError(why)
        log.warning(
            "%s: %s; %d message(s) in flight lost, reconnecting", self.client_id, why, self.pending
        )
        self.errors += self.pending
        self.pending = 0
        self.buf.clear()
        self.inbuf.clear()
        self._retry_at = time.monotonic() + self._backoff

    def _revive(self) -> bool:
        """Connected again (resilient links only), when its back-off allows."""
        if self.connected:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self.connect()
        except FastLinkError:
            self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)
            self._retry_at = time.monotonic() + self._backoff
            return False
        self._backoff = RECONNECT_MIN_S
        log.warning("%s: connected to the broker again", self.client_id)
        return True

    def publish(self, msg: Message) -> None:
        if self.resilient and not self._revive():
            self.errors += 1  # the broker is away: this message is lost, as a device's
            return
        topic = self._topics.get(msg.topic)
        if topic is None:
            topic = self._topics[msg.topic] = _utf8(msg.topic)
        header = _PUBLISH | (msg.qos << 1) | (1 if msg.retain else 0)
        if msg.qos:
            self._mid = self._mid % 65535 + 1
            rest = topic + struct.pack("!H", self._mid)
            self.pending += 1
        else:
            rest = topic
        self.buf += bytes([header]) + _varint(len(rest) + len(msg.payload)) + rest
        self.buf += msg.payload
        if len(self.buf) >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.buf or self.sock is None:
            return
        try:
            self.sock.settimeout(DRAIN_TIMEOUT_S)
            self.sock.sendall(self.buf)
        except OSError as exc:
            self._lose(f"lost the broker: {exc}")
            return
        self.buf.clear()
        self._last_send = time.monotonic()

    def service(self, wait_s: float = 0.0) -> None:
        """Send what is buffered, count PUBACKs, keep the connection alive."""
        if self.sock is None:
            if self.resilient:
                self._revive()
            return
        self._flush()
        if self.sock is None:
            return  # lost while sending (resilient)
        if time.monotonic() - self._last_send > KEEPALIVE_S / 2:
            self.buf += _PINGREQ
            self._flush()
        readable, _, _ = select.select([self.sock], [], [], wait_s)
        if not readable:
            return
        try:
            self.sock.settimeout(0.0)
            data = self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            self._lose(f"lost the broker: {exc}")
            return
        if not data:
            self._lose("the broker closed the connection")
            return
        self.inbuf += data
        self._parse()

    def _parse(self) -> None:
        buf = self.inbuf
        i = 0
        while len(buf) - i >= 2:
            kind = buf[i] & 0xF0
            length, mult, j = 0, 1, i + 1
            while True:
                if j >= len(buf):
                    del buf[:i]
                    return
                byte = buf[j]
                length += (byte & 0x7F) * mult
                mult *= 128
                j += 1
                if not byte & 0x80:
                    break
            if len(buf) - j < length:
                break
            if kind == _PUBACK:
                self.pending = max(0, self.pending - 1)
            i = j + length
        del buf[:i]

    def busy(self) -> bool:
        return self.pending > MAX_INFLIGHT

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        self._flush()
        while self.pending and time.monotonic() < deadline:
            self.service(0.05)

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.buf += _DISCONNECT
            self._flush()
        except FastLinkError:
            pass
        if self.sock is not None:  # (a resilient link that lost it has closed it)
            self.sock.close()
        self.sock = None
        self.connected = False
