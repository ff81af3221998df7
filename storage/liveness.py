"""Connections that notice a database gone without a word.

A partition or dropped packets give a client no error: it waits for an answer
for ever (the kernel's keepalive starts after two hours). An outside check
black-holed one ingest process's connections: its writer now notices within
about 15 s, but the connection that sends evacuation commands did not, and a
confirmed fire's commands left 14 minutes late. Every long-lived connection of
ingest and the notifier is opened with these libpq options.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

from psycopg import conninfo

CLIENT_KEEPALIVES: Final[dict[str, int]] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms: data sent and not acknowledged
    "connect_timeout": 10,  # s: a host that answers nothing
}


def noticing(dsn: str) -> str:
    """`dsn` with the options above (those it sets itself win)."""
    given = conninfo.conninfo_to_dict(dsn)
    return conninfo.make_conninfo(
        dsn, **{k: v for k, v in CLIENT_KEEPALIVES.items() if k not in given}
    )


async def cancel_hung(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel tasks that may be waiting on a database that does not answer.
    psycopg meets a cancelled query by asking that server to cancel it (5 s)
    and waiting for the query to end (5 s more); cancelled again meanwhile, it
    closes the connection at once, which is what a stop or a failed check
    wants: nothing that was not committed was acknowledged."""
    for _ in range(5):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:  # given up: its error (a closed connection) is no news
        if task.done() and not task.cancelled():
            task.exception()


T = TypeVar("T")


async def cancelled_promptly(work: Coroutine[Any, Any, T], within: float | None = None) -> T:
    """`work`, which may be waiting on a database that does not answer: cancelled,
    or not done `within` seconds (TimeoutError), it is cancelled again and again
    (`cancel_hung`), so psycopg closes its connection at once instead of asking
    the server to cancel (5 s) and waiting (5 s more). An outside check: SIGTERM
    took 10-13 s with the server frozen, ingest's linkage sender's query politely
    cancelled when its task group ended."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.wait_for(asyncio.shield(task), within)
    except (asyncio.CancelledError, TimeoutError):
        await cancel_hung([task])
        raise
