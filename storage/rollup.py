"""The 1-minute rollup of telemetry on plain PostgreSQL, refreshed apart from
ingest's transactions as TimescaleDB refreshes its continuous aggregate.

A batch only notes which minutes it wrote (`note_minutes`: a few rows in
`rollup_pending`); `refresh` later recomputes each noted minute from the
stored rows, per device and whole, once no batch has touched it for a few
seconds. Until
then `telemetry_1m` aggregates that minute straight from `telemetry`
(real-time aggregation, migration 0130), so readers never see a stale or
missing minute. Recomputing a minute whole makes the refresh idempotent and
exact whatever order, duplicates or late rows the batches had.

Upserting each batch's minutes inside its own transaction cost the gateway
path as much as storing the rows (README, bench/profile_gateway.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from firesafe.contract import READINGS

MINUTE_MS = 60_000
# A minute is recomputed once no batch has noted it for SETTLE (so a minute
# still filling is not recomputed over and over), or once its first note is
# MAX_WAIT old (a minute that keeps being written is still materialised).
SETTLE = timedelta(seconds=5)
MAX_WAIT = timedelta(seconds=60)
# Minutes recomputed per transaction: a long backlog goes in bounded steps.
MINUTES_PER_ROUND = 120
REFRESH_LOCK = 0x46495252  # advisory lock key: one refresher at a time in a cluster

_NOTE = (
    "INSERT INTO rollup_pending (bucket) SELECT to_timestamp(m * 60) FROM unnest(%s::bigint[]) m"
)

_READY = """
SELECT bucket FROM rollup_pending
WHERE bucket <> ALL(%(refused)s::timestamptz[])
GROUP BY bucket
HAVING max(noted_at) < now() - %(settle)s OR min(noted_at) < now() - %(max_wait)s
ORDER BY bucket
LIMIT %(limit)s
"""
_AGGREGATES = ", ".join(f"min(t.{r}), max(t.{r}), sum(t.{r}), count(t.{r})" for r in READINGS)
_COLUMNS = [f"{r}_{x}" for r in READINGS for x in ("min", "max", "sum", "n")]
# A (device, minute) row is replaced whole, never deleted: rows whose raw
# readings retention has dropped stay as they were.
_RECOMPUTE = (
    "DELETE FROM rollup_pending WHERE bucket = ANY(%(ready)s)",
    f"""
INSERT INTO telemetry_rollup_1m (bucket, device_id, samples, {", ".join(_COLUMNS)})
SELECT b.bucket, t.device_id, count(*), {_AGGREGATES}
FROM unnest(%(ready)s::timestamptz[]) AS b(bucket)
JOIN telemetry t ON t.ts >= b.bucket AND t.ts < b.bucket + interval '1 minute'
GROUP BY b.bucket, t.device_id
ON CONFLICT (device_id, bucket) DO UPDATE SET samples = EXCLUDED.samples,
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS)}
""",
)

# Its runs, as firesafe_job_health shows them (migration 0131).
_RUN_STARTED = """
INSERT INTO rollup_refresh_runs AS r (total_runs, last_run_started_at) VALUES (1, now())
ON CONFLICT (only_row) DO UPDATE SET total_runs = r.total_runs + 1, last_run_started_at = now()
"""
_RUN_SUCCEEDED = "UPDATE rollup_refresh_runs SET last_successful_finish = clock_timestamp()"
_RUN_FAILED = """
UPDATE rollup_refresh_runs
SET total_failures = total_failures + 1, last_error = %s, last_error_at = clock_timestamp()
"""


async def note_minutes(cur: psycopg.AsyncCursor[Any], ts_ms: NDArray[np.int64]) -> None:
    """Inside a batch's transaction: these readings' minutes need recomputing.
    Committed with the rows, so a refresh sees both or neither."""
    if ts_ms.size:
        await cur.execute(_NOTE, (np.unique(ts_ms // MINUTE_MS).tolist(),))


class RefreshFailed(Exception):
    """Some noted minutes could not be recomputed (the others were)."""


async def refresh(
    conn: psycopg.AsyncConnection[Any],
    *,
    settle: timedelta = SETTLE,
    max_wait: timedelta = MAX_WAIT,
) -> int:
    """Recompute every noted minute that is ready; return how many. `conn` is
    in autocommit mode. Another process refreshing already: nothing done.

    A minute the database refuses to aggregate (a value its floats cannot
    sum) holds back no other: it keeps its notes, the run is recorded as
    failed and RefreshFailed names it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (REFRESH_LOCK,))
    locked = await cur.fetchone()
    if not locked or not locked[0]:
        return 0
    done, refused = 0, dict[datetime, str]()
    try:
        await conn.execute(_RUN_STARTED)
        while True:
            cur = await conn.execute(
                _READY,
                {
                    "settle": settle,
                    "max_wait": max_wait,
                    "refused": list(refused),
                    "limit": MINUTES_PER_ROUND,
                },
            )
            ready = [row[0] for row in await cur.fetchall()]
            try:
                await _recompute(conn, ready)
                done += len(ready)
            except psycopg.errors.DataError:
                for minute in ready:  # find the one(s) at fault
                    try:
                        await _recompute(conn, [minute])
                        done += 1
                    except psycopg.errors.DataError as exc:
                        refused[minute] = str(exc)
            if len(ready) < MINUTES_PER_ROUND:
                break
        if refused:
            minute, error = min(refused.items())
            raise RefreshFailed(
                f"{len(refused)} minute(s) could not be rolled up, the first {minute}: {error}"
            )
        await conn.execute(_RUN_SUCCEEDED)
        return done
    except (psycopg.Error, RefreshFailed) as exc:
        if not conn.closed:  # shown by firesafe_job_health (/health, /metrics, Grafana)
            await conn.execute(_RUN_FAILED, (str(exc)[:1000],))
        raise
    finally:
        if not conn.closed:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (REFRESH_LOCK,))


async def refresh_database(url: str, application: str = "firesafe", **kw: Any) -> int:
    """`refresh` on a connection of its own (keywords as `refresh`)."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=application
    ) as conn:
        return await refresh(conn, **kw)


async def _recompute(conn: psycopg.AsyncConnection[Any], minutes: list[datetime]) -> None:
    """One REPEATABLE READ transaction: the notes it deletes and the rows it
    aggregates are from the same snapshot, so a batch that commits meanwhile
    leaves its note for the next round."""
    if not minutes:
        return
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for statement in _RECOMPUTE:
            await conn.execute(statement, {"ready": minutes})
