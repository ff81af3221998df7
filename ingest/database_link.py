"""Ingest's two database connections, and what it does when the server stops
answering.

The writer holds the batch transactions and the shard leases (they live in its
session); the auxiliary connection (autocommit) does the bookkeeping. A
partition or a hung server gives the client no error at all, so a step that
has run DB_ANSWER_S has a fresh connection probe the server; no answer is a
lost connection. Every wait ends at once when a stop is asked for
(StopRequested): nothing that was not committed was acknowledged, and the
broker delivers it again to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from storage.liveness import cancel_hung, cancelled_promptly

log = logging.getLogger(__name__)

DB_RETRY_MIN_S = 0.5
DB_RETRY_MAX_S = 15.0
# A database step still running after this long has a fresh connection ask
# the server `SELECT 1`; no answer within DB_PROBE_S is a lost connection. A
# partition or a hung server gives the client no error at all, and the server
# may meanwhile have ended the session that held our shards (its keepalive),
# so a peer took them over while we went on reading their messages. A step
# that is only slow (a lock wait, a large takeover's restore) goes on.
DB_ANSWER_S = 15.0
DB_PROBE_S = 5.0
PROBE_APPLICATION_NAME = "firesafe-ingest-probe"
APPLICATION_NAME = "firesafe-ingest"  # visible in pg_stat_activity
# The writer session holds the shard leases: the server must notice soon when
# its client is gone (a partition, a dead machine), or those shards would wait
# for the kernel's two-hour keepalive. About 5 + 3 x 2 s here.
WRITER_OPTIONS = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
# Errors that mean "the database went away", as opposed to "it refused this data".
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

T = TypeVar("T")


class StopRequested(Exception):
    """Asked to stop while waiting for the database: what was not committed is
    not acknowledged, and the broker delivers it again to the next run."""


class DatabaseLink:
    """The writer and auxiliary connections of one ingest process."""

    def __init__(self, dsn: str, stopping: asyncio.Event) -> None:
        self.dsn = dsn
        self._stopping = stopping
        self.writer: psycopg.AsyncConnection[Any] | None = None
        self.aux: psycopg.AsyncConnection[Any] | None = None

    async def open(self, join: Callable[[], Awaitable[None]]) -> None:
        """Connect (waiting out an outage of any length), then `join()`: what the
        caller does on new connections (read the schema flavour, take back its
        leases). An error of `join` other than a lost connection is the caller's."""
        delay = DB_RETRY_MIN_S
        while True:
            try:
                self.writer = await self.connect(options=WRITER_OPTIONS)
                self.aux = await self.connect(autocommit=True)
                await self.answered(join)
                return
            except CONNECTION_ERRORS as exc:
                await self.close()
                log.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
                await self.wait_unless_stopping(delay * random.uniform(0.5, 1.0))  # jitter
                delay = min(DB_RETRY_MAX_S, delay * 2)

    async def reopen(self, join: Callable[[], Awaitable[None]]) -> None:
        await self.close()
        self.writer = self.aux = None
        await self.open(join)

    async def close(self) -> None:
        for conn in (self.writer, self.aux):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def connect(self, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        """A connection, or StopRequested when a stop comes first: a server that
        accepts connections and answers nothing holds a connect for its timeout."""
        connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(self.dsn, application_name=APPLICATION_NAME, **kwargs)
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            connecting.cancel()  # (a no-op once connected)
        await asyncio.wait([connecting])
        if connecting.cancelled():
            raise StopRequested
        conn = connecting.result()
        if self._stopping.is_set():
            await conn.close()
            raise StopRequested
        return conn

    async def wait_unless_stopping(self, delay: float) -> None:
        """Sleep before trying the database again; a stop asked for meanwhile (or
        before) ends the wait with StopRequested (SIGTERM was ignored for as long
        as the database was away: an outside check)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            raise StopRequested

    async def answered(self, step: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`step(*args)`, or OperationalError once it has run DB_ANSWER_S and the
        server does not answer a probe; the connections are closed first (a
        polite cancel would wait on the same silence), so the caller
        reconnects or starts over."""
        task = asyncio.ensure_future(step(*args))
        began = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait([task], timeout=DB_ANSWER_S)
                if done:
                    return task.result()
                if not await self.answers():
                    break
                log.warning(
                    "%s has waited %.0f s; the database answers a probe, so it goes on "
                    "waiting (a lock? pg_stat_activity shows what it waits for)",
                    getattr(step, "__name__", step),
                    time.monotonic() - began,
                )
        except asyncio.CancelledError:
            await cancel_hung([task])
            raise
        log.warning(
            "%s has waited %.0f s or more and the database does not answer; "
            "dropping its connections",
            getattr(step, "__name__", step),
            DB_ANSWER_S,
        )
        await self.close()
        await cancel_hung([task])
        raise psycopg.OperationalError("the database does not answer")

    async def answers(self) -> bool:
        """Whether a fresh connection gets `SELECT 1` answered within DB_PROBE_S."""

        async def probe() -> None:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name=PROBE_APPLICATION_NAME
            )
            async with conn:
                await conn.execute("SELECT 1")

        try:
            await cancelled_promptly(probe(), within=DB_PROBE_S)
        except TimeoutError:
            return False
        except Exception as failed:
            log.warning("database probe failed: %s", failed)
            return False
        return True
