"""The reject store (contract section 3): bad input kept for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from storage.queries.common import Conn, Scope, Where


async def list_rejects(
    conn: Conn,
    *,
    scope: Scope,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Rejects newest first ((received_at, id) descending), after a keyset position.

    A limited scope sees the rejects published on its sites' topics, except
    those of a device, or a gateway topic naming a device, registered at
    another site (a site mismatch carries that other site's data, or names it).
    """
    where = Where()
    if scope.sites is not None:
        where.add(
            "r.site_id = ANY(%(scope_sites)s::text[]) AND NOT EXISTS ("
            "SELECT 1 FROM devices d WHERE d.id IN (r.device_id, CASE WHEN "
            "split_part(r.topic, '/', 4) = 'gateway' THEN split_part(r.topic, '/', 5) END) "
            "AND d.site_id <> ALL(%(scope_sites)s::text[]))",
            scope_sites=list(scope.sites),
        )
    where.eq("r.reason", "reason", reason)
    if since is not None:
        where.add("r.received_at >= %(since)s", since=since)
    if until is not None:
        where.add("r.received_at < %(until)s", until=until)
    if after is not None:
        where.add(
            "(r.received_at, r.id) < (%(after_at)s, %(after_id)s)",
            after_at=after[0],
            after_id=after[1],
        )
    where.params["limit"] = limit
    cur = await conn.execute(
        sql.SQL(
            "SELECT r.id, r.received_at, r.topic, r.reason, r.payload, r.detail, r.device_id, "
            "coalesce(r.payload_size, length(r.payload)) AS payload_size "
            "FROM rejects r {where} ORDER BY r.received_at DESC, r.id DESC LIMIT %(limit)s"
        ).format(where=where.clause()),
        where.params,
    )
    return await cur.fetchall()


async def reject_counts(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT reason, count FROM reject_counts ORDER BY reason")
    return {row["reason"]: row["count"] for row in await cur.fetchall()}
