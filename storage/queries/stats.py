"""Figures for /metrics and the per-site summary."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from storage.queries.common import Conn, Scope, Where


async def open_alarm_counts(conn: Conn) -> list[dict[str, Any]]:
    """Open (not cleared) alarms by type and verdict, all sites."""
    cur = await conn.execute(
        "SELECT type, verdict, count(*) AS n FROM alarms WHERE status <> 'cleared' "
        "GROUP BY type, verdict ORDER BY type, verdict"
    )
    return await cur.fetchall()


async def list_sites(
    conn: Conn,
    *,
    scope: Scope,
    site: str | None = None,
    after_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    where = Where()
    where.scope("s.id", scope)
    where.eq("s.id", "site", site)
    if after_id is not None:
        where.add("s.id > %(after_id)s", after_id=after_id)
    where.params["limit"] = limit
    cur = await conn.execute(
        sql.SQL("SELECT s.id, s.name FROM sites s {where} ORDER BY s.id LIMIT %(limit)s").format(
            where=where.clause()
        ),
        where.params,
    )
    return await cur.fetchall()


async def site_summaries(conn: Conn, *, sites: list[str]) -> dict[str, dict[str, Any]]:
    """Per site: devices, offline devices, open alarms by type/verdict, suppressed today (UTC)."""
    summaries: dict[str, dict[str, Any]] = {
        s: {"devices": 0, "offline_devices": 0, "open_alarms": [], "suppressed_today": 0}
        for s in sites
    }
    cur = await conn.execute(
        """
        SELECT d.site_id, count(*) AS devices,
               count(*) FILTER (WHERE s.status = 'offline' OR EXISTS (
                   SELECT 1 FROM alarms a WHERE a.device_id = d.id AND a.type = 'offline'
                     AND a.status <> 'cleared' AND a.verdict <> 'suppressed')) AS offline
        FROM devices d LEFT JOIN device_state s ON s.device_id = d.id
        WHERE d.site_id = ANY(%s::text[]) GROUP BY d.site_id
        """,
        (sites,),
    )
    for row in await cur.fetchall():
        summaries[row["site_id"]]["devices"] = row["devices"]
        summaries[row["site_id"]]["offline_devices"] = row["offline"]
    cur = await conn.execute(
        "SELECT site_id, type, verdict, count(*) AS n FROM alarms "
        "WHERE site_id = ANY(%s::text[]) AND status <> 'cleared' "
        "GROUP BY site_id, type, verdict ORDER BY site_id, type, verdict",
        (sites,),
    )
    for row in await cur.fetchall():
        summaries[row["site_id"]]["open_alarms"].append(
            {"type": row["type"], "verdict": row["verdict"], "count": row["n"]}
        )
    cur = await conn.execute(
        "SELECT site_id, count(*) AS n FROM alarms WHERE site_id = ANY(%s::text[]) "
        "AND verdict = 'suppressed' "
        "AND opened_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
        "GROUP BY site_id",
        (sites,),
    )
    for row in await cur.fetchall():
        summaries[row["site_id"]]["suppressed_today"] = row["n"]
    return summaries
