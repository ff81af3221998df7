"""GET /health (no auth): database, broker and ingest lag."""

from __future__ import annotations

import time
from typing import Literal

import psycopg
from fastapi import APIRouter, Response
from psycopg_pool import PoolTimeout

from api.deps import StateDep
from api.schemas import BrokerHealth, DatabaseHealth, Health, IngestHealth, JobHealth
from storage.queries import health as health_q

router = APIRouter(tags=["operations"])

# Ingest reports every few seconds; three missed reports mean it is stuck or gone.
STALE_AFTER_S = 15.0
# /health must answer quickly even when the pool is exhausted or the database hangs.
DB_TIMEOUT_S = 2.0


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database unreachable"}},
    summary="Liveness and state of database, broker and ingest (no auth)",
    description="200 when the database answers (`status` ok or degraded: ingest stale "
    f"(no report for {STALE_AFTER_S:g} s) or absent, broker disconnected, or a "
    "TimescaleDB background job failed its last run, listed in `failed_jobs`); 503 when "
    "it does not (`status` down).",
)
async def health(state: StateDep, response: Response) -> Health:
    started = time.perf_counter()
    try:
        async with state.pool.connection(timeout=DB_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
            latency_ms = (time.perf_counter() - started) * 1000
            instances = await health_q.ingest_instances(conn)
            jobs = await health_q.background_jobs(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        response.status_code = 503
        return Health(
            status="down",
            database=DatabaseHealth(ok=False, latency_ms=None, error=type(exc).__name__),
            broker=BrokerHealth(connected=None),
            ingest=IngestHealth(
                state="unknown",
                last_report_at=None,
                age_s=None,
                lag_ms=None,
                queue_depth=None,
                instances=0,
            ),
        )
    database = DatabaseHealth(ok=True, latency_ms=round(latency_ms, 3))
    failed_jobs = [JobHealth.model_validate(j) for j in jobs if j["failed"]]
    if not instances:
        return Health(
            status="degraded",
            failed_jobs=failed_jobs,
            database=database,
            broker=BrokerHealth(connected=None),
            ingest=IngestHealth(
                state="absent",
                last_report_at=None,
                age_s=None,
                lag_ms=None,
                queue_depth=None,
                instances=0,
            ),
        )
    newest = instances[0]
    age_s = float(newest["age_s"])
    fresh = [i for i in instances if float(i["age_s"]) <= STALE_AFTER_S]
    ingest_state: Literal["ok", "stale"] = "ok" if fresh else "stale"
    reporting = fresh or [newest]
    connected = any(i["broker_connected"] for i in reporting)
    lags = [float(i["lag_ms"]) for i in reporting if i["lag_ms"] is not None]
    ok = ingest_state == "ok" and connected and not failed_jobs
    return Health(
        status="ok" if ok else "degraded",
        failed_jobs=failed_jobs,
        database=database,
        broker=BrokerHealth(connected=connected),
        ingest=IngestHealth(
            state=ingest_state,
            last_report_at=newest["at"],
            age_s=round(max(age_s, 0.0), 3),
            lag_ms=max(lags) if lags else None,
            queue_depth=sum(int(i["queue_depth"]) for i in reporting),
            instances=len(reporting),
        ),
    )
