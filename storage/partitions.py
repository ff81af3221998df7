"""Daily range partitions of `telemetry` on plain PostgreSQL.

Partitions are created ahead of time so that ingest never waits on DDL;
readings from clocks far off land in the default partition and are moved
into their day's partition when it is created. Partitions past the
retention period are dropped (TimescaleDB's retention policy does this on
the other flavour).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Yesterday is covered for devices whose clock runs a little behind; a week
# ahead means a missed housekeeping run (ingest runs it hourly) costs nothing.
DAYS_BEHIND = 1
DAYS_AHEAD = 7
_NAME_RE = re.compile(r"^telemetry_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"telemetry_p{day:%Y%m%d}"


def existing(conn: psycopg.Connection[Any]) -> set[date]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass
        """
    ).fetchall()
    days: set[date] = set()
    for (name,) in rows:
        match = _NAME_RE.match(name)
        if match:
            days.add(datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date())
    return days


def create_day(conn: psycopg.Connection[Any], day: date) -> None:
    """Create one day's partition, moving its rows out of the default partition."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    name = sql.Identifier(partition_name(day))
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ).format(name)
        )
        # Rows that arrived before the partition existed (clock skew).
        conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM telemetry_default WHERE ts >= %s AND ts < %s "
                "RETURNING *) INSERT INTO {} SELECT * FROM moved"
            ).format(name),
            (start, end),
        )
        conn.execute(
            sql.SQL(
                "ALTER TABLE telemetry ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
            ).format(name, sql.Literal(start), sql.Literal(end))
        )


def ensure(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    retention_days: int,
    behind: int = DAYS_BEHIND,
    ahead: int = DAYS_AHEAD,
) -> list[date]:
    """Create the missing partitions around `now` and drop expired ones."""
    have = existing(conn)
    today = now.astimezone(UTC).date()
    created = []
    for offset in range(-behind, ahead + 1):
        day = today + timedelta(days=offset)
        if day not in have:
            create_day(conn, day)
            created.append(day)
    cutoff = today - timedelta(days=retention_days)
    for day in sorted(have):
        if day < cutoff:
            log.info("dropping expired telemetry partition %s", partition_name(day))
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition_name(day))))
    return created
