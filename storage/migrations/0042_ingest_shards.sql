-- Shards in ingest's own figures (issue 9): which shards each process holds,
-- their queue depth and lag, and how many it has taken over since it started.
-- The backend pid ties a report to the session that holds its leases (pg_locks).
ALTER TABLE ingest_stats
    ADD COLUMN backend_pid integer,
    ADD COLUMN shards      integer[],
    ADD COLUMN shard_stats jsonb,
    ADD COLUMN takeovers   bigint;
