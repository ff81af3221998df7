-- What a telemetry key index costs per inserted row, by its shape (issue #14).
-- Run on a scratch database of the server to measure, e.g.
--   psql -h 127.0.0.1 -U postgres -d <scratch> -f bench/index_cost.sql
-- 500,000 readings of 10,000 devices (10 s apart, as bench/ingest.py sends
-- them) are inserted twice (two event-time windows) into four bare tables;
-- compare the timings of the second round of inserts.
\timing on
DROP TABLE IF EXISTS ic_src, ic_none, ic_unique, ic_plain, ic_ts_first;
CREATE TABLE ic_src AS
SELECT 'D' || lpad((i % 10000)::text, 5, '0') AS device_id,
       now() + (i / 10000) * interval '10 s' AS ts, (i / 10000)::bigint AS seq
FROM generate_series(0, 499999) i;
CREATE TABLE ic_none (device_id text, ts timestamptz, seq bigint);
CREATE TABLE ic_unique (LIKE ic_none);
CREATE UNIQUE INDEX ON ic_unique (device_id, ts, seq);   -- firesafe's key
CREATE TABLE ic_plain (LIKE ic_none);
CREATE INDEX ON ic_plain (device_id, ts);                -- not unique, device first
CREATE TABLE ic_ts_first (LIKE ic_none);
CREATE UNIQUE INDEX ON ic_ts_first (ts, device_id, seq); -- time first: appends
INSERT INTO ic_none SELECT * FROM ic_src;
INSERT INTO ic_unique SELECT * FROM ic_src;
INSERT INTO ic_plain SELECT * FROM ic_src;
INSERT INTO ic_ts_first SELECT * FROM ic_src;
\echo second round: no index, unique (device_id, ts, seq), (device_id, ts), unique (ts, device_id, seq)
INSERT INTO ic_none SELECT device_id, ts + interval '1 day', seq FROM ic_src;
INSERT INTO ic_unique SELECT device_id, ts + interval '1 day', seq FROM ic_src;
INSERT INTO ic_plain SELECT device_id, ts + interval '1 day', seq FROM ic_src;
INSERT INTO ic_ts_first SELECT device_id, ts + interval '1 day', seq FROM ic_src;
DROP TABLE ic_src, ic_none, ic_unique, ic_plain, ic_ts_first;
