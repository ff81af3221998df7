"""The GB/T 26875.3 gateway: transmission devices over TCP in, contract MQTT out.

    device --TCP--> FrameReader --> Translator --> MQTT (QoS 1) --PUBACKs--> confirm

Each connection handles its frames in arrival order. A send-data frame
(command 2) is confirmed (command 3, same serial number) only after the broker
has acknowledged every message made from it; when the broker, the API
(registry) or anything on the way fails, the frame is not confirmed and the
device sends it again. A frame that fails the checksum is never confirmed and
is kept as a reject with its raw bytes; a well-formed frame the platform
cannot use (unregistered address, unknown type, malformed data) is confirmed
and kept as a reject, since resending it cannot help.

Bad input costs a handful of rejects, never one per byte, and none is lost
silently: a contiguous run of bytes outside any frame is one reject (its
length, its first 4 KiB), made when the next frame starts, when the
connection closes, or every JUNK_REPORT_S while the run goes on. Past
BAD_REJECTS_PER_WINDOW rejects in BAD_WINDOW_S, a connection's further bad
input in that window is summed up in one reject saying how many items and
bytes it covers. Rejects count towards the connection's unacknowledged
messages like frames do: a connection flooding garbage stops being read
while its rejects wait for the broker. A reject the broker did not take
(away) is counted and logged, at most one line per 10 s.

The common frame (a registered device, points already registered) is handled
without a coroutine: decoded, translated and published in `data_received`,
confirmed from the PUBACKs' callback. Anything that needs the registry API
(an unknown address, a stale cache, new points) takes the slow path, a task,
and the connection's later frames wait behind it, so order is kept.

Supervision: a transmission device is `online` (retained status, like an MQTT
device) from its first frame on a connection and at every heartbeat, and
`offline` when its last connection closes (and no other opens within
OFFLINE_GRACE_S) or sends no frame for `idle_s`.

Connections are a bounded resource (the protocol has no authentication): one
that has not spoken for a registered transmission device within HELLO_S is
closed, one that sends no well-formed frame for `idle_s` is closed (bytes
trickled one at a time keep nothing open), and at `max_connections` (kept
under the process's file limit, so accepting never fails) a new connection
evicts the oldest one not yet speaking for a device, or is refused when every
open connection is. Devices already served keep being served.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import resource
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Final

from firesafe.embedded import EmbeddedServiceError
from firesafe.throttle import ThrottledWarning
from gateways.directory import Directory, DirectoryUnavailable, RegistrationRefused
from gateways.gb26875 import codec as c
from gateways.gb26875.mapping import (
    Component,
    Message,
    Translator,
    Uitd,
    alarm_summary,
    reject_message,
    status_message,
    valid_ids,
)
from gateways.mqtt import AckPublisher

log = logging.getLogger(__name__)

DEFAULT_IDLE_S: Final = 180.0  # 3 x a 60 s heartbeat: then the device is offline
# The listen queue, and as many connections as the event loop accepts in one
# go before any is seen (and could be evicted) by the gateway.
BACKLOG: Final = 256
SHUTDOWN_GRACE_S: Final = 5.0
# Frames of one connection waiting for their PUBACKs before it stops reading
# (a device normally waits for each confirm; this bounds one that does not).
MAX_UNCONFIRMED_PER_CONNECTION: Final = 64
# Frames of one connection queued behind a slow one (the registry API) before
# it stops reading: memory stays bounded whatever a device sends.
MAX_QUEUED_PER_CONNECTION: Final = 256
# Bad input: a run of junk still going on is reported this often; a connection
# gets at most BAD_REJECTS_PER_WINDOW rejects of bad input per BAD_WINDOW_S,
# the rest of the window's bad input summed up in one more.
JUNK_REPORT_S: Final = 10.0
# A connection must speak for a registered transmission device this soon (a
# device sends its data or a heartbeat as soon as it connects).
HELLO_S: Final = 30.0
# A transmission device whose last connection closed is `offline` unless it
# connects again within this.
OFFLINE_GRACE_S: Final = 5.0
# Bytes a connection may send without a well-formed frame among them: a
# device's bytes are frames. Beyond, it is closed at once (its bad input
# kept): a flood of junk, even behind a registered device's heartbeat, costs
# the gateway this much per connection.
JUNK_BEFORE_FRAME_BYTES: Final = 64 * 1024
# Points (panels and their components) registered for one transmission device at
# most: GB 50116-2013 3.1.5 allows 3,200 points per fire alarm controller, and a
# transmission device serves a few controllers. Beyond, a frame naming new
# points is confirmed and kept as a reject: the protocol has no authentication,
# and an address sent by anyone must not grow the registry without bound.
MAX_POINTS_PER_UITD: Final = 8 * 3_200
# Open connections at most, and never closer than FD_RESERVE to the file limit:
# a burst of BACKLOG accepted at once, plus the process's own files, always
# fits, so accepting never fails for want of a descriptor.
DEFAULT_MAX_CONNECTIONS: Final = 10_000
# Open connections speaking for one transmission device at most: a device that
# reconnects leaves its old connection half open a while, but an address is
# sent in clear by anyone, and connections all naming one registered address
# took every slot of the gateway from every other panel. Beyond, the device's
# oldest connection is closed (a frame it had in flight is resent).
MAX_CONNECTIONS_PER_UITD: Final = 2
FD_RESERVE: Final = BACKLOG + 128
BAD_WINDOW_S: Final = 10.0
BAD_REJECTS_PER_WINDOW: Final = 10


@dataclass
class Counters:
    connections: int = 0
    frames: int = 0
    confirmed: int = 0
    heartbeats: int = 0
    bad_frames: int = 0  # bad input items: a frame with a bad checksum, a run of junk
    bad_bytes: int = 0  # ... and the bytes they cover
    bad_summarised: int = 0  # items over a connection's limit, kept in a summary reject
    rejects_lost: int = 0  # rejects the broker did not acknowledge (away): logged
    unconfirmed: int = 0  # not passed on (broker or API away): the device resends
    rejected: int = 0  # confirmed but kept as rejects (unknown device, type, data)


def now_ms() -> int:
    return int(time.time() * 1000)


class CannotListen(EmbeddedServiceError):
    """The gateway's address cannot be listened on (one line, not a traceback)."""


def raise_file_limit(want: int = DEFAULT_MAX_CONNECTIONS + 2 * FD_RESERVE) -> int:
    """Lift the soft open-file limit towards `want` (within the hard limit):
    a stock 1,024 would hold fewer devices than the connection limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return _file_limit()


def _file_limit() -> int:
    """The process's open-file limit (soft)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class BadSummary:
    """A connection's bad input beyond its reject limit: what one reject sums up."""

    def __init__(self) -> None:
        self.items = 0
        self.size = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self.head = bytearray()  # the first JUNK_KEEP bytes of the items, in order

    def add(self, bad: c.BadFrame) -> None:
        self.items += 1
        self.size += bad.length
        self.reasons[bad.reason] += 1
        room = c.JUNK_KEEP - len(self.head)
        if room > 0:
            self.head += bad.raw[:room]


class Connection(asyncio.Protocol):
    """One transmission device's TCP connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader = c.FrameReader()
        self.queue: collections.deque[c.Frame | c.BadFrame] = collections.deque()
        self.slow: asyncio.Task[None] | None = None  # the slow path in progress
        self.inflight = 0  # frames published, not yet acknowledged
        self.paused = False
        self.uitd: Uitd | None = None
        self.announce = False  # publish `online` with the next frame
        self.unknown_reported = False
        self.opened = self.last_frame = time.monotonic()  # last_frame: well-formed
        self.received = 0  # bytes since the last well-formed frame
        self.closed = False
        self.junk_since: float | None = None  # when the open run of junk began
        self.bad_window = -float("inf")  # monotonic start of the bad-input window
        self.bad_in_window = 0  # bad input items in it
        self.bad_summary: BadSummary | None = None  # those beyond the limit

    # --- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.gw._opened(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        items = self.reader.feed(data)
        if any(isinstance(item, c.Frame) for item in items):
            self.last_frame = now
            self.received = 0
        else:
            self.received += len(data)
            if self.received > JUNK_BEFORE_FRAME_BYTES:
                self.gw._junk_only(self.peer)
                self.close()  # its bad input is reported as the connection goes
        if any(isinstance(item, c.BadFrame) and item.reason == "garbage" for item in items):
            self.junk_since = None  # that run ended; any open one began in this read
        self.queue.extend(items)
        self.report_junk(now)
        self.pump()
        if len(self.queue) >= MAX_QUEUED_PER_CONNECTION and self.transport is not None:
            self.paused = True  # frames waiting behind a slow one: stop reading
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            log.info("%s: connection lost (%s)", self.peer, exc)
        # Frames not handled yet are not confirmed (the device resends them); bad
        # input is reported still, the bytes left in the reader with it.
        rest = self.reader.finish()
        bad = [item for item in self.queue if isinstance(item, c.BadFrame)]
        self.queue.clear()
        for item in [*bad, *([rest] if rest is not None else [])]:
            self.gw._bad(item, self)
        self.gw._report_bad(self, force=True)
        self.gw._closed(self)

    def report_junk(self, now: float) -> None:
        """A run of junk going on for JUNK_REPORT_S is reported so far."""
        if not self.reader.junk_pending:
            self.junk_since = None
        elif self.junk_since is None:
            self.junk_since = now
        elif now - self.junk_since >= JUNK_REPORT_S:
            part = self.reader.flush_junk()
            if part is not None:
                self.queue.append(part)
            self.junk_since = None

    # --- frames in order --------------------------------------------------------
    def pump(self) -> None:
        while self.queue and self.slow is None and not self.closed:
            item = self.queue.popleft()
            slow = self.gw._handle(item, self)
            if slow is not None:
                self.slow = asyncio.get_running_loop().create_task(self._run_slow(slow))

    async def _run_slow(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except (ConnectionError, OSError) as exc:
            log.info("%s: %s", self.peer, exc)
            self.close()
        finally:
            self.slow = None
        self.pump()
        self.publishing(0)  # resume reading if the queue drained

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (the connection limit)."""
        if self.transport is not None:
            self.transport.abort()

    def publishing(self, delta: int) -> None:
        """Backpressure: stop reading a device with too many unacknowledged frames."""
        self.inflight += delta
        if self.transport is None or self.closed:
            return
        if not self.paused and self.inflight >= MAX_UNCONFIRMED_PER_CONNECTION:
            self.paused = True
            self.transport.pause_reading()
        elif (
            self.paused
            and self.inflight < MAX_UNCONFIRMED_PER_CONNECTION // 2
            and len(self.queue) < MAX_QUEUED_PER_CONNECTION // 2
        ):
            self.paused = False
            self.transport.resume_reading()


class Gateway:
    def __init__(
        self,
        publisher: AckPublisher,
        directory: Directory,
        *,
        gateway_id: str = "gb26875",
        idle_s: float = DEFAULT_IDLE_S,
        hello_s: float = HELLO_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_points: int = MAX_POINTS_PER_UITD,
    ) -> None:
        self.publisher = publisher
        self.directory = directory
        self.gateway_id = gateway_id
        self.idle_s = idle_s
        self.hello_s = hello_s
        self.max_points = max_points
        self._held: dict[str, set[str]] = {}  # uitd id -> new points being registered
        self.max_connections = max(1, min(max_connections, _file_limit() - FD_RESERVE))
        self.translator = Translator(gateway_id)
        self.states: dict[str, int] = {}  # device id -> last acknowledged status flags
        self.online: dict[str, int] = {}  # uitd id -> open connections that named it
        self._namings: dict[str, int] = {}  # uitd id -> connections that named it, ever
        self.counters = Counters()
        self._conns: set[Connection] = set()
        # Open connections not yet speaking for a device, oldest first (evicted
        # first at the connection limit).
        self._unnamed: dict[Connection, None] = {}
        # Open connections speaking for each uitd, oldest first.
        self._speaking: dict[str, dict[Connection, None]] = {}
        # The uitds with more than one (their victims at the connection limit,
        # found without a scan of every device under a flood).
        self._doubled: dict[str, None] = {}
        self._not_confirmed = ThrottledWarning(
            log, "frame(s) not confirmed, the device will resend (broker or API away)"
        )
        self._bad_input = ThrottledWarning(log, "bad input")
        self._crowded = ThrottledWarning(
            log, "connection(s) closed at the connection limit (idle or refused)"
        )
        self._accept_failed = ThrottledWarning(log, "connection(s) not accepted (no resources)")
        self._nameless = ThrottledWarning(
            log,
            f"connection(s) closed: no registered transmission device named within {hello_s:g} s",
        )
        self._junk_only = ThrottledWarning(
            log,
            f"connection(s) closed: {JUNK_BEFORE_FRAME_BYTES} bytes without a well-formed frame",
        )
        self._rejects_lost = ThrottledWarning(
            log, "reject(s) not passed on (broker away or not acknowledging)"
        )
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    async def serve(
        self,
        host: str,
        port: int,
        stop: asyncio.Event,
        on_ready: Callable[[str, int], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        try:
            server = await loop.create_server(lambda: Connection(self), host, port, backlog=BACKLOG)
        except OSError as exc:  # a taken port, an address not of this machine
            loop.set_exception_handler(previous_handler)
            raise CannotListen(
                f"the GB/T 26875.3 gateway cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        bound = server.sockets[0].getsockname()
        log.info("GB/T 26875.3 gateway listening on %s:%d", bound[0], bound[1])
        if on_ready is not None:
            on_ready(str(bound[0]), int(bound[1]))
        sweeper = asyncio.create_task(self._sweep_idle(), name="gb26875-idle")
        try:
            await stop.wait()
        finally:
            self._stopping = True
            sweeper.cancel()
            server.close()
            slow = [conn.slow for conn in self._conns if conn.slow is not None]
            for conn in list(self._conns):
                conn.close()
            # Work on the way (the broker, the API) gets a moment; a frame cut off
            # here was not confirmed: the device resends it.
            pending = slow + list(self._background)
            if pending:
                _, late = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE_S)
            loop.set_exception_handler(previous_handler)

    # --------------------------------------------------------- connections
    def _opened(self, conn: Connection) -> None:
        if len(self._conns) >= self.max_connections:
            # Make room: the oldest connection not yet speaking for a device goes,
            # else a device's older second connection; when every open one is a
            # device's only one, the newcomer is refused (devices keep service).
            self._crowded(f"{len(self._conns)} open, limit {self.max_connections}")
            victim = next(iter(self._unnamed), None)
            if victim is None:
                doubled = next(iter(self._doubled), None)
                victim = next(iter(self._speaking[doubled])) if doubled is not None else None
            if victim is None:
                if conn.transport is not None:
                    conn.transport.abort()
                return
            # Gone from the count at once: the next newcomer of the same burst
            # (its connection_lost comes a loop turn later) takes the next one.
            self._forget(victim)
            if victim.uitd is not None:  # (its device still has another connection)
                self._background_task(self._gone(victim.uitd))
            victim.abort()
        self._conns.add(conn)
        self._unnamed[conn] = None
        self.counters.connections += 1

    def _forget(self, conn: Connection) -> None:
        self._conns.discard(conn)
        self._unnamed.pop(conn, None)
        self._stops_speaking(conn)
        self.counters.connections -= 1

    def _stops_speaking(self, conn: Connection) -> None:
        if conn.uitd is None:
            return
        speaking = self._speaking.get(conn.uitd.id)
        if speaking is not None:
            speaking.pop(conn, None)
            if len(speaking) < 2:
                self._doubled.pop(conn.uitd.id, None)
            if not speaking:
                del self._speaking[conn.uitd.id]

    def _closed(self, conn: Connection) -> None:
        if conn not in self._conns:
            return  # refused or evicted at the limit: counted out already
        self._forget(conn)
        if conn.uitd is not None:
            self._background_task(self._gone(conn.uitd))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio logs a failed accept once per attempt and per retry (about
        180,000 lines in 40 s under a connection flood, before the limits below
        kept descriptors free): such failures are summed up, the rest logged."""
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            self._accept_failed(str(context.get("exception")))
        else:
            loop.default_exception_handler(context)

    async def _sweep_idle(self) -> None:
        """Close connections with no frame for idle_s (missed heartbeats), and
        those not speaking for a registered device within hello_s."""
        while True:
            await asyncio.sleep(min(self.idle_s / 4, self.hello_s / 4, 5.0))
            now = time.monotonic()
            limit = now - self.idle_s
            for conn in list(self._conns):
                if conn.last_frame < limit:
                    log.info(
                        "%s no frame for %.0f s (no heartbeat): closing", conn.peer, self.idle_s
                    )
                    conn.close()
                    continue
                if conn.uitd is None and now - conn.opened >= self.hello_s and conn.slow is None:
                    self._nameless(conn.peer)  # a flood of them is a line per 10 s
                    conn.close()
                    continue
                # Bad input held back (an open run, a summary) is reported in time
                # even when nothing more arrives.
                conn.report_junk(now)
                conn.pump()
                self._report_bad(conn)

    def _background_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _gone(self, uitd: Uitd) -> None:
        left = self.online.get(uitd.id, 1) - 1
        if left > 0:
            self.online[uitd.id] = left
            return
        self.online.pop(uitd.id, None)
        if self._stopping:
            # The gateway stops, not the device: no `offline` for a restart. If no
            # gateway comes back, ingest's silence supervision raises it.
            return
        # A device that reconnects at once (some open a connection per message)
        # is not offline: one `offline` alarm per closed connection was a flood.
        named = self._namings.get(uitd.id, 0)
        await asyncio.sleep(OFFLINE_GRACE_S)
        if self._stopping or self.online.get(uitd.id, 0) or self._namings.get(uitd.id) != named:
            return  # (connected again meanwhile, even if that one has closed too)
        # Best effort: if the broker is away too, ingest's silence supervision
        # (3 x the uitd's interval_s) raises `offline` without it.
        await self._publish([status_message(uitd, online=False)])
        log.info("uitd %s offline (connection closed)", uitd.id)

    def _named(self, conn: Connection, uitd: Uitd) -> None:
        """The connection speaks for this uitd (its first frame, or another device)."""
        if conn.uitd is not None and conn.uitd.id == uitd.id:
            return
        if conn.uitd is not None:
            self._stops_speaking(conn)
            self._background_task(self._gone(conn.uitd))
        conn.uitd = uitd
        self._unnamed.pop(conn, None)
        speaking = self._speaking.setdefault(uitd.id, {})
        speaking[conn] = None
        if len(speaking) > MAX_CONNECTIONS_PER_UITD:
            oldest = next(iter(speaking))
            del speaking[oldest]  # at once: another naming it in this loop turn
            self._crowded(f"more than {MAX_CONNECTIONS_PER_UITD} open for uitd {uitd.id}")
            oldest.abort()
        if len(speaking) > 1:
            self._doubled[uitd.id] = None
        self.online[uitd.id] = self.online.get(uitd.id, 0) + 1
        self._namings[uitd.id] = self._namings.get(uitd.id, 0) + 1
        conn.announce = True

    # -------------------------------------------------------------- frames
    def _handle(
        self, item: c.Frame | c.BadFrame, conn: Connection
    ) -> Coroutine[Any, Any, None] | None:
        """Handle one item now; or return the coroutine of its slow path."""
        if isinstance(item, c.BadFrame):
            self._bad(item, conn)
            return None
        frame = item
        self.counters.frames += 1
        if frame.command in (c.CMD_CONFIRM, c.CMD_REPLY, c.CMD_DENY):
            return None  # answers to a centre's commands: this gateway sends none
        arrival = now_ms()
        if frame.command != c.CMD_SEND:
            # A control (1) or a request (4) sent to the centre: this gateway takes
            # neither, so it denies it (6), which stops the resending, and keeps it.
            reject = self._reject(frame, conn, "unsupported", f"command {frame.command}", arrival)
            self._send_and_forget([reject], conn)
            uitd = self.directory.cached(frame.source_hex)
            tz = uitd.clock if uitd is not None else c.DEFAULT_UTC_OFFSET_MIN
            conn.write(c.answer_for(frame, c.make_label(now_ms(), tz), c.CMD_DENY))
            return None
        uitd = self.directory.cached(frame.source_hex)
        if uitd is None or uitd.ready_ms > arrival:
            return self._slow(frame, conn, arrival)
        built = self._build(frame, conn, uitd, arrival)
        if built is None:
            return self._slow(frame, conn, arrival)
        messages, states = built
        self._named(conn, uitd)
        self._pass_on(frame, conn, uitd, messages, states)
        return None

    def _build(
        self, frame: c.Frame, conn: Connection, uitd: Uitd, arrival: int
    ) -> tuple[list[Message], dict[str, int]] | None:
        """The frame's messages and the states to remember once acknowledged; None
        when its points are not all known to be registered (the slow path)."""
        if frame.is_heartbeat:
            self.counters.heartbeats += 1
            return [status_message(uitd, online=True)], {}
        try:
            adu = c.decode_adu(frame.adu)
        except c.AduError as exc:
            return [self._reject(frame, conn, "bad_payload", str(exc), arrival, uitd)], {}
        if not adu.known:
            detail = f"application data type {adu.type} is not decoded by this gateway"
            return [self._reject(frame, conn, "unsupported", detail, arrival, uitd)], {}
        tr = self.translator.translate(frame, adu, uitd, self.states, arrival)
        problem = valid_ids(tr)
        if problem is not None:
            problem = "; ".join(p for p in (_fires_in(frame, ", NOT RAISED"), problem) if p)
            return [self._reject(frame, conn, "bad_payload", problem, arrival, uitd)], {}
        if not self.directory.registered(list(tr.components.values())):
            return None
        return self._with_problem(tr.messages, adu, frame, conn, arrival, uitd), tr.states

    def _with_problem(
        self,
        messages: list[Message],
        adu: c.Adu,
        frame: c.Frame,
        conn: Connection,
        arrival: int,
        uitd: Uitd,
    ) -> list[Message]:
        """A frame whose length does not match its count: its complete objects'
        messages and a `bad_payload` reject with the whole frame."""
        if adu.problem is None:
            return messages
        # What it carries first (the detail is kept to 500 characters).
        summary = alarm_summary(adu.objects)
        detail = f"{summary}, raised; {adu.problem}" if summary else adu.problem
        return [*messages, self._reject(frame, conn, "bad_payload", detail, arrival, uitd)]

    async def _slow(self, frame: c.Frame, conn: Connection, arrival: int) -> None:
        """A frame that needs the registry API first."""
        try:
            uitd = await self.directory.lookup(frame.source_hex)
        except DirectoryUnavailable as exc:
            self._unconfirmed(f"registry unavailable: {exc}")
            return
        if uitd is None:
            await self._unknown(frame, conn, arrival)
            return
        if uitd.ready_ms > now_ms():  # registered a moment ago: let ingest subscribe first
            await asyncio.sleep((uitd.ready_ms - now_ms()) / 1000)
        built = self._build(frame, conn, uitd, arrival)
        if built is None:
            assert frame.adu
            adu = c.decode_adu(frame.adu)
            tr = self.translator.translate(frame, adu, uitd, self.states, arrival)
            components = list(tr.components.values())
            held: set[str] = set()
            try:
                crowded, held = await self._hold_points(uitd, components)
                if crowded is None:
                    await self.directory.ensure(components)
            except DirectoryUnavailable as exc:
                self._unconfirmed(f"registry unavailable: {exc}")
                return
            except RegistrationRefused as exc:
                crowded = str(exc)
            finally:
                self._held.get(uitd.id, set()).difference_update(held)
            if crowded is not None:
                crowded = "; ".join(p for p in (_fires_in(frame, ", NOT RAISED"), crowded) if p)
                built = [self._reject(frame, conn, "bad_payload", crowded, arrival, uitd)], {}
            else:
                built = self._with_problem(tr.messages, adu, frame, conn, arrival, uitd), tr.states
        self._named(conn, uitd)
        messages, states = built
        await self._pass_on(frame, conn, uitd, messages, states)

    async def _hold_points(
        self, uitd: Uitd, components: list[Component]
    ) -> tuple[str | None, set[str]]:
        """Hold the uitd's new points against its limit while they are registered
        (frames of other connections registering at the same time count too):
        (None, the ids held) or (why not, nothing held)."""
        new = {c.id for c in components if not self.directory.registered([c])}
        if not new:
            return None, set()
        known = await self.directory.known_ids(uitd.site, f"{uitd.id}_")
        held = self._held.setdefault(uitd.id, set())
        mine = new - held - known
        total = len(known | held | new)
        if total <= self.max_points:
            held |= mine
            return None, mine
        have = len(known | held)
        return (
            f"transmission device {uitd.id} has {have} registered point(s); {len(new)} more "
            f"would pass the limit of {self.max_points} (GB 50116: 3,200 per controller)"
        ), set()

    def _pass_on(
        self,
        frame: c.Frame,
        conn: Connection,
        uitd: Uitd,
        messages: list[Message],
        states: dict[str, int],
    ) -> asyncio.Future[bool]:
        """Publish; confirm once the broker acknowledged all of it."""
        if conn.announce and not frame.is_heartbeat:
            # (A heartbeat's own message is that `online`: not twice.)
            messages = [status_message(uitd, online=True), *messages]
        conn.announce = False
        future = self.publisher.publish_nowait([(m.topic, m.payload, m.retain) for m in messages])
        conn.publishing(+1)

        def acked(done: asyncio.Future[bool]) -> None:
            conn.publishing(-1)
            if done.cancelled() or not done.result():
                conn.announce = conn.announce or conn.uitd is uitd
                self._unconfirmed("broker did not acknowledge")
                return
            self.states.update(states)
            self._confirm(frame, conn, uitd.clock)

        future.add_done_callback(acked)
        return future

    async def _unknown(self, frame: c.Frame, conn: Connection, arrival: int) -> None:
        """Confirmed (resending cannot help) and kept, so an admin sees the address;
        heartbeats are reported once per connection."""
        if frame.is_heartbeat and conn.unknown_reported:
            self._confirm(frame, conn, c.DEFAULT_UTC_OFFSET_MIN)
            return
        detail = (
            f"source address {frame.source_hex} is not registered: register a device of kind "
            "uitd with this address"
        )
        carried = _fires_in(frame)
        if carried:
            detail += f"; {carried}"
        if not await self._publish([self._reject(frame, conn, "unknown_device", detail, arrival)]):
            self._unconfirmed("broker did not acknowledge")
            return
        conn.unknown_reported = True
        self._confirm(frame, conn, c.DEFAULT_UTC_OFFSET_MIN)

    def _bad(self, bad: c.BadFrame, conn: Connection) -> None:
        self.counters.bad_frames += 1
        self.counters.bad_bytes += bad.length
        self._report_bad(conn)
        conn.bad_in_window += 1
        if conn.bad_in_window > BAD_REJECTS_PER_WINDOW:
            if conn.bad_summary is None:
                conn.bad_summary = BadSummary()
            conn.bad_summary.add(bad)
            self.counters.bad_summarised += 1
            return
        source = None
        if len(bad.raw) >= 18 and bad.reason == "bad_checksum":
            source = c.address_hex(bad.raw[12:18])
        detail = f"{bad.reason}: {bad.detail} (from {conn.peer})"
        self._bad_input(detail)
        reject = reject_message(
            self.gateway_id,
            raw=bad.raw,
            reason="bad_frame",
            detail=detail,
            at_ms=now_ms(),
            source=source,
            device=conn.uitd.id if conn.uitd else None,
            peer=conn.peer,
            size=bad.length,
        )
        self._send_and_forget([reject], conn)

    def _report_bad(self, conn: Connection, force: bool = False) -> None:
        """At the end of a connection's bad-input window (or of the connection):
        the summary of what went over its limit, then a new window."""
        now = time.monotonic()
        if not force and now - conn.bad_window < BAD_WINDOW_S:
            return
        summary, conn.bad_summary = conn.bad_summary, None
        conn.bad_window, conn.bad_in_window = now, 0
        if summary is None:
            return
        kinds = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.reasons.items()))
        detail = (
            f"summary: {summary.items} more bad input item(s) ({kinds}), {summary.size} "
            f"byte(s) in all, over the limit of {BAD_REJECTS_PER_WINDOW} rejects per "
            f"{BAD_WINDOW_S:.0f} s of one connection; first {len(summary.head)} bytes kept "
            f"(from {conn.peer})"
        )
        self._bad_input(detail)
        reject = reject_message(
            self.gateway_id,
            raw=bytes(summary.head),
            reason="bad_frame",
            detail=detail,
            at_ms=now_ms(),
            device=conn.uitd.id if conn.uitd else None,
            peer=conn.peer,
            size=summary.size,
        )
        self._send_and_forget([reject], conn)

    def _send_and_forget(self, messages: list[Message], conn: Connection) -> None:
        """Rejects that answer nothing: published at QoS 1, counted as the
        connection's unacknowledged messages (it stops being read with too
        many); a failure is counted and logged (throttled)."""
        future = self.publisher.publish_nowait([(m.topic, m.payload, m.retain) for m in messages])
        conn.publishing(+1)

        def done(f: asyncio.Future[bool]) -> None:
            conn.publishing(-1)
            if f.cancelled() or not f.result():
                self.counters.rejects_lost += len(messages)
                self._rejects_lost(f"{len(messages)} from {conn.peer}", len(messages))

        future.add_done_callback(done)

    def _reject(
        self,
        frame: c.Frame,
        conn: Connection,
        reason: str,
        detail: str,
        arrival: int,
        uitd: Uitd | None = None,
    ) -> Message:
        self.counters.rejected += 1
        return reject_message(
            self.gateway_id,
            raw=frame.raw,
            reason=reason,
            detail=f"{detail} (serial {frame.serial}, from {conn.peer})",
            at_ms=arrival,
            source=frame.source_hex,
            device=uitd.id if uitd else None,
            peer=conn.peer,
        )

    async def _publish(self, messages: list[Message]) -> bool:
        return await self.publisher.publish_all([(m.topic, m.payload, m.retain) for m in messages])

    def _confirm(self, frame: c.Frame, conn: Connection, clock: int | tzinfo) -> None:
        conn.write(c.confirm_for(frame, c.make_label(now_ms(), clock)))
        self.counters.confirmed += 1

    def _unconfirmed(self, why: str) -> None:
        self.counters.unconfirmed += 1
        self._not_confirmed(why)


def _fires_in(frame: c.Frame, what_became: str = "") -> str:
    """`it carries FIRE ALARMS: ...` (and manual alarms, faults), with what became
    of them, for a frame whose reject must not read like a heartbeat's (an
    unregistered device, points refused), and what an object cut short before
    its status may hide; '' when it carries none."""
    try:
        adu = c.decode_adu(frame.adu) if frame.adu else None
    except c.AduError:
        return ""
    if adu is None:
        return ""
    summary = alarm_summary(adu.objects)
    parts = [f"{summary}{what_became}" if summary else "", adu.unreadable or ""]
    return "; ".join(p for p in parts if p)
