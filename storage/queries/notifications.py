"""Notification targets, rules, the outbox and its audit (migration 0070).

Two users: the API (targets and rules, scoped like every other query, and
the audit of an alarm's deliveries) and the notifier (claiming due rows,
recording outcomes, escalating). The outbox rows themselves are written by
the database trigger on `alarm_log`, in the alarm transition's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from storage.queries.common import Conn, Scope
from storage.queries.errors import ConflictError, InvalidInputError, NotFoundError

# Upper bounds (s) of the transition -> delivery latency histogram; the goal is 1 s.
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, float("inf"))

TARGET_COLUMNS = (
    "t.id, t.kind, t.url, t.address, t.language, t.template, t.content_type, "
    "t.secret IS NOT NULL AS has_secret, t.owner_sites, t.created_by, t.created_at"
)
RULE_COLUMNS = """
    r.id, r.sites, r.types, r.verdicts, r.escalate_after_s, r.owner_sites, r.created_by,
    r.created_at,
    COALESCE(ARRAY(SELECT rt.target_id FROM notify_rule_targets rt
                   WHERE rt.rule_id = r.id AND rt.role = 'notify' ORDER BY rt.target_id),
             '{}') AS targets,
    COALESCE(ARRAY(SELECT rt.target_id FROM notify_rule_targets rt
                   WHERE rt.rule_id = r.id AND rt.role = 'escalate' ORDER BY rt.target_id),
             '{}') AS escalate_to
"""


def _owned(column: str, scope: Scope) -> tuple[sql.Composable, dict[str, Any]]:
    """A caller sees what is owned within its sites (managers) or everything."""
    if scope.sites is None:
        return sql.SQL("TRUE"), {}
    return (
        sql.SQL("({col} IS NOT NULL AND {col} <@ %(scope_sites)s::text[])").format(
            col=sql.SQL(column)
        ),
        {"scope_sites": list(scope.sites)},
    )


def owner_sites(scope: Scope) -> list[str] | None:
    return None if scope.sites is None else sorted(scope.sites)


# --- targets --------------------------------------------------------------------


# Saving a target or rule takes a transaction lock on its id first: with none
# stored yet, FOR UPDATE locks nothing, and two owners creating one id at the
# same moment both passed the owner check; the second's upsert then wrote its
# URL into the first's target (an outside check: notifications of one site
# sent to another site's endpoint).
TARGET_LOCK_CLASS = 0x46530010  # "FS" + 0x10: (class, hashtext(target id))
RULE_LOCK_CLASS = 0x46530011


async def _serialize(conn: Conn, lock_class: int, key: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (lock_class, key))


async def list_targets(conn: Conn, *, scope: Scope) -> list[dict[str, Any]]:
    cond, params = _owned("t.owner_sites", scope)
    cur = await conn.execute(
        sql.SQL("SELECT {cols} FROM notify_targets t WHERE {cond} ORDER BY t.id").format(
            cols=sql.SQL(TARGET_COLUMNS), cond=cond
        ),
        params,
    )
    return await cur.fetchall()


async def get_target(conn: Conn, *, scope: Scope, target_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {cols} FROM notify_targets t WHERE t.id = %(id)s").format(
            cols=sql.SQL(TARGET_COLUMNS)
        ),
        {"id": target_id},
    )
    row = await cur.fetchone()
    if row is None or not _visible(row["owner_sites"], scope):
        raise NotFoundError(f"target {target_id!r} not found")
    return row


def _visible(owner: Sequence[str] | None, scope: Scope) -> bool:
    if scope.sites is None:
        return True
    return owner is not None and set(owner) <= set(scope.sites)


async def put_target(
    conn: Conn,
    *,
    scope: Scope,
    target_id: str,
    kind: str,
    url: str | None,
    address: str | None,
    secret: str | None,
    language: str,
    template: str | None,
    content_type: str | None,
    created_by: str,
) -> tuple[dict[str, Any], bool]:
    """Create or replace a target (upsert by id); returns (target, created).

    Replacing keeps the stored secret when none is given, so a client that
    never saw the secret (GET does not return it) can edit the rest.
    """
    async with conn.transaction():
        await _serialize(conn, TARGET_LOCK_CLASS, target_id)
        cur = await conn.execute(
            "SELECT owner_sites FROM notify_targets WHERE id = %s FOR UPDATE", (target_id,)
        )
        existing = await cur.fetchone()
        if existing is not None and not _visible(existing["owner_sites"], scope):
            raise ConflictError(f"target id {target_id!r} is taken by another owner")
        await conn.execute(
            """
            INSERT INTO notify_targets (id, kind, url, address, secret, language, template,
                content_type, owner_sites, created_by)
            VALUES (%(id)s, %(kind)s, %(url)s, %(address)s, %(secret)s, %(language)s,
                %(template)s, %(content_type)s, %(owner)s, %(by)s)
            ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, url = EXCLUDED.url,
                address = EXCLUDED.address,
                secret = COALESCE(EXCLUDED.secret, notify_targets.secret),
                language = EXCLUDED.language, template = EXCLUDED.template,
                content_type = EXCLUDED.content_type
            """,
            {
                "id": target_id,
                "kind": kind,
                "url": url,
                "address": address,
                "secret": secret,
                "language": language,
                "template": template,
                "content_type": content_type,
                "owner": owner_sites(scope),
                "by": created_by,
            },
        )
    return await get_target(conn, scope=scope, target_id=target_id), existing is None


async def delete_target(conn: Conn, *, scope: Scope, target_id: str) -> None:
    await get_target(conn, scope=scope, target_id=target_id)
    try:
        await conn.execute("DELETE FROM notify_targets WHERE id = %s", (target_id,))
    # An ON DELETE RESTRICT key: 23503 on PostgreSQL 15, 23001 (restrict_violation)
    # on 18, the embedded server; both mean the same to the caller.
    except (psycopg.errors.ForeignKeyViolation, psycopg.errors.RestrictViolation) as exc:
        raise ConflictError(
            f"target {target_id!r} is used by a rule: delete or change the rule first"
        ) from exc


# --- rules ----------------------------------------------------------------------


async def list_rules(conn: Conn, *, scope: Scope) -> list[dict[str, Any]]:
    cond, params = _owned("r.owner_sites", scope)
    cur = await conn.execute(
        sql.SQL("SELECT {cols} FROM notify_rules r WHERE {cond} ORDER BY r.id").format(
            cols=sql.SQL(RULE_COLUMNS), cond=cond
        ),
        params,
    )
    return await cur.fetchall()


async def get_rule(conn: Conn, *, scope: Scope, rule_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {cols} FROM notify_rules r WHERE r.id = %(id)s").format(
            cols=sql.SQL(RULE_COLUMNS)
        ),
        {"id": rule_id},
    )
    row = await cur.fetchone()
    if row is None or not _visible(row["owner_sites"], scope):
        raise NotFoundError(f"rule {rule_id!r} not found")
    return row


async def put_rule(
    conn: Conn,
    *,
    scope: Scope,
    rule_id: str,
    sites: Sequence[str] | None,
    types: Sequence[str],
    verdicts: Sequence[str],
    targets: Sequence[str],
    escalate_after_s: int | None,
    escalate_to: Sequence[str],
    created_by: str,
) -> tuple[dict[str, Any], bool]:
    """Create or replace a rule; every target must exist and be the caller's to use."""
    async with conn.transaction():
        await _serialize(conn, RULE_LOCK_CLASS, rule_id)
        cur = await conn.execute(
            "SELECT owner_sites FROM notify_rules WHERE id = %s FOR UPDATE", (rule_id,)
        )
        existing = await cur.fetchone()
        if existing is not None and not _visible(existing["owner_sites"], scope):
            raise ConflictError(f"rule id {rule_id!r} is taken by another owner")
        wanted = sorted(set(targets) | set(escalate_to))
        cur = await conn.execute(
            "SELECT id, owner_sites FROM notify_targets WHERE id = ANY(%s::text[]) FOR SHARE",
            (wanted,),
        )
        found = {row["id"]: row["owner_sites"] for row in await cur.fetchall()}
        for field, ids in (("targets", targets), ("escalate_to", escalate_to)):
            for target_id in ids:
                if target_id not in found or not _visible(found[target_id], scope):
                    raise InvalidInputError(field, f"no target {target_id!r}")
        await conn.execute(
            """
            INSERT INTO notify_rules (id, sites, types, verdicts, escalate_after_s, owner_sites,
                created_by)
            VALUES (%(id)s, %(sites)s, %(types)s, %(verdicts)s, %(esc)s, %(owner)s, %(by)s)
            ON CONFLICT (id) DO UPDATE SET sites = EXCLUDED.sites, types = EXCLUDED.types,
                verdicts = EXCLUDED.verdicts, escalate_after_s = EXCLUDED.escalate_after_s
            """,
            {
                "id": rule_id,
                "sites": None if sites is None else list(sites),
                "types": list(types),
                "verdicts": list(verdicts),
                "esc": escalate_after_s,
                "owner": owner_sites(scope),
                "by": created_by,
            },
        )
        await conn.execute("DELETE FROM notify_rule_targets WHERE rule_id = %s", (rule_id,))
        pairs = [(t, "notify") for t in sorted(set(targets))] + [
            (t, "escalate") for t in sorted(set(escalate_to))
        ]
        async with conn.cursor() as cur2:
            await cur2.executemany(
                "INSERT INTO notify_rule_targets (rule_id, target_id, role) VALUES (%s, %s, %s)",
                [(rule_id, t, role) for t, role in pairs],
            )
        if existing is not None and escalate_after_s and escalate_to:
            # A changed interval applies to the escalations under way.
            await conn.execute(
                "UPDATE notify_escalations SET every_s = %s WHERE rule_id = %s",
                (escalate_after_s, rule_id),
            )
        elif existing is not None:
            await conn.execute("DELETE FROM notify_escalations WHERE rule_id = %s", (rule_id,))
    return await get_rule(conn, scope=scope, rule_id=rule_id), existing is None


async def delete_rule(conn: Conn, *, scope: Scope, rule_id: str) -> None:
    """Delete a rule; its escalations under way stop, delivered history stays."""
    await get_rule(conn, scope=scope, rule_id=rule_id)
    await conn.execute("DELETE FROM notify_rules WHERE id = %s", (rule_id,))


# --- audit ----------------------------------------------------------------------


async def alarm_notifications(conn: Conn, *, alarm_id: str) -> list[dict[str, Any]]:
    """Every delivery of an alarm with its attempts, in the order they were written."""
    cur = await conn.execute(
        """
        SELECT n.id::text, n.event, n.escalation, n.target_id AS target, t.kind, n.rule_id AS rule,
               n.status, n.attempts, n.last_status, n.last_error, n.created_at,
               n.first_attempt_at, n.last_attempt_at, n.next_attempt_at, n.delivered_at,
               COALESCE((SELECT jsonb_agg(jsonb_build_object(
                            'attempt', a.attempt, 'at', a.at, 'status', a.status,
                            'error', a.error, 'duration_ms', a.duration_ms)
                          ORDER BY a.attempt)
                         FROM notification_attempts a WHERE a.notification_id = n.id),
                        '[]'::jsonb) AS attempt_log
        FROM notifications n LEFT JOIN notify_targets t ON t.id = n.target_id
        WHERE n.alarm_id = %s
        ORDER BY n.seq
        """,
        (alarm_id,),
    )
    return await cur.fetchall()


async def metric_families_source(conn: Conn) -> dict[str, Any]:
    """Counters, the latency histogram and the undelivered backlog, for /metrics."""
    counts = await (
        await conn.execute("SELECT kind, outcome, count FROM notify_counts ORDER BY 1, 2")
    ).fetchall()
    latency = await (
        await conn.execute("SELECT le, count, sum_s FROM notify_latency ORDER BY le")
    ).fetchall()
    backlog = await (
        await conn.execute(
            "SELECT count(*) AS n, "
            "COALESCE(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS oldest_s "
            "FROM notifications WHERE status = 'pending'"
        )
    ).fetchone()
    assert backlog is not None
    return {"counts": counts, "latency": latency, "backlog": backlog}


# --- the notifier's side ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed by this notifier, with everything needed to send it."""

    id: str
    alarm_id: str
    event: str
    escalation: int
    attempts: int  # including this one
    created_at: datetime
    alarm: dict[str, Any]
    target_id: str
    kind: str | None  # None: the target was deleted
    url: str | None
    address: str | None
    secret: str | None
    language: str
    template: str | None
    content_type: str | None
    timezone: str  # the alarm's site's IANA zone
    public_only: bool = False  # a manager's target: public addresses only


# A claimant is alive while the session holding its advisory lock is; its
# leases also run out, whichever comes first.
_ALIVE = """
    EXISTS (SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = {alias}.claim_key
              AND l.objsubid = 1)
"""
# Per alarm and target in order: waits while an earlier notification of the same
# alarm and target is waiting, or is being attempted by a live notifier although
# cancelled meanwhile (an escalation superseded in flight, whose attempt still
# ends). Not only the one it follows (after_id): a cancelled row no longer held
# up what came after it, and escalations did not follow each other at all (an
# outside check saw escalation 7 delivered before escalation 6).
# (notifications_alarm_idx: alarm_id, target_id, seq.)
_IN_ORDER = (
    """
    NOT EXISTS (
        SELECT 1 FROM notifications e
        WHERE e.alarm_id = {alias}.alarm_id AND e.target_id = {alias}.target_id
          AND e.seq < {alias}.seq
          AND (e.status = 'pending'
               OR (e.lease_until >= clock_timestamp() AND e.claim_key IS NOT NULL AND """
    + _ALIVE.format(alias="e")
    + """)))
"""
)
# `acknowledged` and `cleared` go to a target only if it was told of the alarm: a
# notification of it, earlier, was delivered to it. Decided when the row's turn
# comes (everything earlier settled, see _IN_ORDER); rows of a target never told
# (its escalation cancelled or given up) are cancelled then, not sent.
_TOLD = """
    ({alias}.event NOT IN ('acknowledged', 'cleared') OR EXISTS (
        SELECT 1 FROM notifications t
        WHERE t.alarm_id = {alias}.alarm_id AND t.target_id = {alias}.target_id
          AND t.seq < {alias}.seq AND t.delivered_at IS NOT NULL))
"""
NOT_TOLD = "not sent: the target was never told of this alarm"
_CLAIMABLE = (
    """
    {alias}.status = 'pending' AND {alias}.next_attempt_at <= clock_timestamp()
    AND ({alias}.lease_until IS NULL OR {alias}.lease_until < clock_timestamp()
         OR {alias}.claim_key IS NULL OR NOT """
    + _ALIVE
    + """)
"""
)


async def claim(
    conn: Conn,
    *,
    notifier: str,
    claim_key: int,
    lease_s: float,
    per_target: int,
    limit: int,
    in_flight: Mapping[str, int],
) -> list[Claimed]:
    """Claim due deliveries: at most `per_target` per target in flight in this
    process (`in_flight`: target -> deliveries it has under way; a target at its
    limit is skipped, one with 3 of 4 under way gets 1 more), and per (alarm,
    target) in order (an acknowledgement never
    overtakes the confirmation it follows). SKIP LOCKED lets notifiers run side by side.
    An `acknowledged` or `cleared` whose target was never told of the alarm is
    cancelled instead of claimed."""
    claimable = sql.SQL(_CLAIMABLE.format(alias="n"))
    query = sql.SQL(
        """
        WITH flying AS (
            SELECT * FROM unnest(%(flying)s::text[], %(counts)s::int[]) AS f(target_id, n)
        ),
        due_targets AS (
            SELECT d.target_id, %(per_target)s - coalesce(f.n, 0) AS room
            FROM (SELECT DISTINCT target_id FROM notifications
                  WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()) d
            LEFT JOIN flying f ON f.target_id = d.target_id
            WHERE %(per_target)s - coalesce(f.n, 0) > 0
        ),
        picked AS (
            SELECT p.id, p.told FROM due_targets d,
            LATERAL (
                SELECT n.id, {told} AS told FROM notifications n
                WHERE n.target_id = d.target_id AND {claimable}
                  AND {in_order}
                ORDER BY n.next_attempt_at, n.seq
                LIMIT d.room
                FOR UPDATE SKIP LOCKED
            ) p
            LIMIT %(limit)s
        ),
        untold AS (
            UPDATE notifications n
            SET status = 'cancelled', last_error = %(not_told)s,
                lease_until = NULL, claimed_by = NULL, claim_key = NULL
            FROM picked
            WHERE n.id = picked.id AND NOT picked.told
            RETURNING 1
        )
        UPDATE notifications n
        SET lease_until = clock_timestamp() + make_interval(secs => %(lease)s),
            claimed_by = %(notifier)s, claim_key = %(key)s, attempts = n.attempts + 1,
            first_attempt_at = COALESCE(n.first_attempt_at, clock_timestamp()),
            last_attempt_at = clock_timestamp()
        FROM picked
        WHERE n.id = picked.id AND picked.told
        RETURNING n.id::text, n.alarm_id, n.event, n.escalation, n.attempts, n.created_at,
                  n.alarm, n.target_id
        """
    ).format(
        claimable=claimable,
        in_order=sql.SQL(_IN_ORDER.format(alias="n")),
        told=sql.SQL(_TOLD.format(alias="n")),
    )
    async with conn.transaction():
        cur = await conn.execute(
            query,
            {
                "flying": list(in_flight),
                "counts": list(in_flight.values()),
                "per_target": per_target,
                "limit": limit,
                "lease": lease_s,
                "notifier": notifier,
                "key": claim_key,
                "not_told": NOT_TOLD,
            },
        )
        rows = await cur.fetchall()
        if not rows:
            return []
        targets = {
            r["id"]: r
            for r in await (
                await conn.execute(
                    "SELECT id, kind, url, address, secret, language, template, content_type, "
                    "owner_sites IS NOT NULL AS public_only "
                    "FROM notify_targets WHERE id = ANY(%s::text[])",
                    (sorted({r["target_id"] for r in rows}),),
                )
            ).fetchall()
        }
        zones = {
            r["id"]: r["timezone"]
            for r in await (
                await conn.execute(
                    "SELECT id, timezone FROM sites WHERE id = ANY(%s::text[])",
                    (sorted({str(r["alarm"].get("site")) for r in rows}),),
                )
            ).fetchall()
        }
    out: list[Claimed] = []
    for r in rows:
        t = targets.get(r["target_id"])
        out.append(
            Claimed(
                id=r["id"],
                alarm_id=r["alarm_id"],
                event=r["event"],
                escalation=r["escalation"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                alarm=r["alarm"],
                target_id=r["target_id"],
                kind=t["kind"] if t else None,
                url=t["url"] if t else None,
                address=t["address"] if t else None,
                secret=t["secret"] if t else None,
                language=t["language"] if t else "en",
                template=t["template"] if t else None,
                content_type=t["content_type"] if t else None,
                timezone=zones.get(str(r["alarm"].get("site")), "UTC"),
                public_only=bool(t["public_only"]) if t else False,
            )
        )
    return out


async def renew_leases(
    conn: Conn, *, ids: Sequence[str], notifier: str, claim_key: int, lease_s: float
) -> int:
    """The notifier's heartbeat: extend the leases of its attempts under way (rows
    still claimed by it, cancelled ones included: what follows them waits for the
    attempt); returns how many it still held."""
    cur = await conn.execute(
        "UPDATE notifications SET lease_until = clock_timestamp() + make_interval(secs => %s) "
        "WHERE id = ANY(%s::uuid[]) AND claimed_by = %s AND claim_key = %s "
        "AND lease_until IS NOT NULL",
        (lease_s, list(ids), notifier, claim_key),
    )
    return cur.rowcount


async def still_to_send(
    conn: Conn, *, delivery_id: str, notifier: str, claim_key: int, lease_s: float
) -> bool:
    """Right before the request: the claim is still ours and the row still wanted,
    its lease restarted from now. A notifier that stopped between its claim and
    its request for longer than the lease (SIGSTOP, a paused VM) finds the row
    taken over, or cancelled meanwhile (the alarm acknowledged or cleared, the
    escalation superseded), and sends nothing; a cancelled row of ours is
    released, so what waits behind it goes on."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE notifications SET lease_until = clock_timestamp() + make_interval(secs => %s) "
            "WHERE id = %s AND claimed_by = %s AND claim_key = %s "
            "AND lease_until IS NOT NULL AND status = 'pending' RETURNING id",
            (lease_s, delivery_id, notifier, claim_key),
        )
        if await cur.fetchone() is not None:
            return True
        await conn.execute(
            "UPDATE notifications SET lease_until = NULL, claimed_by = NULL, claim_key = NULL "
            "WHERE id = %s AND claimed_by = %s AND claim_key = %s AND status = 'cancelled'",
            (delivery_id, notifier, claim_key),
        )
        return False


async def record_outcome(
    conn: Conn,
    *,
    delivery_id: str,
    notifier: str,
    attempt: int,
    kind: str,
    at: datetime,
    duration_ms: float,
    delivered: bool,
    status: int | None,
    error: str | None,
    retry_at: datetime | None,
    latency_buckets: Sequence[float] = (),
) -> str:
    """Record one attempt and release the claim; returns the row's new status.

    Not delivered and `retry_at` None: given up (`failed`). A row cancelled
    while the attempt was under way stays cancelled unless it was delivered.
    A row that is no longer ours (our lease ran out and another notifier took
    it) only gets its attempt logged.
    """
    new_status = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO notification_attempts (notification_id, attempt, at, duration_ms, "
            "status, error, notifier) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (delivery_id, attempt, at, duration_ms, status, error, notifier),
        )
        cur = await conn.execute(
            """
            UPDATE notifications SET
                -- Cancelled while this attempt was under way (an escalation
                -- superseded, or the alarm acknowledged): not retried, but one
                -- that got through was delivered, and its target told.
                status = CASE WHEN %(delivered)s OR status <> 'cancelled' THEN %(status)s
                              ELSE status END,
                last_status = %(code)s,
                -- (why it was cancelled stays; the attempt's error is in the log)
                last_error = CASE WHEN status = 'cancelled' AND NOT %(delivered)s
                                  THEN last_error ELSE %(error)s END,
                -- A retry waits its backoff, unless the target has taken a
                -- delivery since this attempt began: it answers again, so what
                -- waits for it goes now (as a delivery that gets through
                -- releases the retries waiting then; an outside check saw one
                -- whose attempt was still under way wait 42 s more).
                next_attempt_at = CASE
                    WHEN %(retry_at)s::timestamptz IS NULL THEN next_attempt_at
                    WHEN EXISTS (SELECT 1 FROM notifications o
                                 WHERE o.target_id = notifications.target_id
                                   AND o.delivered_at >= notifications.last_attempt_at)
                        THEN clock_timestamp()
                    ELSE %(retry_at)s END,
                delivered_at = CASE WHEN %(delivered)s THEN clock_timestamp() END,
                lease_until = NULL, claimed_by = NULL, claim_key = NULL
            WHERE id = %(id)s AND claimed_by = %(notifier)s AND status IN ('pending', 'cancelled')
            RETURNING status, extract(epoch FROM clock_timestamp() - created_at) AS latency_s
            """,
            {
                "status": new_status,
                "code": status,
                "error": error,
                "retry_at": retry_at,
                "delivered": delivered,
                "id": delivery_id,
                "notifier": notifier,
            },
        )
        row = await cur.fetchone()
        if row is None:
            return "lost"
        outcome = (
            "delivered" if delivered else ("attempt_failed" if retry_at is not None else "gave_up")
        )
        await conn.execute(
            "INSERT INTO notify_counts (kind, outcome, count) VALUES (%s, %s, 1) "
            "ON CONFLICT (kind, outcome) DO UPDATE SET count = notify_counts.count + 1",
            (kind, outcome),
        )
        if delivered:
            await conn.execute(
                "INSERT INTO notify_latency AS h (le, count, sum_s) "
                "SELECT le, 1, %(s)s FROM unnest(%(bounds)s::double precision[]) AS le "
                "WHERE le >= %(s)s "
                "ON CONFLICT (le) DO UPDATE SET count = h.count + 1, sum_s = h.sum_s + %(s)s",
                {"s": float(row["latency_s"]), "bounds": list(LATENCY_BUCKETS_S)},
            )
            # The target answers again: what waits for it goes now, not at its
            # backoff. Only a retry's wait: a notification held back on purpose
            # (a device's own `offline`, an outside check saw it released by any
            # delivery to the same target) has never been tried.
            await conn.execute(
                "UPDATE notifications SET next_attempt_at = clock_timestamp() "
                "WHERE target_id = (SELECT target_id FROM notifications WHERE id = %s) "
                "AND status = 'pending' AND next_attempt_at > clock_timestamp() "
                "AND lease_until IS NULL AND attempts > 0",
                (delivery_id,),
            )
        return str(row["status"])


async def cancel(conn: Conn, *, delivery_id: str, notifier: str, reason: str) -> None:
    """A delivery that cannot be made at all (its target was deleted)."""
    await conn.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = %s, lease_until = NULL, "
        "claimed_by = NULL, claim_key = NULL WHERE id = %s AND claimed_by = %s",
        (reason, delivery_id, notifier),
    )


async def escalate_due(conn: Conn, *, limit: int) -> int:
    """Write the escalations that are due (rows for each rule's escalate_to targets)
    and schedule the next ones; alarms no longer active stop escalating; an earlier
    escalation of the same alarm and rule not sent yet is superseded. Returns the
    number of notifications written."""
    async with conn.transaction():
        cur = await conn.execute(
            """
            WITH due AS (
                SELECT e.alarm_id, e.rule_id, e.level, e.every_s, e.next_at
                FROM notify_escalations e
                WHERE e.next_at <= clock_timestamp()
                ORDER BY e.next_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ),
            live AS (
                SELECT d.*, firesafe_alarm_document(a) AS doc
                FROM due d JOIN alarms a ON a.id = d.alarm_id AND a.status = 'active'
            ),
            superseded AS (
                -- An escalation still waiting (its target failing) says less than the
                -- new one: send the newest, not a burst of stale ones when it recovers.
                -- One being attempted right now too: that attempt ends as it ends
                -- (delivered, or not retried) and the new one waits for it (claim's
                -- order), so escalations never overtake each other.
                UPDATE notifications n
                SET status = 'cancelled', last_error = 'superseded by escalation ' || l.level
                FROM live l
                WHERE n.alarm_id = l.alarm_id AND n.rule_id = l.rule_id
                  AND n.event = 'escalated' AND n.status = 'pending'
                RETURNING 1
            ),
            written AS (
                INSERT INTO notifications (alarm_id, event, escalation, target_id, rule_id, alarm,
                    after_id)
                SELECT l.alarm_id, 'escalated', l.level, rt.target_id, l.rule_id, l.doc,
                       (SELECT p.id FROM notifications p
                        WHERE p.alarm_id = l.alarm_id AND p.target_id = rt.target_id
                        ORDER BY p.seq DESC LIMIT 1)
                FROM live l
                JOIN notify_rule_targets rt ON rt.rule_id = l.rule_id AND rt.role = 'escalate'
                ON CONFLICT DO NOTHING
                RETURNING 1
            ),
            rescheduled AS (
                UPDATE notify_escalations e
                SET level = e.level + 1,
                    next_at = GREATEST(l.next_at + make_interval(secs => l.every_s),
                                       clock_timestamp())
                FROM live l
                WHERE e.alarm_id = l.alarm_id AND e.rule_id = l.rule_id
                RETURNING 1
            ),
            stopped AS (
                DELETE FROM notify_escalations e
                USING due d
                WHERE e.alarm_id = d.alarm_id AND e.rule_id = d.rule_id
                  AND NOT EXISTS (SELECT 1 FROM live l
                                  WHERE l.alarm_id = d.alarm_id AND l.rule_id = d.rule_id)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM written) AS written,
                   (SELECT count(*) FROM superseded) AS superseded,
                   (SELECT count(*) FROM rescheduled) AS rescheduled,
                   (SELECT count(*) FROM stopped) AS stopped
            """,
            {"limit": limit},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["written"])


async def next_wakeup_s(conn: Conn) -> float | None:
    """Seconds until the next delivery, retry, escalation or lease expiry is due (None:
    nothing scheduled). Rows waiting behind an earlier one of their alarm and target
    do not count: they become due when that one is settled."""
    cur = await conn.execute(
        """
        SELECT extract(epoch FROM least(
            (SELECT n.next_attempt_at FROM notifications n
             WHERE n.status = 'pending' AND n.lease_until IS NULL AND """
        + _IN_ORDER.format(alias="n")
        + """
             ORDER BY n.next_attempt_at LIMIT 1),
            (SELECT min(next_at) FROM notify_escalations),
            (SELECT min(lease_until) FROM notifications
             WHERE status = 'pending' AND lease_until IS NOT NULL)
        ) - clock_timestamp()) AS s
        """
    )
    row = await cur.fetchone()
    if row is None or row["s"] is None:
        return None
    return float(row["s"])
