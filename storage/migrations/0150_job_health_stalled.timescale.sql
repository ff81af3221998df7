-- A job that never runs is as broken as one that fails, and says nothing of
-- itself: no run, no error. TimescaleDB's scheduler may not be running at
-- all (timescaledb.max_background_workers = 0, too few background workers,
-- a crashed launcher) or a job may be paused (alter_job(..., scheduled =>
-- false)). Both now count as failed, with what to do in `last_error`.
-- Stalled: no scheduler serves this database (seen by its application name,
-- which pg_stat_activity shows to every role), or due for more than 5 minutes
-- and not running (a failing job backs off, which moves its next start into
-- the future: that one is `Failed`).
CREATE OR REPLACE VIEW firesafe_job_health AS
SELECT j.job_id,
       j.application_name::text AS job,
       j.proc_name::text AS proc_name,
       j.hypertable_name::text AS target,
       s.last_run_status,
       coalesce(s.job_status, CASE WHEN j.scheduled THEN 'Scheduled' ELSE 'Paused' END)
           AS job_status,
       coalesce(s.total_runs, 0) AS total_runs,
       coalesce(s.total_failures, 0) AS total_failures,
       CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END AS last_run_started_at,
       CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END AS last_successful_finish,
       CASE WHEN isfinite(n.next_start) THEN n.next_start END AS next_start,
       CASE WHEN NOT j.scheduled
            THEN format('paused (not scheduled): resume it with SELECT alter_job(%s, scheduled => true)',
                        j.job_id)
            WHEN n.stalled
            THEN format('%s: TimescaleDB''s scheduler is not running it (check '
                        'timescaledb.max_background_workers, max_worker_processes and the '
                        'server log)',
                        CASE WHEN n.scheduler THEN format('due since %s and not started', n.next_start)
                             ELSE 'no background job scheduler serves this database' END)
            ELSE e.err_message END AS last_error,
       CASE WHEN NOT j.scheduled THEN NULL
            WHEN n.stalled THEN coalesce(n.next_start, now())
            WHEN isfinite(e.finish_time) THEN e.finish_time END AS last_error_at,
       coalesce(s.last_run_status = 'Failed', false) OR NOT j.scheduled OR n.stalled AS failed
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
CROSS JOIN (
    SELECT EXISTS (
        SELECT 1 FROM pg_stat_activity
        WHERE datname = current_database()
          AND application_name = 'TimescaleDB Background Worker Scheduler'
    ) AS scheduler
) w
CROSS JOIN LATERAL (
    SELECT coalesce(s.next_start, j.next_start) AS next_start,
           w.scheduler,
           j.scheduled
           AND coalesce(s.job_status, '') <> 'Running'
           AND (NOT w.scheduler
                OR coalesce(coalesce(s.next_start, j.next_start) < now() - interval '5 minutes',
                            false)) AS stalled
) n
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
