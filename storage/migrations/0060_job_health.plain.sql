-- Background jobs as operators must see them (see the .timescale.sql twin).
-- Plain PostgreSQL has no job scheduler: partitions and retention run inside
-- `firesafe db migrate` and ingest's housekeeping, whose failures are errors
-- of those processes. The view has the same columns and no rows.
CREATE OR REPLACE VIEW firesafe_job_health AS
SELECT NULL::integer AS job_id,
       NULL::text AS job,
       NULL::text AS proc_name,
       NULL::text AS target,
       NULL::text AS last_run_status,
       NULL::text AS job_status,
       NULL::bigint AS total_runs,
       NULL::bigint AS total_failures,
       NULL::timestamptz AS last_run_started_at,
       NULL::timestamptz AS last_successful_finish,
       NULL::timestamptz AS next_start,
       NULL::text AS last_error,
       NULL::timestamptz AS last_error_at,
       NULL::boolean AS failed
WHERE false;
