"""GET /health (no auth): database, broker and ingest lag.

Anyone may ask (uptime probes, load balancers); which processes hold the
shards (host names, pids) and the API tasks' error texts are shown only to a
caller with an admin or operator token."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials
from psycopg_pool import PoolTimeout

from api.auth import is_admin_token
from api.deadline import DeadlineExceeded, bounded
from api.deps import StateDep, bearer
from api.jsonbody import JsonRoute
from api.schemas import (
    NOTIFICATIONS_OVERDUE_S,
    UNRAISED_FIRES_WITHIN_S,
    BrokerHealth,
    DatabaseHealth,
    Health,
    IngestHealth,
    JobHealth,
    NotificationsHealth,
    ShardProcess,
    ShardsHealth,
    StreamHealth,
    TaskHealth,
    UnraisedFires,
)
from api.state import AppState
from storage.queries import health as health_q
from storage.queries import tokens

router = APIRouter(tags=["operations"], route_class=JsonRoute)

# Ingest reports every few seconds; three missed reports mean it is stuck or gone.
STALE_AFTER_S = 15.0
# /health must answer quickly even when the pool is exhausted or the database
# hangs: a connection within DB_TIMEOUT_S, and its queries' answers within
# DB_ANSWER_S more (they take milliseconds).
DB_TIMEOUT_S = 2.0
DB_ANSWER_S = 2.0


@router.head("/health", include_in_schema=False)  # uptime probes and load balancers
@router.get(
    "/health",
    response_model=Health,
    summary="Liveness and state of database, broker, ingest and live feed (no auth)",
    description="Always 200 while the API runs (contract section 4); `status` is ok, or "
    "degraded when the database does not answer, ingest is stale (no report for "
    f"{STALE_AFTER_S:g} s) or absent, a shard is unheld or held by a process that stopped "
    "reporting (`shards.stalled`), the broker is disconnected, the live alarm "
    "feed (LISTEN) is down, a fire alarm came only as a reject in the last hour (from a "
    "device nobody registered, `unregistered_fires`, or as bad input from a registered "
    "one, `unreadable_fires`), or a background job failed its last run, stalled or is "
    "paused (listed in `failed_jobs`: TimescaleDB's compression, rollup refresh and retention; "
    "on plain PostgreSQL the rollup refresh ingest runs). Which processes hold the shards "
    "(`shards.processes`: host names, pids) and the tasks' and failed jobs' error texts "
    "and the topics and details of the fires above are shown only "
    "with an admin or operator token.",
)
async def health(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Health:
    token = credentials.credentials if credentials is not None else None
    report, staff = await _health(state, token)
    report.problems = problems(report)
    report.status = "degraded" if report.problems else "ok"
    if not staff:  # (a made-up or a manager's token: as without one)
        if report.database.error_detail is not None:  # (it names hosts and roles)
            report.database.error_detail = "(shown with a token)"
        if report.shards is not None:
            report.shards.processes = []
        for task in report.tasks.values():
            task.last_error = None if task.last_error is None else "(shown with a token)"
        for job in report.failed_jobs:  # (a database error names hosts and roles)
            job.last_error = None if job.last_error is None else "(shown with a token)"
        for unraised in (report.unregistered_fires, report.unreadable_fires):
            if unraised is not None:  # (a topic names a site and a device)
                for field in ("last_topic", "last_detail"):
                    if getattr(unraised, field):
                        setattr(unraised, field, "(shown with a token)")
    return report


async def _staff(conn: Any, state: AppState, token: str | None) -> bool:
    """An admin or operator token: it may see process names and error texts."""
    if not token:
        return False
    if is_admin_token(token, state.admin_token):
        return True
    row = await tokens.find_token(conn, token=token)
    return row is not None and row["role"] in ("admin", "operator")


def _api_parts(state: AppState) -> dict[str, Any]:
    return {
        "alarm_stream": StreamHealth(
            listening=state.hub.listening.is_set(), clients=state.hub.clients
        ),
        "tasks": {
            name: TaskHealth(state=t.state, restarts=t.restarts, last_error=t.last_error)
            for name, t in state.tasks.states.items()
        },
    }


async def _health(state: AppState, token: str | None) -> tuple[Health, bool]:
    """The report, and whether the caller may see its details."""
    started = time.perf_counter()

    async def read() -> tuple[float, Any, Any, Any, Any, Any, Any, bool]:
        async with state.pool.connection(timeout=DB_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
            latency_ms = (time.perf_counter() - started) * 1000
            return (
                latency_ms,
                await health_q.ingest_instances(conn),
                await health_q.background_jobs(conn),
                await health_q.shard_owners(conn),
                await health_q.flavour(conn),
                await health_q.notifications(conn, NOTIFICATIONS_OVERDUE_S),
                await health_q.unraised_fires(conn, UNRAISED_FIRES_WITHIN_S),
                await _staff(conn, state, token),
            )

    try:
        # A hung database answers nothing, not even an error: bounded here.
        (
            latency_ms,
            instances,
            jobs,
            (shard_count, owners),
            flavour,
            notes,
            unraised,
            staff,
        ) = await bounded(read(), DB_TIMEOUT_S + DB_ANSWER_S)
    except (psycopg.Error, PoolTimeout, DeadlineExceeded) as exc:
        staff = token is not None and is_admin_token(token, state.admin_token)
        detail = str(exc) if isinstance(exc, psycopg.Error) else None
        if isinstance(exc, PoolTimeout) and staff:  # (a probe is not kept waiting for it)
            try:
                detail = await bounded(_why_no_connection(state), DB_TIMEOUT_S + DB_ANSWER_S)
            except DeadlineExceeded as late:
                detail = str(late)
        return Health(
            **_api_parts(state),
            status="degraded",
            database=DatabaseHealth(
                ok=False, latency_ms=None, error=type(exc).__name__, error_detail=detail
            ),
            broker=BrokerHealth(connected=None),
            ingest=IngestHealth(
                state="unknown",
                last_report_at=None,
                age_s=None,
                lag_ms=None,
                queue_depth=None,
                instances=0,
            ),
        ), staff
    notifications = NotificationsHealth.model_validate(notes)
    unregistered = UnraisedFires.model_validate(unraised[True])
    unreadable = UnraisedFires.model_validate(unraised[False])
    database = DatabaseHealth(ok=True, latency_ms=round(latency_ms, 3), flavour=flavour)
    failed_jobs = [JobHealth.model_validate(j) for j in jobs if j["failed"]]
    shards = _shards(shard_count, owners, instances)
    if not instances:
        return Health(
            **_api_parts(state),
            status="degraded",
            failed_jobs=failed_jobs,
            notifications=notifications,
            unregistered_fires=unregistered,
            unreadable_fires=unreadable,
            database=database,
            shards=shards,
            broker=BrokerHealth(connected=None),
            ingest=IngestHealth(
                state="absent",
                last_report_at=None,
                age_s=None,
                lag_ms=None,
                queue_depth=None,
                instances=0,
            ),
        ), staff
    newest = instances[0]
    age_s = float(newest["age_s"])
    # Reported lately, and its database session still there: a process killed
    # outright is not counted for the STALE_AFTER_S its last report stays young.
    fresh = [i for i in instances if float(i["age_s"]) <= STALE_AFTER_S and i["alive"]]
    ingest_state: Literal["ok", "stale"] = "ok" if fresh else "stale"
    reporting = fresh or [newest]
    connected = all(i["broker_connected"] for i in reporting)
    lags = [float(i["lag_ms"]) for i in reporting if i["lag_ms"] is not None]
    return Health(
        **_api_parts(state),
        status="degraded",  # (until `problems` finds none)
        failed_jobs=failed_jobs,
        notifications=notifications,
        unregistered_fires=unregistered,
        unreadable_fires=unreadable,
        database=database,
        shards=shards,
        broker=BrokerHealth(connected=connected),
        ingest=IngestHealth(
            state=ingest_state,
            last_report_at=newest["at"],
            age_s=round(max(age_s, 0.0), 3),
            lag_ms=max(lags) if lags else None,
            queue_depth=sum(int(i["queue_depth"]) for i in reporting),
            instances=len(reporting),
        ),
    ), staff


def problems(h: Health) -> list[str]:
    """Every check that makes the report degraded, by name (a caller need not
    scan each part to find why: one forged fire kept it degraded for an hour)."""
    failed = {
        "database": not h.database.ok,
        "ingest": h.database.ok and h.ingest.state != "ok",
        "broker": h.broker.connected is False,
        "shards_unowned": h.shards is not None and bool(h.shards.unowned),
        "shards_stalled": h.shards is not None and bool(h.shards.stalled),
        "failed_jobs": bool(h.failed_jobs),
        "notifications": h.notifications is not None and not _delivering(h.notifications),
        "unregistered_fires": h.unregistered_fires is not None and h.unregistered_fires.count > 0,
        "unreadable_fires": h.unreadable_fires is not None and h.unreadable_fires.count > 0,
        "alarm_stream": not h.alarm_stream.listening,
        "api_tasks": any(t.state != "running" for t in h.tasks.values()),
    }
    return [name for name, bad in failed.items() if bad]


async def _why_no_connection(state: AppState) -> str | None:
    """The pool only says it timed out; a connection of its own says why."""
    conninfo = state.pool.conninfo
    if not isinstance(conninfo, str):  # (never here: the API's pool is given a URL)
        return None
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=int(DB_TIMEOUT_S))
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    await conn.close()
    return None


def _delivering(n: NotificationsHealth) -> bool:
    """Notifications reach people: a notifier runs where rules exist, none is
    overdue, and none is failing at its target."""
    return not n.overdue and not n.failing and (n.notifiers > 0 or n.rules == 0)


def _shards(count: int, owners: dict[int, int], instances: list[dict[str, Any]]) -> ShardsHealth:
    """Ownership from the leases themselves; names and takeovers from each holder's
    latest report (matched by its database session)."""
    by_pid: dict[int, dict[str, Any]] = {}
    for i in sorted(instances, key=lambda r: r["at"]):  # the newest report wins
        if i.get("backend_pid") is not None:
            by_pid[i["backend_pid"]] = i
    held: dict[int, list[int]] = {}
    for shard, pid in owners.items():
        held.setdefault(pid, []).append(shard)
    processes = []
    for pid, shards in sorted(held.items()):
        report = by_pid.get(pid, {})
        age = float(report["age_s"]) if report else None
        processes.append(
            ShardProcess(
                instance=report.get("instance"),
                backend_pid=pid,
                shards=sorted(shards),
                takeovers=report.get("takeovers"),
                report_age_s=None if age is None else round(max(age, 0.0), 3),
            )
        )
    return ShardsHealth(
        count=count,
        owned=len(owners),
        unowned=[k for k in range(count) if k not in owners],
        stalled=sorted(
            k
            for p in processes
            if p.report_age_s is not None and p.report_age_s > STALE_AFTER_S
            for k in p.shards
        ),
        processes=processes,
    )
