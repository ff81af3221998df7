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
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.queries import ConflictError, InvalidInputError, NotFoundError, OutOfScopeError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str


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
    503: "unavailable",
}

# Documented on every operation so that the OpenAPI is the whole truth.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorResponse, "description": "Role or site not allowed"},
    422: {"model": ErrorResponse, "description": "Bad parameter or body (the message names it)"},
    503: {"model": ErrorResponse, "description": "Database unavailable"},
}


def error_json(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _location(loc: tuple[Any, ...]) -> str:
    where = loc[0] if loc else "body"
    rest = ".".join(str(part) for part in loc[1:])
    if where == "body":
        return f"body {rest}" if rest else "body"
    return f"{where} parameter {rest!r}"


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    code = "invalid_body" if loc[:1] == ("body",) else "invalid_parameter"
    message = f"{_location(loc)}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_json(422, code, message)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status, exc.code, exc.message, exc.headers)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    return error_json(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _query(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return error_json(404, "not_found", str(exc))
    if isinstance(exc, OutOfScopeError):
        return error_json(403, "forbidden", str(exc))
    if isinstance(exc, ConflictError):
        return error_json(409, "conflict", str(exc))
    if isinstance(exc, InvalidInputError):
        return error_json(422, "invalid_body", str(exc))
    log.exception("unexpected query error", exc_info=exc)
    return error_json(500, "internal", "internal error")


async def _database(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, psycopg.DataError):
        # Input the database refused (a value out of its range): the caller's fault.
        log.info("database refused a value: %s", exc)
        return error_json(422, "invalid_parameter", f"value refused by the database: {exc}")
    log.warning("database unavailable: %s", exc)
    return error_json(503, "unavailable", "database unavailable")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_json(500, "internal", "internal error")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the contract's JSON shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    for exc_type in (NotFoundError, OutOfScopeError, ConflictError, InvalidInputError):
        app.add_exception_handler(exc_type, _query)
    app.add_exception_handler(psycopg.DataError, _database)
    app.add_exception_handler(psycopg.OperationalError, _database)
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(Exception, _unexpected)
