-- time_bucket(width, ts) on plain PostgreSQL, as TimescaleDB defines it for
-- timestamptz (buckets aligned to 2000-01-03 00:00 UTC, a Monday), so that
-- Grafana's datasource with `timescaledb: true` (its $__timeGroup macros become
-- time_bucket) works on either flavour: e.g. a local Grafana on `firesafe up`'s
-- embedded database with the repository's provisioning files unchanged.
CREATE OR REPLACE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN date_bin(bucket_width, ts, timestamptz '2000-01-03 00:00:00+00');
