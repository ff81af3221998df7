-- The plain flavour's one background job, the rollup refresh (storage/rollup.py,
-- run by ingest's housekeeping), shown as TimescaleDB's jobs are (0060): its
-- runs are recorded, and it counts as failed when its last run failed or
-- when a noted minute has waited far longer than a refresh takes (no ingest
-- process is refreshing).
CREATE TABLE rollup_refresh_runs (
    only_row               boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    total_runs             bigint NOT NULL DEFAULT 0,
    total_failures         bigint NOT NULL DEFAULT 0,
    last_run_started_at    timestamptz,
    last_successful_finish timestamptz,
    last_error             text,
    last_error_at          timestamptz
);
INSERT INTO rollup_refresh_runs DEFAULT VALUES;

CREATE OR REPLACE VIEW firesafe_job_health AS
SELECT 1 AS job_id,
       'Rollup refresh'::text AS job,
       'firesafe_rollup_refresh'::text AS proc_name,
       'telemetry_1m'::text AS target,
       CASE WHEN r.last_error_at >= coalesce(r.last_successful_finish, '-infinity') THEN 'Failed'
            WHEN r.last_successful_finish IS NOT NULL THEN 'Success' END AS last_run_status,
       'Scheduled'::text AS job_status,
       coalesce(r.total_runs, 0) AS total_runs,
       coalesce(r.total_failures, 0) AS total_failures,
       r.last_run_started_at,
       r.last_successful_finish,
       NULL::timestamptz AS next_start,
       CASE WHEN p.stalled
            THEN format('%s minute(s) of telemetry noted since %s are not rolled up yet '
                        '(ingest''s housekeeping refreshes them); last refresh error: %s',
                        p.minutes, p.oldest, coalesce(r.last_error, 'none'))
            ELSE r.last_error END AS last_error,
       CASE WHEN p.stalled THEN now() ELSE r.last_error_at END AS last_error_at,
       p.stalled OR coalesce(r.last_error_at >= coalesce(r.last_successful_finish, '-infinity'),
                             false) AS failed
FROM (SELECT count(DISTINCT bucket) AS minutes, min(noted_at) AS oldest,
             coalesce(min(noted_at) < now() - interval '5 minutes', false) AS stalled
      FROM rollup_pending) p
LEFT JOIN rollup_refresh_runs r ON true;
