"""Shard ownership in PostgreSQL (ingest/shards.py says what a shard is).

A process owns shard k while its writer session holds the advisory lock
(SHARD_LOCK_CLASS, k), and is a member of the cluster while that session holds
(MEMBER_LOCK_CLASS, 0) in shared mode. Both live and die with the session: a
process that dies, is killed or loses its connection frees its shards at once,
and since every write of a shard's batches goes through that same session, no
batch of a shard can commit once its lock is gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg

AsyncConn = psycopg.AsyncConnection[Any]

SHARD_LOCK_CLASS = 0x46530000  # "FS" + 0: (class, shard) advisory locks
MEMBER_LOCK_CLASS = 0x46530001  # "FS" + 1: one shared lock per live ingest process


async def recorded_shards(conn: AsyncConn) -> int | None:
    async with conn.transaction():
        cur = await conn.execute("SELECT value FROM firesafe_meta WHERE key = 'shards'")
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def join(conn: AsyncConn) -> None:
    """Count this session among the live ingest processes."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_lock_shared(%s, 0)", (MEMBER_LOCK_CLASS,))


async def leave(conn: AsyncConn) -> None:
    """No longer count this session among the live ingest processes (it cannot
    reach the broker: the others share the shards without it)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_unlock_shared(%s, 0)", (MEMBER_LOCK_CLASS,))


async def try_lock(conn: AsyncConn, shard: int) -> bool:
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (SHARD_LOCK_CLASS, shard))
        row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConn, shard: int) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (SHARD_LOCK_CLASS, shard))


@dataclass(frozen=True, slots=True)
class ClusterView:
    members: list[int]  # backend pids of the live ingest processes
    owners: dict[int, int]  # shard -> backend pid of its owner


VIEW_SQL = """
SELECT l.classid::bigint AS classid, l.objid::bigint AS objid, l.pid
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint IN (%s, %s)
"""


async def view(conn: AsyncConn) -> ClusterView:
    """Who is alive and who owns what, as the database sees it now."""
    cur = await conn.execute(VIEW_SQL, (SHARD_LOCK_CLASS, MEMBER_LOCK_CLASS))
    members: list[int] = []
    owners: dict[int, int] = {}
    for cls, obj, pid in await cur.fetchall():
        if cls == MEMBER_LOCK_CLASS:
            members.append(int(pid))
        else:
            owners[int(obj)] = int(pid)
    return ClusterView(sorted(set(members)), owners)


async def others_hear_the_broker(conn: AsyncConn, members: list[int], own_pid: int) -> bool:
    """Whether another live ingest process (by its writer session's pid) said
    in its last report, within the last 15 s, that its broker sessions are up:
    then a shard this process cannot reach the broker for is better served
    there (when the broker is away for everyone, nobody hands anything over)."""
    others = [pid for pid in members if pid != own_pid]
    if not others:
        return False
    async with conn.transaction():
        cur = await conn.execute(
            """
            SELECT EXISTS (
                SELECT 1 FROM (
                    SELECT DISTINCT ON (backend_pid) broker_connected
                    FROM ingest_stats
                    WHERE backend_pid = ANY(%s) AND at > now() - interval '15 seconds'
                    ORDER BY backend_pid, at DESC
                ) latest
                WHERE broker_connected
            )
            """,
            (others,),
        )
        row = await cur.fetchone()
    return bool(row and row[0])


# The caller judges a peer stalled only if its own reports (every few seconds)
# had no gap this long over the peer's silence.
STEADY_REPORTS_S = 20.0


async def end_stalled_holders(conn: AsyncConn, stalled_s: float, own_pid: int | None) -> list[int]:
    """End the database sessions that hold shards for an ingest process that has
    not reported (`ingest_stats`, every few seconds) for `stalled_s` although
    its session is older than that: a process stopped or wedged with its
    connection alive keeps its locks for good, and its sites would go
    unwatched. Their shards are then free for the live processes. A process
    that comes back finds its session gone and starts over. `own_pid`: the
    caller's own session holding its shards, which must itself have reported
    without a gap of STEADY_REPORTS_S meanwhile (what held the peer did not
    hold it too). Returns the pids ended."""
    try:
        return await _end_stalled(conn, stalled_s, own_pid)
    except psycopg.errors.InsufficientPrivilege:
        # Another role's session (ingest processes should share one): left alone,
        # and /health shows its shards as stalled.
        return []


async def _end_stalled(conn: AsyncConn, stalled_s: float, own_pid: int | None) -> list[int]:
    async with conn.transaction():
        cur = await conn.execute(
            """
            WITH w AS (
                SELECT greatest(now() - make_interval(secs => %(stalled)s),
                                (SELECT backend_start FROM pg_stat_activity
                                 WHERE pid = %(own)s)) AS since
            )
            SELECT a.pid, pg_terminate_backend(a.pid)
            FROM pg_stat_activity a
            WHERE a.pid <> pg_backend_pid() AND a.pid IS DISTINCT FROM %(own)s
              AND a.backend_start < now() - make_interval(secs => %(stalled)s)
              AND a.pid IN (SELECT l.pid FROM pg_locks l
                            WHERE l.locktype = 'advisory' AND l.granted
                              AND l.classid::bigint = %(shard_class)s
                              AND l.database = (SELECT oid FROM pg_database
                                                WHERE datname = current_database()))
              AND NOT EXISTS (SELECT 1 FROM ingest_stats s
                              WHERE s.backend_pid = a.pid
                                AND s.at > now() - make_interval(secs => %(stalled)s))
              -- ... while the caller itself reported all along: a lock or a slow
              -- server that held every process (an outside check: a 75 s table
              -- lock, and the first process released ended its peer's session).
              -- (since its session began, if that was later)
              AND (%(own)s::int IS NULL OR (
                  SELECT max(g.gap) FROM (
                      SELECT t.at - lag(t.at) OVER (ORDER BY t.at) AS gap
                      FROM (SELECT s.at FROM ingest_stats s, w
                            WHERE s.backend_pid = %(own)s AND s.at > w.since
                            UNION ALL SELECT since FROM w
                            UNION ALL SELECT now()) t
                  ) g
              ) < make_interval(secs => %(steady)s))
            """,
            {
                "stalled": stalled_s,
                "shard_class": SHARD_LOCK_CLASS,
                "own": own_pid,
                "steady": STEADY_REPORTS_S,
            },
        )
        rows = await cur.fetchall()
    return [int(pid) for pid, _ in rows]


async def session_identity(conn: AsyncConn) -> tuple[int, Any]:
    """(backend pid, backend start): a session, told apart from a later one that
    happens to get the same pid."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def end_session(conn: AsyncConn, identity: tuple[int, Any]) -> bool:
    """End our own previous session if the server still keeps it (a connection
    lost on the way, not yet noticed by the server): its leases go with it.
    True when it is gone."""
    pid, started = identity
    for _ in range(20):
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = %s AND backend_start = %s",
                (pid, started),
            )
            row = await cur.fetchone()
        if row is None:
            return True
        await asyncio.sleep(0.1)
    return False
