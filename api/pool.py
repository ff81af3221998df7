"""The API's connection pool, and how it comes back after the database went away.

psycopg_pool on its own recovers slowly from an outage (an outside check: 503s
for up to half the outage's length after the server answered again, and a
worker idle through a restart failing its first requests minutes later):

- a connection lost while the server was down is retried with an exponential
  backoff (1, 2, 4 ... 64 s) for `reconnect_timeout` (300 s by default), so
  the pool waits for its next attempt, up to a minute after the server is
  back. Giving up after RECONNECT_TIMEOUT_S instead shrinks the pool, and the
  next request grows it again at once.
- the idle connections of a restarted server are all dead, but a request finds
  that out one connection at a time, sleeping 1 s, then 2 s, between them:
  two dead ones use up its POOL_TIMEOUT_S. The first one found dead (or the
  alarm listener reconnecting) sweeps every idle connection at once
  (`pool.check()`, which replaces the dead ones), so the request's next try
  gets a fresh connection.
- a connection cut off without a reset (a partition) answers nothing: each
  check gives up after CHECK_TIMEOUT_S, and the connections carry the
  keepalives of ingest's (`storage.liveness`).
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from api import dbtypes
from storage.liveness import cancelled_promptly, noticing

log = logging.getLogger(__name__)

# A handful of connections serve hundreds of requests per second (each holds
# one for a few ms); SSE clients hold none between events.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 16
# A request waits at most this long for a connection: during a database
# outage calls fail fast with 503 instead of hanging for psycopg's 30 s.
POOL_TIMEOUT_S = 3.0
# A new connection gives up after this long (libpq connect_timeout, seconds).
CONNECT_TIMEOUT_S = 3
# A lost connection is retried this long, then dropped (see above).
RECONNECT_TIMEOUT_S = 5.0
# Start-up fails clearly if the database is not there within this time (its
# connections are retried that long: a database still starting is waited for).
POOL_OPEN_TIMEOUT_S = 30.0

# A connection that does not answer a check (an empty query) within this long
# is taken for dead: a connection cut off without a reset (a network
# partition) would otherwise hold a request, or the sweep with every idle
# connection it took out of the pool, until TCP gives up (up to minutes after
# the network healed).
CHECK_TIMEOUT_S = 1.0


class _Pool(AsyncConnectionPool[AsyncConnection[DictRow]]):
    @staticmethod
    async def check_connection(conn: AsyncConnection[DictRow]) -> None:
        # (`check()`, the sweep, calls this one for every idle connection)
        # (closed at once when it times out, not cancelled politely: 10 s)
        try:
            await cancelled_promptly(
                AsyncConnectionPool.check_connection(conn), within=CHECK_TIMEOUT_S
            )
        except TimeoutError:
            raise psycopg.OperationalError(
                f"no answer to a check within {CHECK_TIMEOUT_S:g} s"
            ) from None


Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


class ApiPool:
    """The pool, plus a sweep of its idle connections when one was found dead."""

    def __init__(self, conninfo: str, *, name: str = "firesafe-api") -> None:
        self._sweeping: asyncio.Task[None] | None = None
        self.pool: Pool = _Pool(
            noticing(conninfo),  # keepalives: a connection gone without a word is noticed
            open=False,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            connection_class=AsyncConnection[DictRow],
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT_S,
            },
            configure=_configure,
            check=self._check,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=POOL_OPEN_TIMEOUT_S,
            name=name,
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
        self.pool.reconnect_timeout = RECONNECT_TIMEOUT_S  # from now on (see above)

    async def _check(self, conn: AsyncConnection[DictRow]) -> None:
        try:
            await _Pool.check_connection(conn)
        except psycopg.Error:
            self.sweep()  # its siblings went with the same server
            raise

    def sweep(self) -> None:
        """Test every idle connection now, replacing the dead ones (once at a time)."""
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.get_running_loop().create_task(
                self._sweep(), name="firesafe-api-pool-sweep"
            )

    async def _sweep(self) -> None:
        try:
            await self.pool.check()
        except Exception as exc:  # never let a sweep's failure reach a request
            log.warning("sweeping the pool's idle connections failed: %s", exc)

    async def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
        await self.pool.close()


async def _configure(conn: AsyncConnection[DictRow]) -> None:
    """Every pooled connection: timestamps beyond Python's range are clamped."""
    dbtypes.register(conn)
