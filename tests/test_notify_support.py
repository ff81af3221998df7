"""Helpers of the notification tests: a real HTTP receiver, a real SMTP server
(aiosmtpd), a notifier on its own event loop, and alarm transitions written
through ingest's own write path (storage.ingest_store) or the API's queries."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from psycopg.rows import dict_row

from firesafe.settings import SmtpEndpoint
from notify.service import Notifier, Tunables
from storage import ingest_store
from storage.queries import alarms as alarm_q
from storage.queries.common import Scope
from tests.helpers import register

# Short retries and polls so tests finish quickly; the logic is the production one.
FAST = Tunables(
    lease_s=20.0,
    http_timeout_s=5.0,
    smtp_timeout_s=5.0,
    backoff_base_s=0.2,
    backoff_cap_s=1.0,
    max_poll_s=0.3,
    drain_timeout_s=5.0,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- HTTP receiver ------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server collecting POSTs. `respond(path, n)` gives the status of the
    n-th request (from 0) to a path; `hold` makes requests wait until released."""

    url: str
    requests: list[Received] = field(default_factory=list)
    respond: Callable[[str, int], int] = lambda path, n: 200
    hold: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                n = sum(1 for r in receiver.requests if r.path == self.path)
                receiver.requests.append(
                    Received(self.path, dict(self.headers.items()), body, time.monotonic())
                )
            if receiver.hold is not None and not receiver.hold.wait(30):
                return
            status = receiver.respond(self.path, n)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # several notifiers' connections at once (default 5)
        daemon_threads = True

    server = Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.shutdown()
        server.server_close()


# --- SMTP server --------------------------------------------------------------------


@dataclass
class Mailbox:
    endpoint: SmtpEndpoint
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, to: str | None = None) -> list[EmailMessage]:
        with self.lock:
            return [m for _, rcpt, m in self.messages if to is None or to in rcpt]


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    port = free_port()
    box = Mailbox(SmtpEndpoint(host="127.0.0.1", port=port))

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            msg = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(msg, EmailMessage)
            with box.lock:
                box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# --- notifier in a thread -----------------------------------------------------------


class NotifierThread:
    def __init__(
        self, dsn: str, *, smtp: SmtpEndpoint | None = None, tunables: Tunables = FAST
    ) -> None:
        self.notifier = Notifier(
            dsn, smtp=smtp, smtp_from="firesafe@test.invalid", tunables=tunables
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="notifier", daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = asyncio.create_task(self.notifier.run(self._stop))
            ready = asyncio.ensure_future(self.notifier.ready.wait())
            await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            self._ready.set()
            await task

        try:
            asyncio.run(go())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> NotifierThread:
        self._thread.start()
        assert self._ready.wait(30), "notifier did not start"
        if self._error:
            raise self._error
        return self

    def freeze(self, seconds: float) -> None:
        """Hold the notifier's event loop (what SIGSTOP does to the process): its
        database sessions stay open, it does nothing, its heartbeat included."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "notifier did not stop"
        if self._error:
            raise self._error


@contextmanager
def running_notifier(
    dsn: str, *, smtp: SmtpEndpoint | None = None, tunables: Tunables = FAST
) -> Iterator[NotifierThread]:
    thread = NotifierThread(dsn, smtp=smtp, tunables=tunables).start()
    try:
        yield thread
    finally:
        thread.stop()


# --- configuration and alarm transitions ---------------------------------------------


def add_target(dsn: str, target_id: str, **fields: Any) -> None:
    """A target as POST /api/v1/notifications/targets stores it."""
    row = {"kind": "webhook", "language": "en", **fields}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notify_targets (id, kind, url, address, secret, language, template, "
            "content_type, owner_sites) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                target_id,
                row["kind"],
                row.get("url"),
                row.get("address"),
                row.get("secret"),
                row["language"],
                row.get("template"),
                row.get("content_type"),
                row.get("owner_sites"),  # a manager's: its sites
            ),
        )


def add_rule(
    dsn: str,
    rule_id: str,
    *,
    types: list[str],
    targets: list[str],
    sites: list[str] | None = None,
    verdicts: list[str] | None = None,
    escalate_after_s: int | None = None,
    escalate_to: list[str] | None = None,
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notify_rules (id, sites, types, verdicts, escalate_after_s) "
            "VALUES (%s, %s, %s, %s, %s)",
            (rule_id, sites, types, verdicts or ["confirmed"], escalate_after_s),
        )
        for role, ids in (("notify", targets), ("escalate", escalate_to or [])):
            for t in ids:
                conn.execute(
                    "INSERT INTO notify_rule_targets (rule_id, target_id, role) "
                    "VALUES (%s, %s, %s)",
                    (rule_id, t, role),
                )


def call_point(dsn: str, device_id: str, site: str, zone: str = "Z1") -> None:
    register(
        dsn,
        [
            {
                "id": device_id,
                "site": site,
                "building": "B1",
                "floor": "2",
                "zone": zone,
                "kind": "mcp",
            }
        ],
    )


def write_alarms(dsn: str, *writes: ingest_store.AlarmWrite) -> list[str]:
    """Alarm transitions in one transaction, through ingest's write path."""

    async def go() -> list[str]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
            applied = await ingest_store.apply_alarm_writes(conn, list(writes))
        return [a.alarm_id for a in applied]

    return asyncio.run(go())


def transition(
    device_id: str,
    site: str,
    *,
    action: str = "open",
    verdict: str = "confirmed",
    type: str = "fire",
    reason: str = "call_point",
    zone: str = "Z1",
    detail: Mapping[str, Any] | None = None,
) -> ingest_store.AlarmWrite:
    return ingest_store.AlarmWrite(
        device_id=device_id,
        site=site,
        building="B1",
        floor="2",
        zone=zone,
        alarm_type=type,
        action=action,  # type: ignore[arg-type]
        verdict=verdict,
        reason=reason,
        at_ms=int(time.time() * 1000),
        detail=dict(detail or {}),
    )


def person(dsn: str, alarm_id: str, action: str, actor: str = "duty-officer") -> None:
    """What POST /api/v1/alarms/{id}/ack or /clear does."""

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=dict_row
        ) as conn:
            fn = alarm_q.acknowledge if action == "ack" else alarm_q.clear
            await fn(conn, scope=Scope.everything(), alarm_id=alarm_id, actor=actor, note=None)

    asyncio.run(go())


def deliveries(dsn: str, alarm_id: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM notifications WHERE %(a)s::text IS NULL OR alarm_id = %(a)s "
            "ORDER BY seq",
            {"a": alarm_id},
        ).fetchall()
