"""Telemetry reads: raw readings and time buckets (from telemetry_1m)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from firesafe.contract import READINGS
from storage.queries.common import Conn

# date_bin origin: buckets are aligned to UTC midnight (a Monday-agnostic epoch).
BUCKET_ORIGIN = "2000-01-01T00:00:00Z"

_RAW_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in READINGS)


@dataclass(frozen=True, slots=True)
class Reading:
    ts: datetime
    seq: int
    v: dict[str, float]


@dataclass(frozen=True, slots=True)
class Aggregate:
    min: float
    max: float
    avg: float
    n: int


@dataclass(frozen=True, slots=True)
class Bucket:
    ts: datetime
    v: dict[str, Aggregate]


def reading_values(row: dict[str, Any]) -> dict[str, float]:
    """`v` rebuilt from the non-null reading columns and the unknown names in `extra`."""
    values: dict[str, float] = {}
    extra = row.get("extra")
    if isinstance(extra, dict):
        for name, value in extra.items():
            # Ingest stores only finite numbers; anything else is skipped, not guessed.
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
    for name in READINGS:
        value = row.get(name)
        if value is not None:
            values[name] = value
    return values


async def raw_readings(
    conn: Conn,
    *,
    device_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    descending: bool,
    limit: int,
) -> list[Reading]:
    """Readings with since <= ts < until in (ts, seq) order, after a keyset position."""
    conds = [sql.SQL("device_id = %(device)s")]
    params: dict[str, Any] = {"device": device_id, "limit": limit}
    if since is not None:
        conds.append(sql.SQL("ts >= %(since)s"))
        params["since"] = since
    if until is not None:
        conds.append(sql.SQL("ts < %(until)s"))
        params["until"] = until
    if after is not None:
        op = "<" if descending else ">"
        conds.append(sql.SQL(f"(ts, seq) {op} (%(after_ts)s, %(after_seq)s)"))
        params["after_ts"], params["after_seq"] = after
    order = "DESC" if descending else "ASC"
    query = sql.SQL(
        "SELECT ts, seq, {cols}, extra FROM telemetry WHERE {where} "
        "ORDER BY ts {order}, seq {order} LIMIT %(limit)s"
    ).format(cols=_RAW_COLUMNS, where=sql.SQL(" AND ").join(conds), order=sql.SQL(order))
    cur = await conn.execute(query, params)
    return [Reading(row["ts"], row["seq"], reading_values(row)) for row in await cur.fetchall()]


async def last_reading(conn: Conn, *, device_id: str) -> Reading | None:
    rows = await raw_readings(
        conn, device_id=device_id, since=None, until=None, after=None, descending=True, limit=1
    )
    return rows[0] if rows else None


def _bucket_columns() -> sql.Composable:
    parts = []
    for name in READINGS:
        parts.append(
            sql.SQL(
                "min({mn}) AS {mn}, max({mx}) AS {mx}, "
                "sum({av} * {n}) / NULLIF(sum({n}), 0) AS {av}, sum({n})::bigint AS {n}"
            ).format(
                mn=sql.Identifier(f"{name}_min"),
                mx=sql.Identifier(f"{name}_max"),
                av=sql.Identifier(f"{name}_avg"),
                n=sql.Identifier(f"{name}_n"),
            )
        )
    return sql.SQL(", ").join(parts)


_BUCKET_QUERY = sql.SQL(
    """
    SELECT date_bin(%(width)s::interval, bucket, %(origin)s::timestamptz) AS b, {cols}
    FROM telemetry_1m
    WHERE device_id = %(device)s AND bucket >= %(since)s AND bucket < %(until)s
    GROUP BY 1 ORDER BY 1
    """
).format(cols=_bucket_columns())


async def bucketed(
    conn: Conn,
    *,
    device_id: str,
    width: timedelta,
    since: datetime,
    until: datetime,
    limit: int,
) -> list[Bucket]:
    """Up to `limit` buckets of `width` (a multiple of 1 minute) whose start is in [since, until).

    Averages are weighted by each minute's sample count, so a bucket's
    average equals the average over its raw readings.
    """
    # Scan only the minutes this page can return.
    until = min(until, since + width * limit)
    cur = await conn.execute(
        _BUCKET_QUERY,
        {
            "width": width,
            "origin": BUCKET_ORIGIN,
            "device": device_id,
            "since": since,
            "until": until,
        },
    )
    buckets = []
    for row in await cur.fetchall():
        values = {
            name: Aggregate(
                row[f"{name}_min"], row[f"{name}_max"], row[f"{name}_avg"], row[f"{name}_n"]
            )
            for name in READINGS
            if row[f"{name}_n"]
        }
        buckets.append(Bucket(row["b"], values))
    return buckets[:limit]


async def first_minute(
    conn: Conn, *, device_id: str, since: datetime, until: datetime
) -> datetime | None:
    """The first minute in [since, until) with readings of the device, if any
    (so that a page of buckets starts where the data does, never empty)."""
    cur = await conn.execute(
        """
        SELECT bucket FROM telemetry_1m
        WHERE device_id = %(device)s AND bucket >= %(since)s AND bucket < %(until)s
        ORDER BY bucket LIMIT 1
        """,
        {"device": device_id, "since": since, "until": until},
    )
    row = await cur.fetchone()
    return None if row is None else row["bucket"]
