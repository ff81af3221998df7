# ruff: noqa: E501  (SQL reads better unwrapped)
"""The platform-health dashboard (uid firesafe-platform): ingest
throughput, latency, queue depth, lag, rejects, seq gaps.
"""

from __future__ import annotations

from typing import Any

from .kit import (
    Json,
    _,
    dashboard,
    label_sql,
    quote,
    table,
    timeseries,
    variable,
)


def platform() -> Json:
    def counter_rates(
        title: str,
        counters: list[tuple[str, str]],
        unit: str,
        description: str,
        per_second: bool = True,
    ) -> Json:
        """Rates of ingest_stats counters (counted since each instance started)."""
        deltas = (",\n" + " " * 23).join(
            f"CASE WHEN s.{c} >= lag(s.{c}) OVER w THEN s.{c} - lag(s.{c}) OVER w ELSE s.{c} END AS {c}"
            for c, _ in counters
        )
        values = ", ".join(f"('{quote(_(name))}', d.{c})" for c, name in counters)
        value = "sum(v.delta) / sum(d.secs)" if per_second else "sum(v.delta)"
        return timeseries(
            title,
            f"""
            WITH d AS (
                SELECT s.at, s.instance,
                       extract(epoch FROM s.at - lag(s.at) OVER w) AS secs,
                       {deltas}
                FROM ingest_stats s
                WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
                WINDOW w AS (PARTITION BY s.instance ORDER BY s.at)
            )
            SELECT $__timeGroupAlias(d.at, $__interval), d.instance || ' ' || v.metric AS metric,
                   {value} AS value
            FROM d
            CROSS JOIN LATERAL (VALUES {values}) AS v(metric, delta)
            WHERE d.secs > 0
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            unit=unit,
            interval="10s",
            description=description,
        )

    throughput = counter_rates(
        "Ingest throughput",
        [("messages", "messages/s"), ("readings", "readings/s")],
        "short",
        "Messages and readings per second per ingest instance, from the counters in "
        "ingest_stats (a counter that went down means the instance restarted).",
    )
    quality = counter_rates(
        "Seq gaps, duplicates and rejects",
        [("seq_gaps", "seq gaps"), ("duplicates", "duplicates"), ("rejects", "rejects")],
        "short",
        "Readings missing according to seq, duplicates stored once, and rejected messages, "
        "per interval.",
        per_second=False,
    )

    def gauge_series(title: str, expr: str, unit: str, description: str) -> Json:
        return timeseries(
            title,
            f"""
            SELECT $__timeGroupAlias(s.at, $__interval), s.instance AS metric, {expr} AS value
            FROM ingest_stats s
            WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            unit=unit,
            interval="10s",
            description=description,
        )

    latency = gauge_series(
        "Batch latency (p95)",
        "max(s.batch_latency_ms)",
        "ms",
        "Arrival-to-commit p95 of each reporting interval (worst per Grafana interval).",
    )
    queue = gauge_series(
        "Queue depth",
        "max(s.queue_depth)",
        "short",
        "Messages waiting between MQTT intake and the writer.",
    )
    lag = gauge_series(
        "Ingest lag", "max(s.lag_ms)", "ms", "Age of the oldest uncommitted message."
    )
    held = gauge_series(
        "Shards per process",
        "max(cardinality(s.shards))",
        "short",
        "Site shards each ingest process holds (each process aims at ceil(shards / processes)).",
    )
    takeovers = counter_rates(
        "Shard takeovers",
        [("takeovers", "takeovers")],
        "short",
        "Shards taken over per interval: a process joined, left or died.",
        per_second=False,
    )
    rejects = timeseries(
        "Rejects by reason",
        f"""
        SELECT $__timeGroupAlias(r.received_at, $__interval), {label_sql("reject_reason", "r.reason")} AS metric, count(*) AS value
        FROM rejects r
        WHERE $__timeFilter(r.received_at)
        GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        bars=True,
        interval="1m",
        description="Bad input kept in the reject store (contract section 3), per reason.",
    )
    instances = table(
        "Ingest instances (latest report in range)",
        """
        SELECT DISTINCT ON (s.instance) s.instance, s.at AS "reported", s.broker_connected AS "broker",
               cardinality(s.shards) AS "shards",
               s.queue_depth AS "queue", s.lag_ms AS "lag (ms)", s.batch_latency_ms AS "p95 (ms)",
               s.messages, s.readings, s.rejects
        FROM ingest_stats s
        WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
        ORDER BY s.instance, s.at DESC
        """,
    )

    def newest_rejects(title: str, relation: str, **kw: Any) -> Json:
        """The newest 100 rows of `relation` (rejects, or a view of them) in the range."""
        return table(
            title,
            f"""
            SELECT r.received_at AS time, {label_sql("reject_reason", "r.reason")} AS reason,
                   r.topic, r.device_id AS device, r.detail
            FROM {relation} r
            WHERE $__timeFilter(r.received_at)
            ORDER BY r.received_at DESC, r.id DESC
            LIMIT 100
            """,
            **kw,
        )

    recent = newest_rejects("Recent rejects", "rejects")
    unraised = newest_rejects(
        "Fire alarms that raised no alarm",
        "unraised_fire_rejects",
        description="Fire alarms that reached the platform only as rejects: from a device "
        "that is not registered (or not at that site; reason unknown device or site "
        "mismatch), or bad input from a registered one (a call point's activated event "
        "with ts in seconds, no seq; a fire panel's alarms the gateway could not raise). "
        "Call the building, then register or fix the device; /health is degraded while one "
        "came within the last hour.",
    )
    jobs = table(
        "Background jobs",
        """
        SELECT j.job, j.target, j.last_run_status AS "last run", j.total_runs AS runs,
               j.total_failures AS failures, j.last_successful_finish AS "last success",
               j.last_error_at AS "last error at", j.last_error AS "last error"
        FROM firesafe_job_health j
        ORDER BY j.failed DESC, j.job_id
        """,
        description="The database's background jobs and how their last run went: on "
        "TimescaleDB the compression, rollup refresh and retention policies, on plain "
        "PostgreSQL the rollup refresh ingest runs. A failed job means that work has stopped: "
        "chunks are no longer compressed, the 1-minute rollup lags, or old telemetry is kept. "
        "/health turns degraded and /metrics has firesafe_db_job_failed{job} for the same jobs.",
    )
    totals = table(
        "Rejects since installation",
        f"SELECT {label_sql('reject_reason', 'reason')} AS reason, count FROM reject_counts "
        "ORDER BY count DESC, reject_counts.reason",
    )
    instance = variable(
        "instance",
        "Ingest instance",
        "SELECT DISTINCT s.instance FROM ingest_stats s WHERE $__timeFilter(s.at) ORDER BY 1",
        refresh=2,
    )
    return dashboard(
        "firesafe-platform",
        "Firesafe — Platform health",
        description="Ingest throughput, latency, queue depth, lag, rejects, seq gaps and the "
        "database's background jobs.",
        tags=["platform"],
        time_from="now-1h",
        refresh="10s",
        variables=[instance],
        annotations=[],
        rows=[
            [(instances, 24, 6)],
            [(unraised, 24, 5)],
            [(jobs, 24, 5)],
            [(throughput, 12, 8), (latency, 12, 8)],
            [(queue, 8, 8), (lag, 8, 8), (quality, 8, 8)],
            [(held, 12, 8), (takeovers, 12, 8)],
            [(rejects, 12, 8), (totals, 12, 8)],
            [(recent, 24, 9)],
        ],
    )
