"""Live alarm changes: one LISTEN connection per API process, fanned out to SSE clients.

Ingest (and the API itself) insert into alarm_log; a trigger NOTIFYs
'firesafe_alarms' with the log id at commit, so every API process sees
every change. Notifications only carry ids: each client then reads the rows
through its own scope and filters, in SQL. A client that falls behind, or a
LISTEN connection that had to reconnect, catches up by reading every log id
after the last one it sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.errors import TooManyStreams, Unavailable
from storage.queries import tokens as token_q

log = logging.getLogger(__name__)

CHANNEL = "firesafe_alarms"
# Ids buffered per client before it is switched to catching up from the table.
SUBSCRIBER_QUEUE = 1000
# Reconnect backoff of the LISTEN connection: doubling from 0.5 s up to 15 s, jittered.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0
# Open streams per token (per API process): a dashboard or two and a script
# each; more is a leak or an abuse, and each stream costs the server a task.
MAX_STREAMS_PER_TOKEN = 8
# A new LISTEN connection gives up after this long (libpq connect_timeout, s).
CONNECT_TIMEOUT_S = 5
# A quiet LISTEN connection is pinged this often: a dead one is noticed.
LISTEN_PING_S = 10.0
# How often open streams' tokens are checked: a revoked or expired token's
# stream ends within this many seconds (one query for all streams).
TOKEN_CHECK_S = 2.0
# Why a stream ended (the last SSE event, `event: close`).
CLOSE_TOKEN = "token_revoked_or_expired"
CLOSE_LISTENER = "live_feed_down"


@dataclass(eq=False, slots=True)
class Subscription:
    """One client's inbox: notified log ids, or a request to catch up."""

    key: str = ""
    token_id: str | None = None
    queue: asyncio.Queue[int] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    resync: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: str | None = None

    def close(self, reason: str) -> None:
        """End the stream: its generator sends `event: close` and returns."""
        if self.closed is None:
            self.closed = reason
        self.wake.set()

    def push(self, log_id: int) -> None:
        try:
            self.queue.put_nowait(log_id)
        except asyncio.QueueFull:
            self.resync = True
        self.wake.set()

    def request_resync(self) -> None:
        self.resync = True
        self.wake.set()

    def drain(self) -> list[int]:
        ids = []
        while not self.queue.empty():
            ids.append(self.queue.get_nowait())
        self.wake.clear()
        return ids


class AlarmHub:
    def __init__(
        self,
        conninfo: str,
        *,
        logger: logging.Logger | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._on_reconnect = on_reconnect  # listening again after losing the server
        self._subs: set[Subscription] = set()
        self._per_key: Counter[str] = Counter()
        self._log = logger or log
        self.listening = asyncio.Event()
        self.max_streams_per_token = MAX_STREAMS_PER_TOKEN

    @property
    def clients(self) -> int:
        return len(self._subs)

    def subscribe(self, key: str = "", token_id: str | None = None) -> Subscription:
        """A new client's inbox; 503 while not listening, 429 past the token's cap."""
        if not self.listening.is_set():
            raise Unavailable(
                "the live alarm feed is down (database unreachable); retry later",
                headers={"Retry-After": "5"},
            )
        if self._per_key[key] >= self.max_streams_per_token:
            raise TooManyStreams(
                f"this token already has {self.max_streams_per_token} open streams "
                "(close one first)"
            )
        sub = Subscription(key=key, token_id=token_id)
        self._subs.add(sub)
        self._per_key[key] += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            self._per_key[sub.key] -= 1
            if self._per_key[sub.key] <= 0:
                del self._per_key[sub.key]

    def close_all(self, reason: str) -> None:
        for sub in list(self._subs):
            sub.close(reason)

    def token_ids(self) -> set[str]:
        return {s.token_id for s in self._subs if s.token_id is not None}

    def close_tokens(self, live: set[str]) -> int:
        """Close the streams of tokens not in `live`; how many were closed."""
        closed = 0
        for sub in list(self._subs):
            if sub.token_id is not None and sub.token_id not in live and sub.closed is None:
                sub.close(CLOSE_TOKEN)
                closed += 1
        return closed

    async def watch_tokens(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        """Every TOKEN_CHECK_S, end the streams of revoked or expired tokens."""
        while True:
            await asyncio.sleep(TOKEN_CHECK_S)
            ids = self.token_ids()
            if not ids:
                continue
            try:
                async with pool.connection() as conn:
                    live = await token_q.live_token_ids(conn, ids=sorted(ids))
            except (psycopg.OperationalError, PoolTimeout) as exc:
                # The listener closes every stream while the database is down.
                self._log.debug("token check skipped: %s", exc)
                continue
            if closed := self.close_tokens(live):
                self._log.info("closed %d stream(s) of revoked or expired tokens", closed)

    async def run(self) -> None:
        """LISTEN until cancelled, reconnecting with jittered backoff. Whenever the
        connection is down, open streams are closed (they reconnect with
        Last-Event-ID) and new ones refused, rather than kept on heartbeats."""
        try:
            await self._listen()
        finally:
            self.listening.clear()
            self.close_all(CLOSE_LISTENER)

    async def _listen(self) -> None:
        delay = RECONNECT_MIN_S
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if not first:
                        # Changes made while we were not listening: catch up.
                        for sub in self._subs:
                            sub.request_resync()
                        if self._on_reconnect is not None:
                            self._on_reconnect()
                    first = False
                    delay = RECONNECT_MIN_S
                    while True:
                        async for notify in conn.notifies(timeout=LISTEN_PING_S):
                            try:
                                log_id = int(notify.payload)
                            except ValueError:
                                self._log.warning("ignoring notification %r", notify.payload)
                                continue
                            for sub in self._subs:
                                sub.push(log_id)
                        # Quiet for a while: make sure the connection is still there.
                        await conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                self.listening.clear()
                self.close_all(CLOSE_LISTENER)
                self._log.warning(
                    "alarm LISTEN connection lost (%s); retrying in %.1fs", exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX_S)
