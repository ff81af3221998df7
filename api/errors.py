"""The API's errors and their translation to `{"error": {"code", "message"}}` responses.

Routers and dependencies raise `ApiError`s; the query layer raises
`storage.queries` errors; both are turned into JSON here, at the edge.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.queries import ConflictError, InvalidInputError, NotFoundError, OutOfScopeError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = Field(
        default=None, description="Quote it when reporting a problem: the log has the details"
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadParameter(ApiError):
    """A query or path parameter that is well-typed but unusable (422, named)."""

    status = 422
    code = "invalid_parameter"

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"query parameter {name!r}: {message}")
        self.name = name


class TooManyPoints(BadParameter):
    code = "too_many_points"


class BadBody(ApiError):
    status = 422
    code = "invalid_body"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class TooManyStreams(ApiError):
    status = 429
    code = "too_many_streams"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    503: "unavailable",
}

# Documented on every operation so that the OpenAPI is the whole truth.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorResponse, "description": "Role or site not allowed"},
    422: {"model": ErrorResponse, "description": "Bad parameter or body (the message names it)"},
    503: {"model": ErrorResponse, "description": "Database unavailable"},
}
# Seconds a client should wait before retrying after a 503 (the pool gives up in 3 s).
RETRY_AFTER_S = 5


def request_id(request: Request) -> str | None:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid


def error_json(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    request: Request | None = None,
) -> JSONResponse:
    error = {"code": code, "message": message}
    rid = request_id(request) if request is not None else None
    if rid:
        error["request_id"] = rid
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    where = loc[0] if loc else "body"
    rest = ".".join(str(part) for part in loc[1:])
    if where == "body":
        return f"body {rest}" if rest else "body"
    return f"{where} parameter {rest!r}"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    code = "invalid_body" if loc[:1] == ("body",) else "invalid_parameter"
    message = f"{_location(loc)}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_json(422, code, message, request=request)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status, exc.code, exc.message, exc.headers, request=request)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    headers = dict(exc.headers or {})
    if exc.status_code == 413:
        headers["Connection"] = "close"  # the rest of the body is left unread
    return error_json(exc.status_code, code, str(exc.detail), headers, request=request)


async def _query(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return error_json(404, "not_found", str(exc), request=request)
    if isinstance(exc, OutOfScopeError):
        return error_json(403, "forbidden", str(exc), request=request)
    if isinstance(exc, ConflictError):
        return error_json(409, "conflict", str(exc), request=request)
    if isinstance(exc, InvalidInputError):
        return error_json(422, "invalid_body", str(exc), request=request)
    log.error("request %s: unexpected query error", request_id(request), exc_info=exc)
    return error_json(500, "internal", "internal error", request=request)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    # The database's own text (table names, values, SQL) stays in the log.
    rid = request_id(request)
    if isinstance(exc, psycopg.DataError):
        # A value the database refused (out of its range): the caller's fault.
        log.info("request %s: database refused a value: %s", rid, exc)
        return error_json(
            422,
            "invalid_parameter",
            "a value is out of the range the database accepts",
            request=request,
        )
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        log.warning("request %s: database unavailable: %s", rid, exc)
        return error_json(
            503,
            "unavailable",
            "database unavailable, retry later",
            {"Retry-After": str(RETRY_AFTER_S)},
            request=request,
        )
    log.error("request %s: database error", rid, exc_info=exc)
    return error_json(500, "internal", "internal error", request=request)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request %s: unhandled error", request_id(request), exc_info=exc)
    return error_json(500, "internal", "internal error", request=request)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the contract's JSON shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    for exc_type in (NotFoundError, OutOfScopeError, ConflictError, InvalidInputError):
        app.add_exception_handler(exc_type, _query)
    # Every database error: DataError, OperationalError, and the rest of
    # psycopg.Error (ProgrammingError, IntegrityError...) whose text must not leak.
    app.add_exception_handler(psycopg.Error, _database)
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(Exception, _unexpected)
