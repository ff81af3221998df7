"""The GB/T 26875.3 gateway: transmission devices over TCP in, contract MQTT out.

    device --TCP--> FrameReader --> Translator --> MQTT (QoS 1) --PUBACKs--> confirm

Each connection is served by one task that handles its frames in order. A
send-data frame (command 2) is confirmed (command 3, same serial number) only
after the broker has acknowledged every message made from it; when the
broker, the API (registry) or anything on the way fails, the frame is not
confirmed and the device sends it again. A frame that fails framing or the
checksum is never confirmed and is kept as a reject with its raw bytes; a
well-formed frame the platform cannot use (unregistered address, unknown type,
malformed data) is confirmed and kept as a reject, since resending it cannot
help.

Supervision: a transmission device is `online` (retained status, like an MQTT
device) from its first frame on a connection and at every heartbeat, and
`offline` when its last connection closes or stays silent for `idle_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from gateways.directory import Directory, DirectoryUnavailable, RegistrationRefused
from gateways.gb26875 import codec as c
from gateways.gb26875.mapping import (
    Message,
    Translator,
    Uitd,
    reject_message,
    status_message,
    valid_ids,
)
from gateways.mqtt import AckPublisher

log = logging.getLogger(__name__)

READ_SIZE: Final = 64 * 1024
DEFAULT_IDLE_S: Final = 180.0  # 3 x a 60 s heartbeat: then the device is offline
# A connection's frames are handled one at a time; the socket's own buffer is
# the backpressure (the device waits for confirms anyway).
BACKLOG: Final = 4096
WARN_EVERY_S: Final = 10.0
SHUTDOWN_GRACE_S: Final = 5.0


@dataclass
class Counters:
    connections: int = 0
    frames: int = 0
    confirmed: int = 0
    heartbeats: int = 0
    bad_frames: int = 0
    unconfirmed: int = 0  # not passed on (broker or API away): the device resends
    rejected: int = 0  # confirmed but kept as rejects (unknown device, type, data)


@dataclass(eq=False)  # identity: kept in a set
class _Conn:
    peer: str
    uitd: Uitd | None = None
    announce: bool = False  # publish `online` with the next confirmed frame
    unknown_reported: bool = False
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)


def now_ms() -> int:
    return int(time.time() * 1000)


class Gateway:
    def __init__(
        self,
        publisher: AckPublisher,
        directory: Directory,
        *,
        gateway_id: str = "gb26875",
        idle_s: float = DEFAULT_IDLE_S,
    ) -> None:
        self.publisher = publisher
        self.directory = directory
        self.gateway_id = gateway_id
        self.idle_s = idle_s
        self.translator = Translator(gateway_id)
        self.states: dict[str, int] = {}  # device id -> last confirmed status flags
        self.online: dict[str, int] = {}  # uitd id -> open connections that named it
        self.counters = Counters()
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0
        self._stopping = False

    async def serve(
        self,
        host: str,
        port: int,
        stop: asyncio.Event,
        on_ready: Callable[[str, int], None] | None = None,
    ) -> None:
        server = await asyncio.start_server(self._handle, host, port, backlog=BACKLOG)
        bound = server.sockets[0].getsockname()
        log.info("GB/T 26875.3 gateway listening on %s:%d", bound[0], bound[1])
        if on_ready is not None:
            on_ready(str(bound[0]), int(bound[1]))
        try:
            await stop.wait()
        finally:
            self._stopping = True
            server.close()
            for conn in list(self._conns):
                if conn.writer is not None:
                    conn.writer.close()
            # Handlers end on their own (a closed socket reads b""); what still
            # waits (on the broker, the API) after this is cancelled. A frame
            # cut off here was not confirmed: the device resends it.
            handlers = list(self._tasks)
            if handlers:
                _, late = await asyncio.wait(handlers, timeout=SHUTDOWN_GRACE_S)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE_S)

    # ---------------------------------------------------------- connection
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        conn = _Conn(peer, writer=writer)
        self._conns.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.counters.connections += 1
        frames = c.FrameReader()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_s)
                except TimeoutError:
                    log.info("%s silent for %.0f s (no heartbeat): closing", peer, self.idle_s)
                    break
                if not data:
                    break
                for item in frames.feed(data):
                    if isinstance(item, c.BadFrame):
                        await self._bad(item, conn)
                    else:
                        await self._frame(item, conn, writer)
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection lost (%s)", peer, exc)
        except asyncio.CancelledError:
            # Shutdown. Ending normally keeps asyncio's stream callback (3.11)
            # from logging the cancellation as an error for every connection.
            log.debug("%s: closed at shutdown", peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._conns.discard(conn)
            self.counters.connections -= 1
            writer.close()
            if conn.uitd is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._gone(conn.uitd)

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
        # Best effort: if the broker is away too, ingest's silence supervision
        # (3 x the uitd's interval_s) raises `offline` without it.
        await self._publish([status_message(uitd, online=False)])
        log.info("uitd %s offline (connection closed)", uitd.id)

    # -------------------------------------------------------------- frames
    async def _bad(self, bad: c.BadFrame, conn: _Conn) -> None:
        self.counters.bad_frames += 1
        source = None
        if len(bad.raw) >= 18 and bad.reason != "garbage":
            source = c.address_hex(bad.raw[12:18])
        detail = f"{bad.reason}: {bad.detail} (from {conn.peer})"
        log.warning("bad frame from %s: %s", conn.peer, detail)
        await self._publish(
            [
                reject_message(
                    self.gateway_id,
                    raw=bad.raw,
                    reason="bad_frame",
                    detail=detail,
                    at_ms=now_ms(),
                    source=source,
                    device=conn.uitd.id if conn.uitd else None,
                    peer=conn.peer,
                )
            ]
        )

    async def _frame(self, frame: c.Frame, conn: _Conn, writer: asyncio.StreamWriter) -> None:
        self.counters.frames += 1
        arrival = now_ms()
        if frame.command in (c.CMD_CONFIRM, c.CMD_REPLY, c.CMD_DENY):
            return  # answers to a centre's commands: this gateway sends none
        if frame.command != c.CMD_SEND:
            await self._publish(
                [self._reject(frame, conn, "unsupported", f"command {frame.command}", arrival)]
            )
            return
        try:
            uitd = await self.directory.lookup(frame.source_hex)
        except DirectoryUnavailable as exc:
            self._unconfirmed(f"registry unavailable: {exc}")
            return
        if uitd is None:
            await self._unknown(frame, conn, writer, arrival)
            return
        if conn.uitd is None or conn.uitd.id != uitd.id:
            if conn.uitd is not None:
                await self._gone(conn.uitd)
            conn.uitd = uitd
            self.online[uitd.id] = self.online.get(uitd.id, 0) + 1
            conn.announce = True
        states: dict[str, int] = {}
        messages: list[Message] = []
        if frame.is_heartbeat:
            self.counters.heartbeats += 1
            messages.append(status_message(uitd, online=True))
        else:
            try:
                adu = c.decode_adu(frame.adu)
            except c.AduError as exc:
                messages.append(self._reject(frame, conn, "bad_payload", str(exc), arrival, uitd))
            else:
                if not adu.known:
                    detail = f"application data type {adu.type} is not decoded by this gateway"
                    messages.append(self._reject(frame, conn, "unsupported", detail, arrival, uitd))
                else:
                    tr = self.translator.translate(frame, adu, uitd, self.states, arrival)
                    problem = valid_ids(tr)
                    try:
                        if problem is None:
                            await self.directory.ensure(list(tr.components.values()))
                    except DirectoryUnavailable as exc:
                        self._unconfirmed(f"registry unavailable: {exc}")
                        return
                    except RegistrationRefused as exc:
                        problem = str(exc)
                    if problem is not None:
                        messages.append(
                            self._reject(frame, conn, "bad_payload", problem, arrival, uitd)
                        )
                    else:
                        messages.extend(tr.messages)
                        states = tr.states
            if conn.announce:
                messages.insert(0, status_message(uitd, online=True))
        if not await self._publish(messages):
            self._unconfirmed("broker did not acknowledge")
            return
        conn.announce = False
        self.states.update(states)
        await self._confirm(frame, writer, uitd.utc_offset_min)

    async def _unknown(
        self, frame: c.Frame, conn: _Conn, writer: asyncio.StreamWriter, arrival: int
    ) -> None:
        """Confirmed (resending cannot help) and kept, so an admin sees the address;
        heartbeats are reported once per connection."""
        if frame.is_heartbeat and conn.unknown_reported:
            await self._confirm(frame, writer, c.DEFAULT_UTC_OFFSET_MIN)
            return
        detail = (
            f"source address {frame.source_hex} is not registered: register a device of kind "
            f"uitd with this address"
        )
        if not await self._publish([self._reject(frame, conn, "unknown_device", detail, arrival)]):
            self._unconfirmed("broker did not acknowledge")
            return
        conn.unknown_reported = True
        await self._confirm(frame, writer, c.DEFAULT_UTC_OFFSET_MIN)

    def _reject(
        self,
        frame: c.Frame,
        conn: _Conn,
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

    async def _confirm(self, frame: c.Frame, writer: asyncio.StreamWriter, offset: int) -> None:
        writer.write(c.confirm_for(frame, c.make_label(now_ms(), offset)))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        self.counters.confirmed += 1

    def _unconfirmed(self, why: str) -> None:
        self.counters.unconfirmed += 1
        mono = time.monotonic()
        if mono - self._last_warning >= WARN_EVERY_S:
            self._last_warning = mono
            log.warning("frame not confirmed (%s); the device will resend it", why)
