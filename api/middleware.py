"""ASGI middleware that runs before routing and authentication: body limits, request ids.

Both are plain ASGI (no BaseHTTPMiddleware): the body limit must see the
request before anything reads it, and must stop reading at the limit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Request bodies above this are refused (413) before authentication: an
# alarm note or a token request is a few hundred bytes.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Bulk device registration (JSON list or CSV of up to 10,000 devices) gets more.
IMPORT_MAX_BODY_BYTES = 8 * 1024 * 1024
# (method, path) -> limit; everything else gets the default.
BODY_LIMITS: Mapping[tuple[str, str], int] = {
    ("POST", "/api/v1/devices"): IMPORT_MAX_BODY_BYTES,
    ("POST", "/api/v1/devices/import"): IMPORT_MAX_BODY_BYTES,
}
REQUEST_ID_HEADER = "x-request-id"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def body_limit(method: str, path: str) -> int:
    return BODY_LIMITS.get((method, path.rstrip("/") or "/"), DEFAULT_MAX_BODY_BYTES)


def _json_error(status: int, code: str, message: str, request_id: str | None) -> bytes:
    error: dict[str, str] = {"code": code, "message": message}
    if request_id:
        error["request_id"] = request_id
    return orjson.dumps({"error": error})


class BodyLimitMiddleware:
    """413 for bodies above the route's limit, without reading them.

    A declared Content-Length above the limit is refused before the app
    runs; a chunked body is counted as it streams and reading stops (the
    app's `receive` raises `BodyTooLarge`) at the first byte past the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"])
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return

        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        # (before the language middleware, which runs inside this one)
        from api.errors import render_message, scope_language

        request_id = scope.get("state", {}).get("request_id")
        lang = scope_language(scope)
        message = render_message("too_large", f"request body larger than {limit} bytes", lang)
        body = _json_error(413, "too_large", message, request_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # The unread body is still on the socket: do not reuse the connection.
            (b"connection", b"close"),
            (b"content-language", lang.encode("ascii")),
        ]
        if request_id:
            headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Gives every request an id (or keeps a sane one the client sent), echoed in
    `X-Request-ID`, put in error bodies and in the log lines of server errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER.encode():
                text = value.decode("latin-1")
                if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
                    request_id = text
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(
                    name != REQUEST_ID_HEADER.encode() for name, _ in headers
                ):  # (a 413's has it)
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_id)
