"""Background jobs that stopped are shown: /health degraded, /metrics, and migrate
leaves healthy policies alone (TimescaleDB)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from ingest import mqtt as ingest_mqtt
from storage import migrate as migrate_mod
from tests.helpers import refresh_rollup, wait_for
from tests.test_api_support import ADMIN, live_server
from tests.test_storage_rollup import refresh_now

pytestmark = pytest.mark.integration

# What TimescaleDB reports for a policy whose runs fail (e.g. on PostgreSQL 15.20
# with TimescaleDB 2.28.3: "cannot drop portal while it is being set up").
FAILED_JOB_VIEW = """
DROP VIEW firesafe_job_health;
CREATE VIEW firesafe_job_health AS
SELECT 999999 AS job_id, 'Retention Policy [999999]'::text AS job,
       'policy_retention'::text AS proc_name, 'telemetry'::text AS target,
       'Failed'::text AS last_run_status, 'Scheduled'::text AS job_status,
       4::bigint AS total_runs, 3::bigint AS total_failures,
       now() - interval '1 hour' AS last_run_started_at,
       now() - interval '3 days' AS last_successful_finish,
       now() + interval '1 hour' AS next_start,
       'cannot drop portal while it is being set up'::text AS last_error,
       now() - interval '1 hour' AS last_error_at,
       true AS failed
"""


def _restore_view(conn: psycopg.Connection[Any], flavour: str) -> None:
    """The view as the newest migration of this flavour that defines it."""
    [*_, newest] = [
        m
        for m in migrate_mod.load_migrations(flavour)  # type: ignore[arg-type]
        if "VIEW firesafe_job_health" in m.sql
    ]
    conn.execute(b"DROP VIEW firesafe_job_health")
    with conn.transaction():
        for statement in newest.statements():
            if "firesafe_job_health" in statement:
                conn.execute(statement.encode())


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


def test_session_expiry_and_rollup_window_agree() -> None:
    """The rollup's refresh window covers what the broker may still deliver."""
    assert migrate_mod.BROKER_SESSION_EXPIRY.total_seconds() == ingest_mqtt.SESSION_EXPIRY_S
    assert migrate_mod.ROLLUP_REFRESH_START_OFFSET > migrate_mod.BROKER_SESSION_EXPIRY


def test_failed_jobs_are_exactly_the_failed_policies(api_url: str, db: str, flavour: str) -> None:
    """None on a fresh plain PostgreSQL; on TimescaleDB exactly the jobs whose last run failed
    (on PostgreSQL 15.20 with TimescaleDB 2.28.3 that is every policy, soon after
    it is created: "cannot drop portal while it is being set up")."""
    failed = httpx.get(f"{api_url}/health", headers=ADMIN).json()["failed_jobs"]
    listed = {j["job_id"] for j in failed}
    if flavour == "plain":
        assert listed == set()
        return
    with psycopg.connect(db, autocommit=True) as conn:
        failed = {
            r[0]
            for r in conn.execute(
                "SELECT job_id FROM timescaledb_information.job_stats "
                "WHERE job_id >= 1000 AND last_run_status = 'Failed'"
            )
        }
    # A job may fail between the two reads, never the other way round.
    assert listed <= failed


def test_a_failed_job_turns_health_degraded_and_shows_in_metrics(
    api_url: str, db: str, flavour: str
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(FAILED_JOB_VIEW)
        try:
            r = httpx.get(f"{api_url}/health", headers=ADMIN)
            assert r.status_code == 200
            body = r.json()
            assert body["status"] == "degraded"
            [job] = body["failed_jobs"]
            assert job["job"] == "Retention Policy [999999]"
            assert job["target"] == "telemetry"
            assert job["total_failures"] == 3
            assert job["last_error"] == "cannot drop portal while it is being set up"
            # Without a token the failure shows, not its text (an outside check:
            # a database error names hosts and roles).
            [anonymous] = httpx.get(f"{api_url}/health").json()["failed_jobs"]
            assert anonymous["last_error"] == "(shown with a token)"
            text = httpx.get(f"{api_url}/metrics", headers=ADMIN).text
            labels = 'job="Retention Policy [999999]",job_id="999999",target="telemetry"'
            assert f"firesafe_db_job_failed{{{labels}}} 1.0" in text
            assert f"firesafe_db_job_failures_total{{{labels}}} 3.0" in text
        finally:
            _restore_view(conn, flavour)
    listed = httpx.get(f"{api_url}/health", headers=ADMIN).json()["failed_jobs"]
    assert 999999 not in {j["job_id"] for j in listed}  # the real view is back


# --- TimescaleDB only -------------------------------------------------------------


def _policy_jobs(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        """
        SELECT proc_name, job_id, config, schedule_interval
        FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id
        """
    ).fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def test_migrate_leaves_unchanged_policies_alone(database_url: str, flavour: str) -> None:
    if flavour != "timescale":
        pytest.skip("TimescaleDB policies")
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = _policy_jobs(conn)
        assert {"policy_retention", "policy_refresh_continuous_aggregate"} <= before.keys()
        for _ in range(3):
            migrate_mod.migrate(database_url, retention_days=365)
        assert _policy_jobs(conn) == before  # same ids, same settings
        refresh = before["policy_refresh_continuous_aggregate"]
        config = refresh[1]
        assert isinstance(config, dict)
        start = conn.execute("SELECT %s::interval", (config["start_offset"],)).fetchone()
        assert start is not None
        assert start[0] == migrate_mod.ROLLUP_REFRESH_START_OFFSET
        # A changed setting changes the job in place.
        migrate_mod.migrate(database_url, retention_days=30)
        after = _policy_jobs(conn)
        assert after["policy_retention"][0] == before["policy_retention"][0]
        drop = conn.execute(
            "SELECT %s::interval = interval '30 days'",
            (after["policy_retention"][1]["drop_after"],),
        ).fetchone()
        assert drop == (True,)
        migrate_mod.migrate(database_url, retention_days=365)


def test_a_really_failing_job_is_reported(api_url: str, db: str, flavour: str) -> None:
    if flavour != "timescale":
        pytest.skip("TimescaleDB's job scheduler")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            """
            CREATE OR REPLACE PROCEDURE firesafe_test_failing_job(job_id int, config jsonb)
            LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'firesafe test: this job fails'; END $$
            """
        )
        job_id = conn.execute(
            "SELECT add_job('firesafe_test_failing_job', '1 hour', initial_start => now())"
        ).fetchone()[0]  # type: ignore[index]
        try:

            def failed() -> list[dict[str, Any]]:
                body = httpx.get(f"{api_url}/health", headers=ADMIN).json()
                return [j for j in body["failed_jobs"] if j["job_id"] == job_id]

            [job] = wait_for(failed, timeout=60, interval=1.0)
            assert httpx.get(f"{api_url}/health", headers=ADMIN).json()["status"] == "degraded"
            assert job["total_failures"] >= 1
            assert job["last_error"]
        finally:
            conn.execute("SELECT delete_job(%s)", (job_id,))


def test_a_reading_days_late_reaches_the_rollup_at_the_next_refresh(db: str, flavour: str) -> None:
    """The broker may deliver a reading up to its session expiry (7 days) late; the
    refresh policy's window must still cover it (it was 1 day)."""
    if flavour != "timescale":
        pytest.skip("plain PostgreSQL: any late minute is noted (tests/test_storage_rollup.py)")
    insert = (
        "INSERT INTO telemetry (ts, device_id, seq, received_at, temperature) "
        "VALUES (now() - %s::interval, %s, 1, now(), 21.5)"
    )
    with psycopg.connect(db, autocommit=True) as conn:
        # Fresh data, materialized: the aggregate's watermark is now minutes ago.
        conn.execute(insert, ("10 minutes", "ON-TIME"))
        refresh_rollup(conn, "CALL refresh_continuous_aggregate('telemetry_1m', NULL, now())")
        conn.execute(insert, ("3 days", "LATE"))

        def late_buckets() -> int:
            row = conn.execute(
                "SELECT count(*) FROM telemetry_1m WHERE device_id = 'LATE'"
            ).fetchone()
            assert row is not None
            return int(row[0])

        assert late_buckets() == 0  # below the watermark: not in the rollup yet
        [(job_id,)] = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate' "
            "AND hypertable_name = 'telemetry_1m'"
        ).fetchall()
        conn.execute(sql.SQL("CALL run_job({})").format(sql.Literal(job_id)))
        assert late_buckets() == 1


# --- plain PostgreSQL: the rollup refresh -------------------------------------------

REFUSE_ROLLUP = """
CREATE OR REPLACE FUNCTION test_refuse_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'rollup refused by a trigger'; END $$;
CREATE TRIGGER test_refuse_rollup BEFORE INSERT ON telemetry_rollup_1m
    FOR EACH ROW EXECUTE FUNCTION test_refuse_rollup();
"""


def _rollup_job(api_url: str) -> tuple[str, list[dict[str, Any]]]:
    body = httpx.get(f"{api_url}/health", headers=ADMIN).json()
    return body["status"], [j for j in body["failed_jobs"] if j["job"] == "Rollup refresh"]


def test_a_failing_or_stalled_rollup_refresh_turns_health_degraded(
    api_url: str, db: str, flavour: str
) -> None:
    if flavour != "plain":
        pytest.skip("plain PostgreSQL's own job")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO telemetry (ts, device_id, seq, received_at, temperature) "
            "VALUES (now(), 'RJ-1', 1, now(), 21.5)"
        )
        conn.execute("INSERT INTO rollup_pending (bucket) VALUES (date_trunc('minute', now()))")
        assert refresh_now(db) == 1
        assert _rollup_job(api_url)[1] == []
        # Its runs fail: the last error is shown, in /health and /metrics.
        conn.execute(REFUSE_ROLLUP)
        try:
            conn.execute("INSERT INTO rollup_pending (bucket) VALUES (date_trunc('minute', now()))")
            with pytest.raises(psycopg.errors.RaiseException):
                refresh_now(db)
            status, [job] = _rollup_job(api_url)
            assert status == "degraded"
            assert job["last_run_status"] == "Failed"
            assert job["total_runs"] == 2
            assert job["total_failures"] == 1
            assert "rollup refused by a trigger" in job["last_error"]
            text = httpx.get(f"{api_url}/metrics", headers=ADMIN).text
            labels = 'job="Rollup refresh",job_id="1",target="telemetry_1m"'
            assert f"firesafe_db_job_failed{{{labels}}} 1.0" in text
        finally:
            conn.execute("DROP TRIGGER test_refuse_rollup ON telemetry_rollup_1m")
        assert refresh_now(db) == 1  # it runs again: healthy
        assert _rollup_job(api_url)[1] == []
        # Nobody refreshes (no ingest running): a minute noted long ago says so.
        conn.execute(
            "INSERT INTO rollup_pending VALUES (date_trunc('minute', now()), "
            "now() - interval '10 minutes')"
        )
        status, [job] = _rollup_job(api_url)
        assert status == "degraded"
        assert "not rolled up yet" in job["last_error"]


def test_a_paused_job_is_reported_with_how_to_resume_it(
    api_url: str, db: str, flavour: str
) -> None:
    """A job that does not run says nothing of itself: no run, no error. A paused
    one (and one no scheduler serves) is listed as failed, saying what to do."""
    if flavour != "timescale":
        pytest.skip("TimescaleDB's job scheduler")
    with psycopg.connect(db, autocommit=True) as conn:
        [(job_id,)] = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        ).fetchall()
        conn.execute("SELECT alter_job(%s, scheduled => false)", (job_id,))
        try:
            body = httpx.get(f"{api_url}/health", headers=ADMIN).json()
            [job] = [j for j in body["failed_jobs"] if j["job_id"] == job_id]
            assert body["status"] == "degraded"
            assert job["job_status"] == "Paused"
            assert f"SELECT alter_job({job_id}, scheduled => true)" in job["last_error"]
        finally:
            conn.execute("SELECT alter_job(%s, scheduled => true)", (job_id,))
        listed = httpx.get(f"{api_url}/health", headers=ADMIN).json()["failed_jobs"]
        assert all(j["job_status"] != "Paused" for j in listed)
