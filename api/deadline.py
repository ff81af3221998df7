"""Deadlines for work that waits on the database.

A database that stops answering (a stopped process, a frozen VM, a storage
stall) gives a client no error at all: a query sent on a pooled connection
waits for as long as the server hangs, and psycopg's own cancellation then
takes up to 10 s more. So work is run in a task of its own and waited for
with a deadline; past it the caller answers at once (503, or /health's
`degraded`) and the task is cancelled in the background, where psycopg
cancels the query or closes the connection and the pool replaces it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, MutableMapping
from typing import Any, TypeVar

from starlette.requests import Request

from api.errors import Asgi, Receive, Scope, Send, body_timeout, request_id, unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# A request's response must start within this long: every query of an
# endpoint takes milliseconds, so this is a database that does not answer.
REQUEST_DEADLINE_S = 10.0
# Bulk registration (up to 10,000 devices in one body) may take longer.
REQUEST_DEADLINES: Mapping[tuple[str, str], float] = {
    ("POST", "/api/v1/devices"): 60.0,
    ("POST", "/api/v1/devices/import"): 60.0,
}

# A request's body must have arrived within this long (10,000 devices of CSV
# in a few MB, on a slow link); endpoints with a shorter deadline keep theirs.
BODY_DEADLINE_S = 30.0

# Abandoned tasks finishing their cancellation: referenced until done.
_abandoned: set[asyncio.Future[Any]] = set()


class DeadlineExceeded(Exception):
    """The work did not finish within its deadline (it is being cancelled)."""


def request_deadline(method: str, path: str) -> float:
    return REQUEST_DEADLINES.get((method, path.rstrip("/") or "/"), REQUEST_DEADLINE_S)


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_finished_abandoned)


def _finished_abandoned(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.info("abandoned work ended with %r", task.exception())


async def bounded(work: Awaitable[T], seconds: float) -> T:
    """`work`'s result, or `DeadlineExceeded` after `seconds` without waiting
    for its cancellation to finish."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        raise DeadlineExceeded(f"no answer within {seconds:g} s")
    return task.result()


class DeadlineMiddleware:
    """503 when a request's response has not started within its deadline.

    Plain ASGI. Once the response has started (a stream, a long body) there
    is no deadline: only the wait for the first byte is bounded. A late
    response of the abandoned handler is dropped.
    """

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seconds = request_deadline(scope["method"], scope["path"])
        started = False
        answered = False
        headers = dict(scope.get("headers") or ())
        body_done = headers.get(b"content-length", b"0") == b"0" and (
            b"transfer-encoding" not in headers
        )

        async def reading() -> MutableMapping[str, Any]:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def guarded(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, reading, guarded))
        try:
            # A body must arrive within its own deadline whatever the work
            # after it may take (bulk registration: 60 s).
            first = min(seconds, BODY_DEADLINE_S)
            done, _ = await asyncio.wait({task}, timeout=first)
            if not (done or started) and body_done and seconds > first:
                done, _ = await asyncio.wait({task}, timeout=seconds - first)
            if done or started:
                await task
                return
        except asyncio.CancelledError:
            _abandon(task)
            raise
        answered = True
        _abandon(task)
        request = Request(scope)
        if not body_done:
            # The client did not send the body it announced: not the database.
            log.info(
                "request %s: %s %s: the body did not arrive within %g s",
                request_id(request),
                scope["method"],
                scope["path"],
                first,
            )
            await body_timeout(request, first)(scope, receive, send)
            return
        log.warning(
            "request %s: %s %s had no response within %g s (database not answering?)",
            request_id(request),
            scope["method"],
            scope["path"],
            seconds,
        )
        # The handler may not have read the whole body: the connection closes.
        await unavailable(request, close=True)(scope, receive, send)
