"""/api/v1/devices/{id}/telemetry: raw readings or time buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api import render
from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, BadParameter, ErrorResponse, TooManyPoints
from api.jsonbody import JsonRoute
from api.params import (
    DEFAULT_LIMIT,
    Cursor,
    Instant,
    Limit,
    check_range,
    decode_cursor,
    encode_cursor,
    from_micros,
    micros,
    parse_instant,
    time_key,
)
from api.routers.devices import DeviceId
from api.schemas import TelemetryPage
from storage.queries import devices as device_q
from storage.queries import telemetry as telemetry_q
from storage.queries.telemetry import BUCKET_ORIGIN

router = APIRouter(
    prefix="/api/v1/devices", tags=["telemetry"], responses=ERROR_RESPONSES, route_class=JsonRoute
)

BucketName = Literal["1m", "5m", "1h", "1d"]
BUCKETS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# The hard cap on buckets in one query's range: a week of 1-minute buckets
# (or ~27 years of days). Wider ranges must choose a wider bucket, so no
# request makes the database aggregate an unbounded range.
MAX_BUCKETS = 7 * 24 * 60
# Bucketed queries without `since` cover the last day: a dashboard's default.
DEFAULT_BUCKET_RANGE = timedelta(days=1)
_ORIGIN = datetime.fromisoformat(BUCKET_ORIGIN)


def _floor(value: datetime, width: timedelta) -> datetime:
    return value - (value - _ORIGIN) % width


def _ceil(value: datetime, width: timedelta) -> datetime:
    floored = _floor(value, width)
    return floored if floored == value else floored + width


@router.get(
    "/{device_id}/telemetry",
    response_model=TelemetryPage,
    responses={404: {"model": ErrorResponse}},
    summary="Readings of a device, raw or in time buckets",
    description="Raw: items `{ts, seq, v}` with since <= ts < until, in `order` of (ts, seq). "
    "With `bucket`: items `{ts, v: {reading: {min, avg, max, n}}}` from the 1-minute "
    "aggregate, buckets aligned to UTC, range widened to whole buckets, ascending, known "
    f"readings only; a range of more than {MAX_BUCKETS} buckets is refused with 422 "
    "`too_many_points` (default range: the last 24 h).",
)
async def get_telemetry(
    device_id: DeviceId,
    conn: ConnDep,
    caller: CallerDep,
    since: Instant = None,
    until: Instant = None,
    bucket: Annotated[BucketName | None, Query(description="Aggregate into buckets")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="Raw readings only")] = "asc",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    since_at = parse_instant("since", since)
    until_at = parse_instant("until", until)
    check_range(since_at, until_at)
    floor = await device_q.history_floor(conn, scope=caller.scope, device_id=device_id)
    if floor is not None:
        # A manager sees nothing from before the device came to its site.
        since_at = floor if since_at is None else max(since_at, floor)
        if until_at is not None and until_at < since_at:
            until_at = since_at
    if bucket is None:
        kind = f"telemetry-{order}"
        after = time_key(kind, cursor, int)
        rows = await telemetry_q.raw_readings(
            conn,
            device_id=device_id,
            since=since_at,
            until=until_at,
            after=after,
            descending=order == "desc",
            limit=limit,
        )
        next_cursor = (
            encode_cursor(kind, micros(rows[-1].ts), rows[-1].seq) if len(rows) == limit else None
        )
        return render.page(map(render.reading, rows), next_cursor, bucket=None)
    width = BUCKETS[bucket]
    upto = until_at or datetime.now(UTC)
    try:
        end = _ceil(upto, width)
        # Without `since`: every bucket touching the last day (not just the day's
        # own bucket, which would hide yesterday evening's readings just after midnight).
        start = _floor(since_at or upto - DEFAULT_BUCKET_RANGE, width)
        if floor is not None:
            start = max(start, _ceil(floor, width))  # whole buckets after the move only
    except OverflowError as exc:
        raise BadParameter("until", "out of the supported range (years 1-9999)") from exc
    if (end - start) / width > MAX_BUCKETS:
        raise TooManyPoints(
            "since",
            f"the range spans {(end - start) // width} buckets of {bucket}; at most "
            f"{MAX_BUCKETS}: narrow since/until or use a wider bucket",
        )
    key = decode_cursor(cursor, f"buckets-{bucket}", (int,))
    if key is not None:
        try:
            start = max(start, _floor(from_micros(key[0]), width))
        except (OverflowError, ValueError) as exc:
            raise BadParameter("cursor", "not a cursor returned by this endpoint") from exc
    # A page starts at the first bucket with data (never an empty page with a
    # cursor), and a cursor is given only when more data follows.
    first = await telemetry_q.first_minute(conn, device_id=device_id, since=start, until=end)
    if first is None:
        return render.page([], None, bucket=bucket)
    start = _floor(first, width)
    buckets = await telemetry_q.bucketed(
        conn, device_id=device_id, width=width, since=start, until=end, limit=limit
    )
    scanned_to = min(end, start + width * limit)
    more = scanned_to < end and (
        await telemetry_q.first_minute(conn, device_id=device_id, since=scanned_to, until=end)
        is not None
    )
    next_cursor = encode_cursor(f"buckets-{bucket}", micros(scanned_to)) if more else None
    return render.page(map(render.bucket, buckets), next_cursor, bucket=bucket)
