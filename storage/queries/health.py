"""What the API reports about the database and ingest (from ingest_stats)."""

from __future__ import annotations

from typing import Any

from storage import shards
from storage.queries.common import Conn

# Instances that have not reported for this long are gone, not just stale.
INSTANCE_HORIZON = "10 minutes"


async def ingest_instances(conn: Conn) -> list[dict[str, Any]]:
    """The newest ingest_stats row of each instance seen recently, newest first.
    `alive`: its database session is still there (a process killed outright
    loses it at once; its last report stays fresh for a while)."""
    cur = await conn.execute(
        f"""
        SELECT DISTINCT ON (instance) instance, at, broker_connected, lag_ms, queue_depth,
               messages, readings, events, rejects, duplicates, seq_gaps, batches,
               batch_latency_ms, extract(epoch FROM now() - at) AS age_s,
               backend_pid, shards, shard_stats, takeovers,
               backend_pid IS NULL
                   OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = backend_pid)
                   AS alive
        FROM ingest_stats
        WHERE at > now() - interval '{INSTANCE_HORIZON}'
        ORDER BY instance, at DESC
        """
    )
    rows = await cur.fetchall()
    return sorted(rows, key=lambda r: r["at"], reverse=True)


async def background_jobs(conn: Conn) -> list[dict[str, Any]]:
    """TimescaleDB's policy jobs and how their last runs went (none on plain PostgreSQL);
    the failed ones first."""
    cur = await conn.execute(
        """
        SELECT job_id, job, proc_name, target, last_run_status, job_status, total_runs,
               total_failures,
               last_run_started_at, last_successful_finish, last_error, last_error_at, failed
        FROM firesafe_job_health
        ORDER BY failed DESC, job_id
        """
    )
    return await cur.fetchall()


async def shard_owners(conn: Conn) -> tuple[int, dict[int, int]]:
    """(the shard count, shard -> backend pid of its owner) as the leases say now."""
    cur = await conn.execute("SELECT value FROM firesafe_meta WHERE key = 'shards'")
    row = await cur.fetchone()
    count = int(row["value"]) if row else 0
    cur = await conn.execute(shards.VIEW_SQL, (shards.SHARD_LOCK_CLASS, shards.MEMBER_LOCK_CLASS))
    owners = {
        int(r["objid"]): int(r["pid"])
        for r in await cur.fetchall()
        if int(r["classid"]) == shards.SHARD_LOCK_CLASS
    }
    return count, owners


async def flavour(conn: Conn) -> Any:
    """'plain' or 'timescale', as the first migration recorded it."""
    cur = await conn.execute("SELECT value FROM firesafe_meta WHERE key = 'flavour'")
    row = await cur.fetchone()
    return row["value"] if row else None


async def unraised_fires(conn: Conn, within_s: int) -> dict[bool, dict[str, Any]]:
    """Rejects of the last `within_s` that carried a fire alarm and so raised none
    (the view of migration 0200 says which): unregistered (True) and from
    registered devices, unreadable (False), each counted with its latest."""
    cur = await conn.execute(
        """
        SELECT k.unregistered, count(u.id) AS count, max(u.received_at) AS last_at,
               (array_agg(u.topic ORDER BY u.received_at DESC, u.id DESC))[1] AS last_topic,
               (array_agg(u.detail ORDER BY u.received_at DESC, u.id DESC))[1] AS last_detail
        FROM (VALUES (true), (false)) AS k(unregistered)
        LEFT JOIN unraised_fire_rejects u
          ON u.unregistered = k.unregistered
         AND u.received_at > now() - make_interval(secs => %s)
        GROUP BY k.unregistered
        """,
        (within_s,),
    )
    return {row.pop("unregistered"): row for row in map(dict, await cur.fetchall())}


async def notifications(conn: Conn, overdue_s: int) -> dict[str, Any]:
    """Notifier processes (the distinct application names of their listening
    sessions, visible to every role), rules, pending notifications due more
    than `overdue_s` ago that nothing holds back (one queued behind an earlier
    one of its alarm and target waits for it), and pending ones whose delivery
    failed at least once (a target that refuses or cannot be reached; not one
    merely in flight)."""
    cur = await conn.execute(
        """
        WITH pending AS (
            SELECT CASE WHEN n.attempts = 0 THEN n.next_attempt_at ELSE n.lease_until END
                       AS overdue_since,
                   -- An attempt's outcome is recorded only when it did not
                   -- deliver: one in flight (claimed, attempts counted) has none.
                   n.last_status IS NOT NULL OR n.last_error IS NOT NULL AS failed,
                   (n.attempts = 0 AND n.next_attempt_at < now() - make_interval(secs => %(s)s)
                    AND NOT coalesce(b.status = 'pending', false))
                   -- or an attempt whose notifier stopped renewing its claim, and
                   -- nobody took it back (a live one would within seconds): both
                   -- frozen, an outside check saw a fire's webhook wait with /health ok
                   OR n.lease_until < now() - make_interval(secs => %(s)s) AS overdue
            FROM notifications n
            LEFT JOIN notifications b ON b.id = n.after_id
            WHERE n.status = 'pending'
        )
        SELECT (SELECT count(DISTINCT application_name) FROM pg_stat_activity
                WHERE datname = current_database()
                  AND application_name LIKE 'firesafe-notify:%%') AS notifiers,
               (SELECT count(*) FROM notify_rules) AS rules,
               count(*) FILTER (WHERE overdue) AS overdue,
               extract(epoch FROM now() - min(overdue_since) FILTER (WHERE overdue))
                   AS oldest_overdue_s,
               count(*) FILTER (WHERE failed) AS failing
        FROM pending
        """,
        {"s": overdue_s},
    )
    row = await cur.fetchone()
    assert row is not None
    return dict(row)
