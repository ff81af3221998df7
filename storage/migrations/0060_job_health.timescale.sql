-- Background jobs (compression, refresh, retention) as operators must see them:
-- a policy that stopped running is shown in /health, /metrics and Grafana.
-- One view with the same columns on both flavours, so the API and dashboards
-- read it without asking which flavour this is. TimescaleDB says -infinity for
-- "never" (e.g. no successful run yet): null here, as clients cannot hold it.
CREATE OR REPLACE VIEW firesafe_job_health AS
SELECT j.job_id,
       j.application_name::text AS job,
       j.proc_name::text AS proc_name,
       j.hypertable_name::text AS target,
       s.last_run_status,
       s.job_status,
       coalesce(s.total_runs, 0) AS total_runs,
       coalesce(s.total_failures, 0) AS total_failures,
       CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END AS last_run_started_at,
       CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END AS last_successful_finish,
       CASE WHEN isfinite(s.next_start) THEN s.next_start END AS next_start,
       e.err_message AS last_error,
       CASE WHEN isfinite(e.finish_time) THEN e.finish_time END AS last_error_at,
       coalesce(s.last_run_status = 'Failed', false) AS failed
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
LEFT JOIN LATERAL (
    SELECT x.err_message, x.finish_time
    FROM timescaledb_information.job_errors x
    WHERE x.job_id = j.job_id
    ORDER BY x.start_time DESC NULLS LAST
    LIMIT 1
) e ON true
-- Ids below 1000 are TimescaleDB's own housekeeping (telemetry reporter, job
-- history retention); ours (policies, user jobs) start at 1000.
WHERE j.job_id >= 1000;

-- TimescaleDB already indexes a continuous aggregate on (group column, bucket)
-- (timescaledb.create_group_indexes): 0003's own index was a second copy,
-- written on every refresh. It lives on the materialization hypertable.
DO $$
DECLARE
    idx record;
BEGIN
    FOR idx IN SELECT schemaname, indexname FROM pg_indexes
               WHERE indexname = 'telemetry_1m_device_idx'
    LOOP
        EXECUTE format('DROP INDEX %I.%I', idx.schemaname, idx.indexname);
    END LOOP;
END $$;
