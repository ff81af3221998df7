"""The API's errors and their translation to `{"error": {"code", "message"}}` responses.

Routers and dependencies raise `ApiError`s; the query layer raises
`storage.queries` errors; both are turned into JSON here, at the edge.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from functools import cache, lru_cache
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from firesafe import i18n
from firesafe.i18n import N_
from storage.queries import ConflictError, InvalidInputError, NotFoundError, OutOfScopeError

log = logging.getLogger(__name__)

# The language of the request being served (from Accept-Language), for the
# error handlers here and the label fields of api.schemas.
request_lang: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_lang", default=i18n.DEFAULT_LANG
)


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

    def __init__(self, name: str, message: str, *, where: str = "query") -> None:
        super().__init__(f"{where} parameter {name!r}: {message}")
        self.name = name


class TooManyPoints(BadParameter):
    code = "too_many_points"


class BadBody(ApiError):
    status = 422
    code = "invalid_body"


class BodyNotJson(StarletteHTTPException):
    """A JSON body the API does not accept (422 invalid_body, api.jsonbody). An
    HTTPException: FastAPI's body reading passes those on (any other error
    there becomes a bare 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


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
    408: "request_timeout",
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


def unavailable(request: Request, *, close: bool = False) -> JSONResponse:
    """The 503 of a database that is down or does not answer; `close` when the
    request's body may be left unread on the connection."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if close:
        headers["Connection"] = "close"
    return error_json(
        503, "unavailable", "database unavailable, retry later", headers, request=request
    )


def body_timeout(request: Request, seconds: float) -> JSONResponse:
    """The 408 of a request whose announced body did not arrive in time (the
    connection closes: the rest of the body may still come)."""
    return error_json(
        408,
        "request_timeout",
        f"the request body did not arrive within {seconds:g} s",
        {"Connection": "close"},
        request=request,
    )


def request_id(request: Request) -> str | None:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid


# --- message rendering in the caller's language ---------------------------------
#
# Routers and queries raise with English text (the msgid); the message is put
# in the caller's language here, by matching it against these templates (the
# English msgids of the catalogue, `{name}` standing for a value that is kept
# as it is, `{detail}` for text that is itself translated). A message no
# template matches gets its code's generic sentence in that language, the
# English text after it, so nothing the caller needs is lost.
_TEMPLATES: tuple[str, ...] = (
    N_("{message} (and {count} more)"),  # first: the count is not part of any message
    # The validators' own sentences (api/schemas.py, api/routers/*.py), first:
    # they are more specific than the generic "{field}: {detail}" below.
    N_("routes are only for evac devices"),
    # The command line's own sentences (firesafe/runtime.py, firesafe/settings.py).
    N_(
        "port {port} on {host} is already in use: stop what holds it, or choose another "
        "with FIRESAFE_API_PORT (or --api-port)"
    ),
    N_(
        "another `firesafe up` (pid {pid}) is using {path}: stop it first, or give this "
        "one its own FIRESAFE_DATA_DIR"
    ),
    N_(
        "FIRESAFE_ADMIN_TOKEN is too short ({count} characters, at least {minimum}): "
        "generate one with `openssl rand -hex 32`"
    ),
    N_(
        "FIRESAFE_ADMIN_TOKEN is a {placeholder} placeholder: generate one with "
        "`openssl rand -hex 32`"
    ),
    # The reasons ingest gives for a reject (ingest/decode.py, ingest/gateway_rejects.py,
    # ingest/service.py), read by device makers in `detail_label` of /api/v1/rejects.
    # Before the generic "{location}: {detail}" and "{value} is out of range" below.
    # (After the registry's own, longer sentence that starts as one of them.)
    N_(
        "device {device} is registered at site {site}, not {other}: moving a device "
        "between sites needs move_site=true (its history before the move stays hidden "
        "from the new site's managers)"
    ),
    N_("reading {index} of the batch: {detail}"),
    N_("{detail} [source {source}]"),
    N_("unknown topic type {what}"),
    N_("site and device must match {pattern}"),
    N_("device {device} is not registered"),
    N_("device {device} is registered at site {registered}, not {site}"),
    N_("gateway {gateway} is registered at site {registered}, not {site}"),
    N_("not a topic of contract v1"),
    N_("{size} bytes > {limit}"),
    N_("`ts` is missing (an integer, epoch milliseconds)"),
    N_("`ts` {ts} is not an integer (epoch milliseconds)"),
    N_("`ts` {ts} is outside 2000-01-01..2100-01-01 (epoch milliseconds)"),
    N_("`ts` {ts} looks like epoch seconds: send epoch milliseconds ({millis})"),
    N_("`type` is missing (one of {device_kind} events {events})"),
    N_("key {key} is given twice (JSON keeps one)"),
    N_("`seq` is missing (an integer in 0..2^32-1)"),
    N_("`seq` {seq} is not an integer in 0..2^32-1"),
    N_("`v` must be an object of reading name -> number"),
    N_("`v` is missing (an empty object for a heartbeat)"),
    N_("reading {name} is not finite"),
    N_("reading {name} is out of range (|value| > 1e12)"),
    N_("reading {name} is out of range"),
    N_("reading {name} is not a number ({type})"),
    N_("reading name contains a NUL character"),
    N_("reading {index} is not an object"),
    N_("reading {index}: `device` must be a device id"),
    N_("not valid UTF-8 JSON: {error}"),
    N_("payload must be a JSON object"),
    N_("event type {type} is not one of {device_kind} events {events}"),
    N_("`detail` must be a string without NUL"),
    N_("status must be `online` or `offline`"),
    N_("`readings` must be a list"),
    N_("an event cannot travel in a batch (v1): publish it on the device's event topic"),
    N_("not a gateway reject"),
    N_("unknown reason {reason}"),
    N_("could not be processed: {error}"),
    # The GB/T 26875.3 gateway's rejects (gateways/gb26875): what a fire panel's
    # transmission device sent that could not be taken, read by operators in
    # Chinese. A detail is clauses joined by "; " (see `_clauses`); these are
    # the wrappers around it, then the clauses, then the words inside them.
    N_("{detail} (serial {serial}, from {peer})"),
    N_(
        "summary: {items} more bad input item(s) ({kinds}), {size} byte(s) in all, over "
        "the limit of {limit} rejects per {window} s of one connection; first {count} "
        "bytes kept (from {peer})"
    ),
    N_("{reason}: {detail} (from {peer})"),
    N_(
        "source address {address} is not registered: register a device of kind uitd "
        "with this address"
    ),
    N_("it carries {alarms}, NOT RAISED"),
    N_("it carries {alarms}, raised"),
    N_("it carries {alarms}"),
    N_("FIRE ALARMS: {names}"),
    N_("MANUAL ALARMS: {names}"),
    N_("FAULTS: {names}"),
    N_("{where} by operator {operator}"),
    N_("{name} and {more} more"),  # (before "point {point}", which would take it all)
    N_("point {point}"),
    N_("system {system}"),
    N_("the transmission device"),
    N_("device id {id} does not fit {pattern} (shorten the uitd id)"),
    N_(
        "transmission device {uitd} has {have} registered point(s); {count} more would "
        "pass the limit of {limit} (GB 50116: 3,200 per controller)"
    ),
    N_("application data of {size} byte(s): no type and count"),
    N_("application data type {type} is not decoded by this gateway"),
    N_("command {command}"),
    N_("type {type} with {count} object(s) of {size} bytes needs {need} bytes, got {got}"),
    N_(
        "the {taken} complete object(s) in it were taken, and object {number}, cut short "
        "after {cut} of its {size} bytes, from its head (no time label: the frame's time)"
    ),
    N_("the {taken} complete object(s) in it were taken"),
    N_("its second status byte missing (power fault and the bits above it kept as last known)"),
    N_(
        "object {number}, cut short after {cut} of its {size} bytes, before it says what "
        "it reports: it MAY CARRY A FIRE ALARM OR A FAULT, check the panel"
    ),
    N_(
        "object {number}, cut short after {cut} of its {size} bytes, before it says what "
        "it reports: what it reports is lost"
    ),
    N_("checksum {got}, computed {want}"),
    N_("length {length} > {limit}"),
    N_("a complete frame starts {count} bytes later"),
    N_("no `##` where length {length} says the frame ends"),
    N_("{size} byte(s) outside any frame (a run already reported goes on), {tail}"),
    N_("{size} byte(s) outside any frame (a run already reported goes on)"),
    N_("{size} byte(s) outside any frame, {tail}"),
    N_("{size} byte(s) outside any frame"),
    N_("{count} false frame start(s) (first: {first}), {tail}"),
    N_("{count} false frame start(s) (first: {first})"),
    N_("the last {count} an incomplete frame when the stream ended"),
    N_("first {count} bytes kept"),
    N_("a uitd needs its `address` (12 hex digits)"),
    N_(
        "a uitd id must not end in `_` and digits (its points' ids would collide with "
        "another uitd's)"
    ),
    N_("address and utc_offset_min are only for uitd devices"),
    N_("thresholds.{name}: not a threshold of a {kind} device (known: {allowed})"),
    N_("thresholds.{name}: must not be negative (got {value})"),
    N_("thresholds.{name}: must be within {range}"),
    N_(
        "thresholds.drift_limit: at most {fraction} x obscuration_alarm ({cap}): EN 54-7 4.8 "
        "lets drift compensation raise the response threshold by a factor of 1.6 at most"
    ),
    N_("the name {name} is reserved (the system's own actor)"),
    N_("expires_at must be in the future"),
    N_("a manager token needs at least one site"),
    N_("the site id {site} is reserved (gateways' own rejects)"),
    N_("sites apply to manager tokens only (admin and operator see all)"),
    N_("a webhook target needs url (and no address)"),
    N_("an email target needs address (and no url)"),
    N_("template, content_type and secret are for webhooks"),
    N_("content_type is only for a template"),
    N_("escalate_after_s and escalate_to go together"),
    N_("sites: give at least one site, or leave it out for every site"),
    N_("unknown time zone {value} (an IANA name like Asia/Shanghai)"),
    N_("query parameter {name}: {detail}"),
    N_("path parameter {name}: {detail}"),
    N_("header parameter {name}: {detail}"),
    N_("{value} is neither ISO 8601 nor epoch milliseconds"),
    N_("{value} is out of range"),
    N_("must not be after until"),
    N_("not a cursor returned by this endpoint"),
    N_("given more than once"),
    N_("the request body ended early"),
    N_("must not contain a NUL character"),
    N_("the request body did not arrive within {seconds} s"),
    N_("must be an alarm_log id (a non-negative integer)"),
    N_(
        "the range spans {count} buckets of {bucket}; at most {max}: "
        "narrow since/until or use a wider bucket"
    ),
    N_("the {role} role may not do this (needs {roles})"),
    N_("site {site} not found"),
    N_("alarm {alarm} not found"),
    N_("device {device} not found"),
    N_("token {token} not found"),
    N_("alarm {alarm} is already cleared"),
    N_("alarm {alarm} is already {verdict}"),
    N_("alarm {alarm} is a {type} alarm: only fire and electrical alarms are verified"),
    N_("address {address} is given twice"),
    N_("address {address} belongs to device {device}"),
    N_("the address was registered for another device at the same moment"),
    N_(
        "device {device} was registered at another site meanwhile: "
        "moving a device between sites needs move_site=true"
    ),
    N_("site {site} is outside the caller's sites"),
    N_("alarm {alarm} is outside the caller's sites"),
    N_("device {device} is outside the caller's sites"),
    N_("missing bearer token (Authorization: Bearer <token>)"),
    N_("unknown or revoked token"),
    N_("unknown, revoked or expired token"),
    N_("out of the supported range (years 1-9999)"),
    N_("{name} is reserved (the system's own actor)"),
    N_(
        "device {device} is listed at sites {site} and {other}: moving a device between "
        "sites needs move_site=true"
    ),
    N_("CSV header lacks column(s) {columns}"),
    N_("CSV header has unknown column(s) {columns}; known: {known}"),
    N_("CSV header names column(s) {columns} more than once"),
    N_("more cells than the header has columns"),
    N_("CSV line {line}: {detail}"),
    # A body or cell that is not JSON (api.jsonbody): before "{field}: {detail}".
    N_("not valid JSON: {detail} at line {line}, column {column}"),
    N_("not valid JSON: {detail}"),
    N_("a value was expected"),
    N_("a key in double quotes was expected"),
    N_("a colon was expected after the key"),
    N_("a comma or the end of the object or list was expected"),
    N_("a comma before the end of the object or list"),
    N_("a string is not closed"),
    N_("a control character inside a string (escape it)"),
    N_("an invalid escape in a string"),
    N_("more text after the value"),
    N_("a syntax error"),
    N_("nested too deeply"),
    N_("NaN and Infinity are not JSON numbers"),
    N_("a number with too many digits"),
    N_("an unpaired surrogate escape in a string"),
    N_("not UTF-8 (byte {offset})"),
    N_("duplicate key {key} in an object"),
    N_("not a number: {value}"),
    N_("unknown placeholder {placeholder} (known: {known})"),
    N_("no such alarm field {placeholder} (known: {known})"),
    N_("a cell is longer than {limit} characters"),
    N_("the line cannot be read as CSV"),
    N_("at most {count} devices per request"),
    N_("device {id} appears more than once in the request"),
    N_("request body larger than {count} bytes"),
    N_("this token already has {count} open streams (close one first)"),
    N_("CSV body is not UTF-8"),
    N_(
        "zone {zone} is not a zone of the device's building and floor "
        "(register a device in it first, or in the same request)"
    ),
    N_("unsupported language {lang} (use one of {languages})"),
    N_("body {path}: {detail}"),
    N_("a manager's rule must name its sites (every site is for admins)"),
    N_("sites outside the token's sites: {sites}"),
    N_(
        "webhook host {host} resolves to a non-public address ({addresses}); "
        "only an admin may add such a target"
    ),
    N_("webhook host {host} does not resolve (no such host)"),
    N_("webhook host {host} did not resolve: the name servers did not answer (try again)"),
    N_("webhook url {url} has no host"),
    N_("webhook url {url} has a bad host or port"),
    N_("target {target} not found"),
    N_("rule {rule} not found"),
    N_("target id {target} is taken by another owner"),
    N_("rule id {rule} is taken by another owner"),
    N_("target {target} is used by a rule: delete or change the rule first"),
    N_("no target {target}"),
    N_("body: {detail}"),
    N_("{field}: {detail}"),
    N_("value refused by the database: {value}"),
    N_("database unavailable"),
    N_("internal error"),
    N_("invalid request"),
    N_("Not Found"),
    N_("Method Not Allowed"),
    N_("body"),
    N_("body {path}"),
    N_("query parameter {name}"),
    N_("path parameter {name}"),
    N_("header {name}"),
    N_("{location}: {detail}"),
    # Pydantic's own messages, as routers pass them on inside their text.
    N_("Field required"),
    N_("Extra inputs are not permitted"),
    N_("Input should be a valid integer, unable to parse string as an integer"),
    N_("Input should be a valid integer"),
    N_("Input should be a valid number, unable to parse string as a number"),
    N_("Input should be a valid number"),
    N_("Input should be a finite number"),
    N_("Input should be a valid boolean"),
    N_("Input should be a valid string"),
    N_("Input should be a valid list"),
    N_("Input should be a valid dictionary"),
    N_("Input should be an object"),
    N_("Input should be greater than or equal to {limit}"),
    N_("Input should be less than or equal to {limit}"),
    N_("Input should be greater than {limit}"),
    N_("Input should be less than {limit}"),
    N_("Input should be {choices}"),
    N_("String should match pattern {pattern}"),
    N_("String should have at least {count} characters"),
    N_("String should have at most {count} characters"),
    N_("List should have at most {count} items after validation, not {actual}"),
    N_("Value error, {detail}"),
)
# Placeholders whose captured text is translated too (the rest is kept verbatim).
_NESTED = frozenset({"detail", "message", "alarms", "where", "name", "tail", "first"})
# Placeholders holding a code of a label vocabulary (`firesafe.i18n`).
_CODES = {"verdict": "verdict", "device_kind": "kind"}
# Placeholders holding a list of codes joined by `or_list` ("admin or operator"),
# or by pydantic ("'smoke', 'heat' or 'evac'"): the codes are kept, the words
# between them are the caller's.
_OR_LISTS = frozenset({"roles", "choices"})
_OR_LIST_SPLIT = re.compile(r", | or ")
# Placeholders holding names joined by ", ", each translated on its own.
_NAME_LISTS = frozenset({"names"})
# What some placeholders may hold, where "anything" would swallow the next clause.
_ALARM_KINDS = r"(?:FIRE ALARMS|MANUAL ALARMS|FAULTS): [^;]+?"
_SHAPES: dict[str, str] = {
    "names": r"[^;]+?",
    "alarms": rf"{_ALARM_KINDS}(?:; {_ALARM_KINDS})*",
    "reason": r"[a-z_]+",
    "serial": r"\d+",
    "operator": r"\d+",
    "more": r"\d+",
    "where": r"system \d+/\d+|the transmission device",
    "name": r"[^;:]+?",
}
# Inside one clause, a placeholder holds no clause separator.
_IN_A_CLAUSE = r"(?:(?!; ).)+?"
# Catch-all templates: tried last, after a detail's clauses were tried one by one.
_CATCH_ALL = frozenset({"{field}: {detail}", "{location}: {detail}"})
_CLAUSE = "; "
LOCALIZED_KEPT = 8192
# A gateway's detail has a handful of clauses; a caller's value full of "; "
# must not cost a template pass per run of them.
MAX_CLAUSES = 8

# Generic sentence per error code, when no template matches.
_GENERIC: dict[str, str] = {
    "bad_request": N_("Bad request"),
    "unauthorized": N_("Not authenticated"),
    "forbidden": N_("Not allowed"),
    "not_found": N_("Not found"),
    "method_not_allowed": N_("Method not allowed"),
    "request_timeout": N_("Request timeout"),
    "conflict": N_("Conflict with the current state"),
    "too_large": N_("Request too large"),
    "unsupported_media_type": N_("Unsupported media type"),
    "invalid_parameter": N_("Invalid parameter"),
    "too_many_points": N_("Too many points requested"),
    "invalid_body": N_("Invalid request body"),
    "unavailable": N_("Service unavailable"),
    "internal": N_("Internal error"),
}

# Pydantic's error types, in words (its English `msg` is used for English).
_PYDANTIC: dict[str, str] = {
    "missing": N_("Field required"),
    "extra_forbidden": N_("Extra field not permitted"),
    "int_parsing": N_("Input should be an integer"),
    "int_type": N_("Input should be an integer"),
    "int_from_float": N_("Input should be an integer"),
    "float_parsing": N_("Input should be a number"),
    "float_type": N_("Input should be a number"),
    "finite_number": N_("Input should be a finite number"),
    "bool_parsing": N_("Input should be true or false"),
    "bool_type": N_("Input should be true or false"),
    "string_type": N_("Input should be a string"),
    "string_too_short": N_("Input is too short"),
    "string_too_long": N_("Input is too long"),
    "string_pattern_mismatch": N_("Input does not match the required pattern"),
    "too_short": N_("Too few items"),
    "too_long": N_("Too many items"),
    "greater_than": N_("Input is below the allowed range"),
    "greater_than_equal": N_("Input is below the allowed range"),
    "less_than": N_("Input is above the allowed range"),
    "less_than_equal": N_("Input is above the allowed range"),
    "literal_error": N_("Input is not one of the allowed values"),
    "enum": N_("Input is not one of the allowed values"),
    "list_type": N_("Input should be a list"),
    "dict_type": N_("Input should be an object"),
    "model_type": N_("Input should be an object"),
    "model_attributes_type": N_("Input should be an object"),
    "json_invalid": N_("Invalid JSON"),
    "json_type": N_("Invalid JSON"),
    "datetime_parsing": N_("Input is not a valid date and time"),
    "datetime_from_date_parsing": N_("Input is not a valid date and time"),
    "value_error": N_("Invalid value"),
    "assertion_error": N_("Invalid value"),
    "union_tag_invalid": N_("Input is not one of the allowed values"),
}
_PYDANTIC_FALLBACK = N_("Invalid value")


@cache
def _compiled(clauses: bool = False) -> tuple[tuple[re.Pattern[str], str, str, str], ...]:
    """Each template as a pattern, with the literal text it starts and ends
    with (a message that does not is skipped without the pattern: a list of
    rejects in Chinese ran thousands of them per detail). With `clauses`, a
    placeholder kept verbatim spans no "; " unless its shape says so (a
    template that covers several clauses holds the separators itself; one
    translated in turn may)."""
    out = []
    for template in _TEMPLATES:
        pattern = re.escape(template)
        for name in set(re.findall(r"\{(\w+)\}", template)):
            verbatim = clauses and name not in _NESTED
            shape = _SHAPES.get(name, _IN_A_CLAUSE if verbatim else ".+?")
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{shape})", 1)
        head = template.split("{", 1)[0]
        tail = template.rsplit("}", 1)[-1] if "}" in template else template
        out.append((re.compile(pattern, re.DOTALL), template, head, tail))
    return tuple(out)


@cache
def _by_first_character(
    clauses: bool,
) -> dict[str, tuple[tuple[re.Pattern[str], str, str, str], ...]]:
    """The templates a message may match, by its first character, in their
    order: those starting with that character and those starting with a
    placeholder ("" lists only the latter)."""
    entries = _compiled(clauses)
    firsts = {head[:1] for _, _, head, _ in entries}
    return {c: tuple(e for e in entries if e[2][:1] in ("", c)) for c in firsts | {""}}


@lru_cache(maxsize=LOCALIZED_KEPT)
def localize(message: str, lang: str) -> str | None:
    """`message` (English) in `lang`, or None when no template matches it
    (remembered: a list of rejects repeats its details and their names)."""
    if lang == i18n.DEFAULT_LANG:
        return message
    text = _by_template(message, lang, catch_all=False, clauses=True)
    if text is None and _CLAUSE in message:
        text = _clauses(message, lang)
    if text is None and _CLAUSE in message:  # ("; " in a value the caller gave)
        text = _by_template(message, lang, catch_all=False)
    if text is None:
        text = _by_template(message, lang, catch_all=True)
    return text


def _by_template(message: str, lang: str, *, catch_all: bool, clauses: bool = False) -> str | None:
    table = _by_first_character(clauses)
    for pattern, template, head, tail in table.get(message[:1], table[""]):
        if (template in _CATCH_ALL) != catch_all:
            continue
        if not (message.startswith(head) and message.endswith(tail)):
            continue
        m = pattern.fullmatch(message)
        if m is None:
            continue
        values: dict[str, str] = {}
        for name, value in m.groupdict().items():
            nested = localize(value, lang) if name in _NESTED else None
            if name in _CODES:  # a code of a vocabulary: its label
                nested = i18n.label(_CODES[name], value, lang)
            if name in _OR_LISTS:
                nested = or_list(_OR_LIST_SPLIT.split(value), lang)
            if name in _NAME_LISTS:
                nested = _joined([localize(n, lang) or n for n in value.split(", ")], lang)
            values[name] = nested if nested is not None else value
        return i18n.translate(template, lang).format(**values)
    return None


def _clauses(message: str, lang: str) -> str | None:
    """A detail made of clauses joined by "; " (a gateway's reject says what the
    frame carried, then what was wrong with it), translated clause by clause,
    the longest run of clauses one template covers first; None unless every
    clause is covered (a template may hold "; " itself)."""
    parts = message.split(_CLAUSE)
    if len(parts) > MAX_CLAUSES:
        return None
    out: list[str] = []
    i = 0
    while i < len(parts):
        for j in range(len(parts) - (i == 0), i, -1):  # (the whole was tried)
            text = _by_template(_CLAUSE.join(parts[i:j]), lang, catch_all=False, clauses=True)
            if text is not None:
                out.append(text)
                i = j
                break
        else:
            return None
    head = out[0]
    for clause in out[1:]:
        head = i18n.translate("{items}; {item}", lang, items=head, item=clause)
    return head


def _joined(items: Sequence[str], lang: str) -> str:
    """Names as "a, b, c" in `lang`."""
    head = items[0]
    for item in items[1:]:
        head = i18n.translate("{items}, {item}", lang, items=head, item=item)
    return head


def or_list(items: Sequence[str], lang: str = i18n.DEFAULT_LANG) -> str:
    """Codes as "a or b", "a, b or c" in `lang` (the codes themselves unchanged)."""
    if len(items) < 2:
        return "".join(items)
    return i18n.translate(
        "{items} or {last}", lang, items=_joined(items[:-1], lang), last=items[-1]
    )


N_("{items}, {item}")
N_("{items} or {last}")
N_("{items}; {item}")


def render_message(code: str, message: str, lang: str) -> str:
    """The message of an error response in the caller's language."""
    return _localized_or(_GENERIC.get(code, "Bad request"), message, lang)


def _localized_or(generic: str, message: str, lang: str) -> str:
    """`message` in `lang`; when no template matches it, the `generic` sentence
    in `lang` with the English text after it, so nothing the caller needs is lost."""
    text = localize(message, lang)
    if text is not None:
        return text
    words = i18n.translate(generic, lang)
    return i18n.translate("{generic}: {message}", lang).format(generic=words, message=message)


N_("{generic}: {message}")


def error_json(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    request: Request | None = None,
    lang: str | None = None,
) -> JSONResponse:
    text = render_message(code, message, lang or request_lang.get())
    error = {"code": code, "message": text}
    rid = request_id(request) if request is not None else None
    if rid:
        error["request_id"] = rid
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def field_path(parts: Sequence[Any]) -> str:
    """A field's dotted path, without pydantic's names for the union member it
    tried (`function-after[_known_thresholds(), DeviceIn]`, `list[DeviceIn]`)."""
    return ".".join(str(p) for p in parts if not (isinstance(p, str) and "[" in p))


def _path(loc: tuple[Any, ...]) -> str:
    return field_path(loc[1:])


def _location(loc: tuple[Any, ...]) -> str:
    where = loc[0] if loc else "body"
    rest = _path(loc)
    if where == "body":
        return f"body {rest}" if rest else "body"
    return f"{where} parameter {rest!r}"


def _location_in(loc: tuple[Any, ...], lang: str) -> str:
    where = loc[0] if loc else "body"
    rest = _path(loc)
    if where == "body":
        return (
            i18n.translate("body {path}", lang, path=rest) if rest else i18n.translate("body", lang)
        )
    template = {"query": "query parameter {name}", "path": "path parameter {name}"}.get(
        str(where), "header {name}"
    )
    return i18n.translate(template, lang, name=repr(rest))


def what_is_wrong(error: Mapping[str, Any], lang: str) -> str:
    """What is wrong with the field, in `lang`: a validator's own sentence (without
    pydantic's "Value error, "), else pydantic's message or its type in words."""
    kind = str(error.get("type"))
    msg = str(error.get("msg", "invalid"))
    if kind == "value_error":
        return _localized_or(_PYDANTIC_FALLBACK, msg.removeprefix("Value error, "), lang)
    if lang == i18n.DEFAULT_LANG:
        return msg
    return i18n.translate(_PYDANTIC.get(kind, _PYDANTIC_FALLBACK), lang)


def most_specific(errors: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The error to name: the deepest (`[{"id": "X"}]` against "an object or a list
    of them" is "body 0.site: Field required", not "body: Input should be an
    object"); the first of equals. A JSON syntax error's location is a character
    offset, not a field: it is said in the message instead."""
    if not errors:
        return {"loc": (), "msg": "invalid request"}
    first = max(errors, key=lambda e: len(tuple(e.get("loc", ()))))
    if first.get("type") == "json_invalid":
        # (Bodies are parsed by api.jsonbody, whose errors say where in words;
        # this is the parser's own error, if one ever gets here: its English
        # reason is not passed on.)
        loc = tuple(first.get("loc", ()))
        return {
            "loc": loc[:1],
            "type": "value_error",
            "msg": "Value error, not valid JSON: a syntax error",
        }
    return first


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = most_specific(errors)
    loc = tuple(first.get("loc", ()))
    code = "invalid_body" if loc[:1] == ("body",) else "invalid_parameter"
    lang = request_lang.get()
    if lang == i18n.DEFAULT_LANG:
        message = f"{_location(loc)}: {what_is_wrong(first, lang)}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
    else:
        where, what = _location_in(loc, lang), what_is_wrong(first, lang)
        message = i18n.translate("{location}: {detail}", lang, location=where, detail=what)
        if len(errors) > 1:
            message = i18n.translate(
                "{message} (and {count} more)", lang, message=message, count=len(errors) - 1
            )
    # Already in the caller's language: not rendered again.
    error = {"code": code, "message": message}
    rid = request_id(request) if request is not None else None
    if rid:
        error["request_id"] = rid
    return JSONResponse({"error": error}, status_code=422)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status, exc.code, exc.message, exc.headers, request=request)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = (
        "invalid_body"
        if isinstance(exc, BodyNotJson)
        else _STATUS_CODES.get(exc.status_code, "error")
    )
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
        return unavailable(request)
    log.error("request %s: database error", rid, exc_info=exc)
    return error_json(500, "internal", "internal error", request=request)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client closed the connection before sending its whole body: nobody
    reads the answer, and it is no server error (no traceback in the log)."""
    log.info("request %s: the client disconnected before the end of its body", request_id(request))
    return error_json(400, "bad_request", "the request body ended early", request=request)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request %s: unhandled error", request_id(request), exc_info=exc)
    return error_json(500, "internal", "internal error", request=request)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_language(scope: Scope) -> str:
    """The language a request asks for (its Accept-Language), negotiated."""
    header = None
    for name, value in scope.get("headers", ()):
        if name == b"accept-language":
            header = value.decode("latin-1")
            break
    return i18n.negotiate_accept_language(header)


class LanguageMiddleware:
    """Sets `request_lang` from Accept-Language for the request's whole handling.

    Plain ASGI (no BaseHTTPMiddleware), so the value is visible to handlers,
    exception handlers and streamed responses alike.
    """

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lang = scope_language(scope)
        token = request_lang.set(lang)

        async def send_with_language(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # Which language the body speaks, and that caches must key on it.
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-language"
                ]
                headers.append((b"content-language", lang.encode("ascii")))
                headers.append((b"vary", b"Accept-Language"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_language)
        finally:
            request_lang.reset(token)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the contract's JSON shape."""
    app.add_middleware(LanguageMiddleware)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    for exc_type in (NotFoundError, OutOfScopeError, ConflictError, InvalidInputError):
        app.add_exception_handler(exc_type, _query)
    # Every database error: DataError, OperationalError, and the rest of
    # psycopg.Error (ProgrammingError, IntegrityError...) whose text must not leak.
    app.add_exception_handler(psycopg.Error, _database)
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
