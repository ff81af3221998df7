"""Alarms: filtered keyset lists, detail with audit trail, acknowledge/clear, change feed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from storage.queries.common import Conn, Scope, Where
from storage.queries.errors import ConflictError, NotFoundError

ALARM_COLUMNS = """
    a.id, a.type, a.verdict, a.status, a.device_id AS device, a.site_id AS site, a.building,
    a.floor, a.zone, a.reason, a.opened_at, a.confirmed_at, a.cleared_at, a.acknowledged_at,
    a.acknowledged_by, a.cleared_by, a.detail, a.updated_at
"""


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    """The filters shared by the list and the live stream (None: any)."""

    site: str | None = None
    building: str | None = None
    zone: str | None = None
    device: str | None = None
    type: str | None = None
    verdict: str | None = None
    status: str | None = None

    def apply(self, where: Where) -> None:
        where.eq("a.site_id", "f_site", self.site)
        where.eq("a.building", "f_building", self.building)
        where.eq("a.zone", "f_zone", self.zone)
        where.eq("a.device_id", "f_device", self.device)
        where.eq("a.type", "f_type", self.type)
        where.eq("a.verdict", "f_verdict", self.verdict)
        where.eq("a.status", "f_status", self.status)


async def list_alarms(
    conn: Conn,
    *,
    scope: Scope,
    filters: AlarmFilter,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    open_only: bool = False,
    limit: int,
) -> list[dict[str, Any]]:
    """Alarms newest first: (opened_at, id) descending, strictly after `after`.

    The order is total (id breaks ties), so paging with the last row's key
    never skips or repeats a row, whatever is inserted meanwhile.
    """
    where = Where()
    where.scope("a.site_id", scope)
    filters.apply(where)
    if open_only:
        where.add("a.status <> 'cleared'")
    if since is not None:
        where.add("a.opened_at >= %(since)s", since=since)
    if until is not None:
        where.add("a.opened_at < %(until)s", until=until)
    if after is not None:
        where.add(
            "(a.opened_at, a.id) < (%(after_at)s, %(after_id)s)",
            after_at=after[0],
            after_id=after[1],
        )
    where.params["limit"] = limit
    cur = await conn.execute(
        sql.SQL(
            "SELECT {cols} FROM alarms a {where} "
            "ORDER BY a.opened_at DESC, a.id DESC LIMIT %(limit)s"
        ).format(cols=sql.SQL(ALARM_COLUMNS), where=where.clause()),
        where.params,
    )
    return await cur.fetchall()


async def get_alarm(conn: Conn, *, scope: Scope, alarm_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {cols} FROM alarms a WHERE a.id = %s").format(cols=sql.SQL(ALARM_COLUMNS)),
        (alarm_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"alarm {alarm_id!r} not found")
    scope.check(row["site"], alarm=alarm_id)
    return row


async def alarm_log(conn: Conn, *, alarm_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, at, action, actor, note FROM alarm_log WHERE alarm_id = %s ORDER BY id",
        (alarm_id,),
    )
    return await cur.fetchall()


async def alarm_commands(conn: Conn, *, alarm_id: str) -> list[dict[str, Any]]:
    """Linkage commands the alarm caused, with their delivery state."""
    cur = await conn.execute(
        "SELECT id, at, device_id AS device, cmd, direction, state, attempts, sent_at, acked_at"
        " FROM linkage_commands WHERE alarm_id = %s ORDER BY id",
        (alarm_id,),
    )
    return await cur.fetchall()


async def device_events(
    conn: Conn, *, device_id: str, since: datetime, until: datetime, limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT ts, seq, received_at, type, detail FROM device_events "
        "WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts, seq LIMIT %s",
        (device_id, since, until, limit),
    )
    return await cur.fetchall()


async def _transition(
    conn: Conn,
    *,
    scope: Scope,
    alarm_id: str,
    actor: str,
    note: str | None,
    action: str,
) -> tuple[dict[str, Any], bool]:
    """Acknowledge or clear; returns (alarm, changed). Repeating it changes nothing."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT site_id, status FROM alarms WHERE id = %s FOR UPDATE", (alarm_id,)
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"alarm {alarm_id!r} not found")
        scope.check(row["site_id"], alarm=alarm_id)
        status = row["status"]
        changed = False
        if action == "acknowledged":
            if status == "cleared":
                raise ConflictError(f"alarm {alarm_id!r} is already cleared")
            if status == "active":
                await conn.execute(
                    "UPDATE alarms SET status = 'acknowledged', acknowledged_at = now(), "
                    "acknowledged_by = %s, updated_at = now() WHERE id = %s",
                    (actor, alarm_id),
                )
                changed = True
        elif status != "cleared":
            await conn.execute(
                "UPDATE alarms SET status = 'cleared', cleared_at = now(), cleared_by = %s, "
                "updated_at = now() WHERE id = %s",
                (actor, alarm_id),
            )
            changed = True
        if changed:
            await conn.execute(
                "INSERT INTO alarm_log (alarm_id, action, actor, note) VALUES (%s, %s, %s, %s)",
                (alarm_id, action, actor, note),
            )
    return await get_alarm(conn, scope=scope, alarm_id=alarm_id), changed


async def acknowledge(
    conn: Conn, *, scope: Scope, alarm_id: str, actor: str, note: str | None
) -> tuple[dict[str, Any], bool]:
    """Active -> acknowledged (ConflictError when already cleared)."""
    return await _transition(
        conn, scope=scope, alarm_id=alarm_id, actor=actor, note=note, action="acknowledged"
    )


async def clear(
    conn: Conn, *, scope: Scope, alarm_id: str, actor: str, note: str | None
) -> tuple[dict[str, Any], bool]:
    """Active or acknowledged -> cleared (what a person does to a latched fire alarm)."""
    return await _transition(
        conn, scope=scope, alarm_id=alarm_id, actor=actor, note=note, action="cleared"
    )


# Alarm types that go through `pending` and so can be verified by a person.
VERIFIABLE_TYPES = ("fire", "electrical")


async def verify(
    conn: Conn, *, scope: Scope, alarm_id: str, actor: str, note: str | None, verdict: str
) -> tuple[dict[str, Any], bool]:
    """A person's verdict on a pending alarm: `confirmed` or `suppressed` (dismissed),
    reason `operator`; returns (alarm, changed). Repeating it changes nothing; a
    confirmed alarm cannot be dismissed (it latches: clear it) nor a judged one
    confirmed (ConflictError)."""
    if verdict not in ("confirmed", "suppressed"):
        raise ValueError(f"verdict {verdict!r}")
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT site_id, type, verdict, status FROM alarms WHERE id = %s FOR UPDATE",
            (alarm_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"alarm {alarm_id!r} not found")
        scope.check(row["site_id"], alarm=alarm_id)
        if row["type"] not in VERIFIABLE_TYPES:
            raise ConflictError(
                f"alarm {alarm_id!r} is a {row['type']} alarm: only fire and electrical "
                "alarms are verified"
            )
        if row["verdict"] == verdict:
            return await get_alarm(conn, scope=scope, alarm_id=alarm_id), False
        if row["verdict"] != "pending":
            raise ConflictError(f"alarm {alarm_id!r} is already {row['verdict']}")
        if row["status"] == "cleared":
            raise ConflictError(f"alarm {alarm_id!r} is already cleared")
        if verdict == "confirmed":
            await conn.execute(
                "UPDATE alarms SET verdict = 'confirmed', reason = 'operator', "
                "confirmed_at = now(), updated_at = now() WHERE id = %s",
                (alarm_id,),
            )
        else:
            await conn.execute(
                "UPDATE alarms SET verdict = 'suppressed', reason = 'operator', "
                "status = 'cleared', cleared_at = now(), cleared_by = %s, updated_at = now() "
                "WHERE id = %s",
                (actor, alarm_id),
            )
        await conn.execute(
            "INSERT INTO alarm_log (alarm_id, action, actor, note) VALUES (%s, %s, %s, %s)",
            (alarm_id, verdict, actor, note),
        )
    return await get_alarm(conn, scope=scope, alarm_id=alarm_id), True


async def changes(
    conn: Conn,
    *,
    scope: Scope,
    filters: AlarmFilter,
    log_ids: Sequence[int] | None = None,
    after_log_id: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """alarm_log entries with their alarm as it is now, in log id order.

    Either the given `log_ids` (from notifications) or everything after
    `after_log_id` (catching up); both filtered by scope and filters.
    """
    where = Where()
    where.scope("a.site_id", scope)
    filters.apply(where)
    if log_ids is not None:
        where.add("l.id = ANY(%(log_ids)s::bigint[])", log_ids=list(log_ids))
    if after_log_id is not None:
        where.add("l.id > %(after)s", after=after_log_id)
    where.params["limit"] = limit
    cur = await conn.execute(
        sql.SQL(
            "SELECT l.id AS log_id, l.at AS log_at, l.action, l.actor, l.note, {cols} "
            "FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id {where} "
            "ORDER BY l.id LIMIT %(limit)s"
        ).format(cols=sql.SQL(ALARM_COLUMNS), where=where.clause()),
        where.params,
    )
    return await cur.fetchall()
