"""Shard ownership in PostgreSQL (ingest/shards.py says what a shard is).

A process owns shard k while its writer session holds the advisory lock
(SHARD_LOCK_CLASS, k), and is a member of the cluster while that session holds
(MEMBER_LOCK_CLASS, 0) in shared mode. Both live and die with the session: a
process that dies, is killed or loses its connection frees its shards at once,
and since every write of a shard's batches goes through that same session, no
batch of a shard can commit once its lock is gone.
"""

from __future__ import annotations

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


_VIEW = """
SELECT l.classid::bigint, l.objid::bigint, l.pid
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint IN (%s, %s)
"""


async def view(conn: AsyncConn) -> ClusterView:
    """Who is alive and who owns what, as the database sees it now."""
    cur = await conn.execute(_VIEW, (SHARD_LOCK_CLASS, MEMBER_LOCK_CLASS))
    members: list[int] = []
    owners: dict[int, int] = {}
    for cls, obj, pid in await cur.fetchall():
        if cls == MEMBER_LOCK_CLASS:
            members.append(int(pid))
        else:
            owners[int(obj)] = int(pid)
    return ClusterView(sorted(set(members)), owners)


async def backend_pid(conn: AsyncConn) -> int:
    return int(conn.info.backend_pid)
