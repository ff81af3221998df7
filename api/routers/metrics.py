"""GET /metrics: Prometheus text format, read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES
from api.jsonbody import JsonRoute
from api.routers import notifications
from storage.queries import health as health_q
from storage.queries import rejects as reject_q
from storage.queries import stats as stats_q

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES, route_class=JsonRoute)

# ingest_stats columns exported per instance: (column, metric, help, is_counter).
_INGEST_FIGURES = (
    ("messages", "firesafe_ingest_messages", "Messages received", True),
    ("readings", "firesafe_ingest_readings", "Readings stored", True),
    ("events", "firesafe_ingest_events", "Device events stored", True),
    ("rejects", "firesafe_ingest_rejects", "Messages rejected", True),
    ("duplicates", "firesafe_ingest_duplicates", "Duplicate readings dropped", True),
    ("seq_gaps", "firesafe_ingest_seq_gaps", "Readings missing by seq", True),
    ("batches", "firesafe_ingest_batches", "Batches committed", True),
    ("queue_depth", "firesafe_ingest_queue_depth", "Messages waiting", False),
    ("lag_ms", "firesafe_ingest_lag_ms", "Age of the oldest uncommitted message", False),
    ("batch_latency_ms", "firesafe_ingest_batch_latency_ms", "p95 arrival-to-commit", False),
    ("age_s", "firesafe_ingest_report_age_seconds", "Age of the instance's last report", False),
)


class _Snapshot(Collector):
    """Metric families computed before the scrape (collect() cannot await)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        }
    },
    summary="Prometheus metrics (admin, operator)",
)
async def metrics(conn: ConnDep, caller: CallerDep) -> Response:
    caller.require("admin", "operator")
    rejects = CounterMetricFamily(
        "firesafe_rejects", "Rejected messages by reason", labels=["reason"]
    )
    for reason, count in (await reject_q.reject_counts(conn)).items():
        rejects.add_metric([reason], count)
    open_alarms = GaugeMetricFamily(
        "firesafe_open_alarms", "Alarms not cleared", labels=["type", "verdict"]
    )
    for row in await stats_q.open_alarm_counts(conn):
        open_alarms.add_metric([row["type"], row["verdict"]], row["n"])
    families: list[Metric] = [rejects, open_alarms]
    instances = await health_q.ingest_instances(conn)
    for column, name, help_text, counter in _INGEST_FIGURES:
        family: Metric = (
            CounterMetricFamily(name, help_text, labels=["instance"])
            if counter
            else GaugeMetricFamily(name, help_text, labels=["instance"])
        )
        for inst in instances:
            if inst[column] is not None:
                family.add_metric([inst["instance"]], float(inst[column]))  # type: ignore[attr-defined]
        families.append(family)
    connected = GaugeMetricFamily(
        "firesafe_ingest_broker_connected",
        "1 when the instance is connected to the broker",
        labels=["instance"],
    )
    for inst in instances:
        connected.add_metric([inst["instance"]], 1.0 if inst["broker_connected"] else 0.0)
    families.append(connected)
    families.extend(_job_families(await health_q.background_jobs(conn)))
    families += _shard_families(instances, *await health_q.shard_owners(conn))
    families.extend(await notifications.metric_families(conn))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _job_families(jobs: list[dict[str, Any]]) -> list[Metric]:
    """One gauge per TimescaleDB policy job: did its last run fail, and failures so far."""
    labels = ["job_id", "job", "target"]
    failed = GaugeMetricFamily(
        "firesafe_db_job_failed",
        "1 when the background job's last run failed (compression, refresh, retention)",
        labels=labels,
    )
    failures = CounterMetricFamily(
        "firesafe_db_job_failures", "Failed runs of the background job", labels=labels
    )
    for j in jobs:
        key = [str(j["job_id"]), j["job"], j["target"] or ""]
        failed.add_metric(key, 1.0 if j["failed"] else 0.0)
        failures.add_metric(key, float(j["total_failures"]))
    return [failed, failures]


def _shard_families(
    instances: list[dict[str, Any]], count: int, owners: dict[int, int]
) -> list[Metric]:
    """Per shard: held or not, and the queue depth and lag its holder reported."""
    owned = GaugeMetricFamily(
        "firesafe_shard_owned", "1 while a live process holds the shard", labels=["shard"]
    )
    depth = GaugeMetricFamily(
        "firesafe_shard_queue_depth",
        "Messages of the shard waiting in its holder",
        labels=["shard"],
    )
    lag = GaugeMetricFamily(
        "firesafe_shard_lag_ms", "Age of the shard's oldest waiting message", labels=["shard"]
    )
    takeovers = CounterMetricFamily(
        "firesafe_ingest_takeovers", "Shards taken over", labels=["instance"]
    )
    for k in range(count):
        owned.add_metric([str(k)], 1.0 if k in owners else 0.0)
    holders = {owners[k]: k for k in owners}
    for inst in instances:
        if inst.get("takeovers") is not None:
            takeovers.add_metric([inst["instance"]], float(inst["takeovers"]))
        if inst.get("backend_pid") not in holders:
            continue  # a report from a session that holds nothing now
        for shard, figures in (inst.get("shard_stats") or {}).items():
            depth.add_metric([shard], float(figures.get("queue_depth", 0)))
            lag.add_metric([shard], float(figures.get("lag_ms", 0)))
    return [owned, depth, lag, takeovers]
