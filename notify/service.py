"""The notifier: claims outbox rows, delivers webhooks and e-mail, retries, escalates.

Several notifiers may run against one database. Rows are claimed with
`FOR UPDATE SKIP LOCKED` under a short lease that the notifier renews (a
heartbeat) while the attempt is under way; each notifier holds a
session-level advisory lock whose key it writes on its claims, so the claims
of a notifier that died (SIGKILL, lost host) return as soon as its database
session is gone, and those of one that stopped without its session ending
(SIGSTOP, a paused VM, a hung event loop) when their lease runs out, within
`lease_s`: a slow receiver keeps its delivery with the notifier that is
waiting for it, a frozen notifier does not keep a fire's notification for
long. Delivery is therefore at least once, with the same delivery id on
every attempt.

Wake-ups: NOTIFY `firesafe_notify` (sent by the outbox trigger at commit),
the end of a delivery, or the next retry/escalation/lease time read from the
database, whichever comes first, so a confirmed fire leaves within
milliseconds and an idle notifier costs one small query every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiosmtplib
import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from firesafe.settings import SmtpEndpoint
from notify import destinations, render
from storage.liveness import noticing
from storage.queries import notifications as q

log = logging.getLogger(__name__)

CHANNEL = "firesafe_notify"
SMTP_OK = 250  # recorded as the status of an accepted message


@dataclass(frozen=True, slots=True)
class Tunables:
    """The notifier's limits; each default says why."""

    # A claim lasts this long unless renewed; the notifier renews the claims of
    # its attempts under way every heartbeat_s, so a live notifier keeps them
    # however slow the receiver (up to its timeout) and a frozen one (SIGSTOP,
    # its database session still open) loses them within lease_s, to a peer.
    # (It was 90 s, longer than any attempt, without renewal: an outside check
    # saw a frozen notifier's claimed fire notifications delivered 93 s late.)
    # Three heartbeats per lease: one late or failed renewal loses nothing.
    lease_s: float = 15.0
    heartbeat_s: float = 5.0
    # A receiver that has not answered in 10 s is down for our purposes; the
    # next attempt follows the backoff.
    http_timeout_s: float = 10.0
    smtp_timeout_s: float = 30.0
    # Per target in flight: a slow or dead receiver holds at most this many
    # slots; everything else keeps flowing.
    per_target: int = 4
    max_in_flight: int = 128
    escalation_batch: int = 200
    # Retries: base * 2^(n-1), capped, with jitter (half fixed, half random) so
    # that a recovering receiver is not hit by every notifier at once.
    # The cap bounds how long a receiver that is back waits for its first retry
    # (then everything queued for it goes at once): a minute for fire alarms.
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    give_up_after_s: float = 24 * 3600.0
    # Poll bounds: the database is asked for the next due time; a dead
    # notifier's claims (lock gone) are noticed within max_poll_s.
    min_poll_s: float = 0.05
    max_poll_s: float = 2.0
    drain_timeout_s: float = 15.0
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.lease_s:
            raise ValueError("heartbeat_s must be positive and shorter than lease_s")


def describe_failure(exc: Exception) -> str:
    """What went wrong with one delivery, in words for the attempt log an
    operator reads (httpx's timeouts carry no message of their own)."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time (timed out)"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect: {exc}" if str(exc) else "could not connect"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retry_delay_s(attempts: int, tunables: Tunables, rng: random.Random) -> float:
    """Exponential backoff with equal jitter after `attempts` failed attempts."""
    ceiling = min(tunables.backoff_cap_s, tunables.backoff_base_s * 2.0 ** max(attempts - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Notifier:
    """One notifier process's worth of delivery (`firesafe notify`)."""

    def __init__(
        self,
        conninfo: str,
        *,
        smtp: SmtpEndpoint | None,
        smtp_from: str,
        tunables: Tunables | None = None,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.conninfo = noticing(conninfo)  # (storage/liveness.py)
        self.smtp = smtp
        self.smtp_from = smtp_from
        self.tunables = tunables or Tunables()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**4):04x}"
        self.claim_key = 0  # set per database session, see _session
        self.log = logger or log
        self.ready = asyncio.Event()
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._in_flight: Counter[str] = Counter()
        self._failing: set[str] = set()  # targets whose last attempt failed (for the log)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()  # ids of the claims whose attempt is under way
        self._sessions_ready = 0

    # --- the loop -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; reconnect with jittered backoff on database loss."""
        delay = 0.5
        while not stop.is_set():
            lost: BaseException | None = None
            try:
                await self._session(stop)
                return
            except* (psycopg.OperationalError, psycopg.InterfaceError) as group:
                # From the loop itself or from the listener task of the TaskGroup.
                lost = group.exceptions[0]
            if self._sessions_ready:
                delay, self._sessions_ready = 0.5, 0  # it worked for a while: retry soon
            self.log.warning("notifier: database unavailable (%s); reconnecting", lost)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, self.tunables.reconnect_max_s)

    async def _session(self, stop: asyncio.Event) -> None:
        t = self.tunables
        # The advisory lock key written on this session's claims: 62 random bits, new
        # for every session, so the claims of a lost session are free at once even
        # when this notifier reconnects.
        self.claim_key = random.randrange(1, 2**62)
        listener = await AsyncConnection.connect(
            self.conninfo, autocommit=True, application_name=f"firesafe-notify:{self.name}"
        )
        pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            self.conninfo,
            open=False,
            min_size=1,
            max_size=4,
            connection_class=AsyncConnection[DictRow],
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "firesafe-notify",
            },
            check=AsyncConnectionPool.check_connection,
            name="firesafe-notify",
        )
        limits = httpx.Limits(max_connections=t.max_in_flight, max_keepalive_connections=32)
        timeout = httpx.Timeout(t.http_timeout_s, connect=min(5.0, t.http_timeout_s))
        try:
            await listener.execute("SELECT pg_advisory_lock(%s)", (self.claim_key,))
            await listener.execute(f"LISTEN {CHANNEL}")
            await pool.open(wait=True, timeout=30)
            async with (
                httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as http,
                asyncio.TaskGroup() as tasks,
            ):
                listen = tasks.create_task(self._listen(listener), name="notify-listen")
                heartbeat = tasks.create_task(self._heartbeat(pool), name="notify-heartbeat")
                self.ready.set()
                self._sessions_ready += 1
                self.log.info("notifier %s ready", self.name)
                try:
                    await self._loop(stop, pool, http, tasks, listen)
                finally:
                    await self._drain()  # (the heartbeat keeps the claims of the drain)
                    listen.cancel()
                    heartbeat.cancel()
        finally:
            await pool.close()
            await listener.close()
            self.ready.clear()

    async def _listen(self, conn: AsyncConnection[tuple[object, ...]]) -> None:
        async for _ in conn.notifies():
            self._wake.set()
        raise psycopg.OperationalError("LISTEN connection closed")

    async def _heartbeat(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        """Renew the leases of the attempts under way, every heartbeat_s. It runs on
        the event loop that makes the attempts: a process that stops (SIGSTOP) or
        whose loop hangs stops renewing, and its claims return to the others."""
        t = self.tunables
        while True:
            await asyncio.sleep(t.heartbeat_s)
            held = sorted(self._held)
            if not held:
                continue
            try:
                async with pool.connection(timeout=t.heartbeat_s) as conn:
                    renewed = await q.renew_leases(
                        conn,
                        ids=held,
                        notifier=self.name,
                        claim_key=self.claim_key,
                        lease_s=t.lease_s,
                    )
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                # The next heartbeat tries again; the lease outlasts two misses.
                self.log.warning("notifier: leases not renewed (%s)", exc)
                continue
            if renewed < len(held):
                self.log.debug("%d claim(s) no longer ours", len(held) - renewed)

    async def _loop(
        self,
        stop: asyncio.Event,
        pool: AsyncConnectionPool[AsyncConnection[DictRow]],
        http: httpx.AsyncClient,
        tasks: asyncio.TaskGroup,
        listen: asyncio.Task[None],
    ) -> None:
        t = self.tunables
        while not stop.is_set():
            if listen.done():
                listen.result()  # raises the listener's error
            self._wake.clear()
            free = t.max_in_flight - sum(self._in_flight.values())
            if free > 0:
                began = time.perf_counter()
                async with pool.connection() as conn:
                    claimed = await q.claim(
                        conn,
                        notifier=self.name,
                        claim_key=self.claim_key,
                        lease_s=t.lease_s,
                        per_target=t.per_target,
                        limit=free,
                        in_flight=dict(self._in_flight),
                    )
                self.log.debug(
                    "claimed %d in %.1f ms (%d targets with deliveries under way)",
                    len(claimed),
                    (time.perf_counter() - began) * 1000,
                    len(self._in_flight),
                )
                for c in claimed:
                    self._in_flight[c.target_id] += 1
                    self._held.add(c.id)
                    task = tasks.create_task(self._deliver(pool, http, c), name=f"deliver-{c.id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            async with pool.connection() as conn:
                escalated = await q.escalate_due(conn, limit=t.escalation_batch)
                if escalated:
                    self.log.info("escalated: %d notification(s) written", escalated)
                    continue
                due_in = await q.next_wakeup_s(conn)
            wait = t.max_poll_s if due_in is None else min(max(due_in, t.min_poll_s), t.max_poll_s)
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def _drain(self) -> None:
        """Let deliveries under way finish (their outcome recorded), then cancel the rest."""
        pending = set(self._tasks)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=self.tunables.drain_timeout_s)
        for task in late:
            task.cancel()

    # --- one delivery -------------------------------------------------------------

    async def _deliver(
        self,
        pool: AsyncConnectionPool[AsyncConnection[DictRow]],
        http: httpx.AsyncClient,
        c: q.Claimed,
    ) -> None:
        try:
            if c.kind is None:
                async with pool.connection() as conn:
                    await q.cancel(
                        conn, delivery_id=c.id, notifier=self.name, reason="target deleted"
                    )
                return
            notice = render.Notice(
                delivery_id=c.id,
                event=c.event,
                escalation=c.escalation,
                alarm=c.alarm,
                language=c.language,
                timezone=c.timezone,
            )
            async with pool.connection() as conn:
                wanted = await q.still_to_send(
                    conn,
                    delivery_id=c.id,
                    notifier=self.name,
                    claim_key=self.claim_key,
                    lease_s=self.tunables.lease_s,
                )
            if not wanted:
                self.log.warning(
                    "delivery %s (%s of alarm %s) to %s: not sent, taken over by another "
                    "notifier or cancelled since it was claimed",
                    c.id,
                    c.event,
                    c.alarm_id,
                    c.target_id,
                )
                return
            at = datetime.now(UTC)
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            try:
                if c.kind == "webhook":
                    status = await self._post(http, c, notice)
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                else:
                    status = await self._mail(c, notice)
            except Exception as exc:  # network, protocol, or a row that cannot render
                error = describe_failure(exc)[:500]
                code = getattr(exc, "code", None) if c.kind == "email" else None
                status = code if isinstance(code, int) else None
            duration_ms = (time.perf_counter() - started) * 1000
            delivered = error is None
            retry_at: datetime | None = None
            if not delivered:
                age = (at - c.created_at).total_seconds()
                if age < self.tunables.give_up_after_s:
                    delay = retry_delay_s(c.attempts, self.tunables, self._rng)
                    retry_at = at + timedelta(seconds=delay)
            async with pool.connection() as conn:
                outcome = await q.record_outcome(
                    conn,
                    delivery_id=c.id,
                    notifier=self.name,
                    attempt=c.attempts,
                    kind=c.kind,
                    at=at,
                    duration_ms=duration_ms,
                    delivered=delivered,
                    status=status,
                    error=error,
                    retry_at=retry_at,
                )
            self._log_outcome(c, error, retry_at, outcome)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # The outcome is not recorded: the claim returns and it is sent again.
            self.log.warning("delivery %s: outcome not recorded (%s)", c.id, exc)
        finally:
            self._held.discard(c.id)
            self._in_flight[c.target_id] -= 1
            if self._in_flight[c.target_id] <= 0:
                del self._in_flight[c.target_id]
            self._wake.set()

    def _log_outcome(
        self, c: q.Claimed, error: str | None, retry_at: datetime | None, outcome: str
    ) -> None:
        """One line when a target starts failing and one when it answers again: a
        receiver down for hours with a thousand alarms queued does not flood the log."""
        if outcome == "lost":
            # This process stopped for longer than the lease (SIGSTOP, a paused VM)
            # and a peer took the delivery over: only the attempt is logged.
            self.log.warning(
                "delivery %s to %s: claim lost during the attempt (taken over by another "
                "notifier); its outcome (%s) is logged only",
                c.id,
                c.target_id,
                error or "delivered",
            )
            return
        if error is None:
            self.log.debug("delivered %s of alarm %s to %s", c.event, c.alarm_id, c.target_id)
            if c.target_id in self._failing:
                self._failing.discard(c.target_id)
                self.log.info("target %s answers again", c.target_id)
            return
        if retry_at is None:
            self.log.warning(
                "gave up delivery %s (%s of alarm %s) to %s after %d attempts: %s (%s)",
                c.id,
                c.event,
                c.alarm_id,
                c.target_id,
                c.attempts,
                error,
                outcome,
            )
            return
        level = logging.DEBUG if c.target_id in self._failing else logging.WARNING
        self._failing.add(c.target_id)
        self.log.log(
            level,
            "target %s failing: %s (delivery %s, attempt %d; retried with backoff for 24 h)",
            c.target_id,
            error,
            c.id,
            c.attempts,
        )

    async def _post(self, http: httpx.AsyncClient, c: q.Claimed, notice: render.Notice) -> int:
        assert c.url is not None
        url: str | httpx.URL = c.url
        pinned: destinations.Pinned | None = None
        if c.public_only:  # a manager's target: never into the centre's own network
            pinned = await destinations.pin_public(c.url)
            url = pinned.url
        if c.template:
            content_type = c.content_type or render.JSON_TYPE
            body = render.templated_body(notice, c.template, content_type)
        else:
            content_type = render.JSON_TYPE
            body = render.json_body(notice)
        headers = {
            "Content-Type": content_type
            if "charset" in content_type
            else f"{content_type}; charset=utf-8",
            "User-Agent": "firesafe-notifier/1",
            "X-Firesafe-Delivery": c.id,
            "X-Firesafe-Event": c.event,
        }
        if c.secret:
            headers["X-Firesafe-Signature"] = render.signature(body, c.secret)
        extensions: dict[str, str] = {}
        if pinned is not None:  # connect to the address checked, as the name
            headers["Host"] = pinned.host_header
            if pinned.server_name is not None:
                extensions["sni_hostname"] = pinned.server_name
        response = await http.post(url, content=body, headers=headers, extensions=extensions)
        return response.status_code

    async def _mail(self, c: q.Claimed, notice: render.Notice) -> int:
        assert c.address is not None
        if self.smtp is None:
            raise aiosmtplib.SMTPException("FIRESAFE_SMTP_URL is not set")
        message = render.email(notice, sender=self.smtp_from, to=c.address, date=datetime.now(UTC))
        # start_tls=None: STARTTLS when the server offers it.
        await aiosmtplib.send(
            message,
            hostname=self.smtp.host,
            port=self.smtp.port,
            username=self.smtp.username,
            password=self.smtp.password,
            use_tls=self.smtp.implicit_tls,
            start_tls=None if not self.smtp.implicit_tls else False,
            timeout=self.tunables.smtp_timeout_s,
        )
        return SMTP_OK
