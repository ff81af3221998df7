"""Query parameter parsing shared by the routers: instants, cursors, limits."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Query, Request

from api.errors import BadParameter
from firesafe.contract import ID_PATTERN

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_RE = re.compile(r"^-?[0-9]{1,15}$")  # (\d would take full-width digits)

# Contract section 6: limit 1-1000, default 100.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

ID_REGEX = f"^{ID_PATTERN}$"
# Building, floor and zone names: free text, but no control characters
# (PostgreSQL text cannot hold NUL) and bounded.
NAME_REGEX = r"^[^\x00-\x1f\x7f]{1,128}$"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1-1000)")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page (opaque)"),
]
Instant = Annotated[
    str | None,
    Query(
        max_length=64,
        description="ISO 8601 (UTC when no offset is given) or epoch milliseconds",
        examples=["2026-11-25T22:31:06.123Z", "1764072000123"],
    ),
]
SiteParam = Annotated[str | None, Query(pattern=ID_REGEX, description="Site id")]
DeviceParam = Annotated[str | None, Query(pattern=ID_REGEX, description="Device id")]
NameParam = Annotated[str | None, Query(pattern=NAME_REGEX)]


def parse_instant(name: str, value: str | None) -> datetime | None:
    """ISO 8601 or epoch milliseconds -> aware UTC datetime; 422 naming `name` if neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        if _EPOCH_MS_RE.match(text):
            return EPOCH + timedelta(milliseconds=int(text))
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError) as exc:
        raise BadParameter(name, f"{value!r} is neither ISO 8601 nor epoch milliseconds") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadParameter(name, f"{value!r} is out of range") from exc


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise BadParameter("since", "must not be after until")


def micros(value: datetime) -> int:
    """Exact integer microseconds since the epoch (the database's precision)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def encode_cursor(kind: str, *key: Any) -> str:
    """An opaque keyset cursor: the endpoint's tag and the last row's key."""
    raw = orjson.dumps([kind, *key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None, kind: str, types: tuple[type, ...]) -> list[Any] | None:
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise BadParameter("cursor", "not a cursor returned by this endpoint") from exc
    if (
        not isinstance(data, list)
        or len(data) != len(types) + 1
        or data[0] != kind
        or not all(type(v) is t for v, t in zip(data[1:], types, strict=True))
        or any(type(v) is str and "\x00" in v for v in data)  # no id holds one
    ):
        raise BadParameter("cursor", "not a cursor returned by this endpoint")
    return data[1:]


def time_key(kind: str, cursor: str | None, second: type) -> tuple[datetime, Any] | None:
    """Decode a (timestamp, tiebreaker) cursor."""
    key = decode_cursor(cursor, kind, (int, second))
    if key is None:
        return None
    try:
        return from_micros(key[0]), key[1]
    except OverflowError as exc:
        raise BadParameter("cursor", "not a cursor returned by this endpoint") from exc


def single_valued_query(request: Request) -> None:
    """Every query parameter at most once (none of them is a list): with
    `?site=A&site=B` only the last was used, silently (an outside check)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise BadParameter(name, "given more than once")
        seen.add(name)
