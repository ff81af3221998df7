-- The plain flavour's 1-minute rollup leaves ingest's transaction
-- (storage/rollup.py): a batch notes the minutes it wrote in rollup_pending,
-- and the refresher recomputes them from telemetry once they settle, as a
-- TimescaleDB continuous aggregate is refreshed. Meanwhile telemetry_1m
-- aggregates a noted minute straight from telemetry (real-time aggregation,
-- like `materialized_only = false`), so a reader never sees it stale.

-- No unique key: batches of several ingest processes note the same minute
-- without waiting on each other's row locks.
CREATE TABLE rollup_pending (
    bucket   timestamptz NOT NULL,
    noted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_pending_bucket_idx ON rollup_pending (bucket);
-- A handful of minutes are noted at any time (a backlog may note more for a
-- while). Telling the planner so, whatever its last sample saw, keeps the
-- live part of telemetry_1m below on one index range scan of telemetry per
-- noted minute, never one scan of everything between the oldest and newest.
ALTER TABLE rollup_pending ALTER COLUMN bucket SET (n_distinct = 10);
ANALYZE rollup_pending;

-- Rows are now written by the refresh, mostly once per minute, not updated in
-- place batch after batch: full pages again (0100 kept 30 % free for that).
ALTER TABLE telemetry_rollup_1m SET (fillfactor = 100);

CREATE OR REPLACE VIEW telemetry_1m AS
SELECT bucket, device_id, samples,
    obscuration_min, obscuration_max, obscuration_sum / NULLIF(obscuration_n, 0) AS obscuration_avg, obscuration_n,
    temperature_min, temperature_max, temperature_sum / NULLIF(temperature_n, 0) AS temperature_avg, temperature_n,
    co_min, co_max, co_sum / NULLIF(co_n, 0) AS co_avg, co_n,
    humidity_min, humidity_max, humidity_sum / NULLIF(humidity_n, 0) AS humidity_avg, humidity_n,
    residual_current_min, residual_current_max, residual_current_sum / NULLIF(residual_current_n, 0) AS residual_current_avg, residual_current_n,
    cable_temperature_min, cable_temperature_max, cable_temperature_sum / NULLIF(cable_temperature_n, 0) AS cable_temperature_avg, cable_temperature_n,
    current_min, current_max, current_sum / NULLIF(current_n, 0) AS current_avg, current_n,
    voltage_min, voltage_max, voltage_sum / NULLIF(voltage_n, 0) AS voltage_avg, voltage_n,
    battery_min, battery_max, battery_sum / NULLIF(battery_n, 0) AS battery_avg, battery_n,
    mains_min, mains_max, mains_sum / NULLIF(mains_n, 0) AS mains_avg, mains_n,
    lamp_ok_min, lamp_ok_max, lamp_ok_sum / NULLIF(lamp_ok_n, 0) AS lamp_ok_avg, lamp_ok_n
FROM telemetry_rollup_1m r
WHERE NOT EXISTS (SELECT 1 FROM rollup_pending p WHERE p.bucket = r.bucket)
UNION ALL
SELECT b.bucket, t.device_id, count(*),
    min(t.obscuration), max(t.obscuration), avg(t.obscuration), count(t.obscuration),
    min(t.temperature), max(t.temperature), avg(t.temperature), count(t.temperature),
    min(t.co), max(t.co), avg(t.co), count(t.co),
    min(t.humidity), max(t.humidity), avg(t.humidity), count(t.humidity),
    min(t.residual_current), max(t.residual_current), avg(t.residual_current), count(t.residual_current),
    min(t.cable_temperature), max(t.cable_temperature), avg(t.cable_temperature), count(t.cable_temperature),
    min(t.current), max(t.current), avg(t.current), count(t.current),
    min(t.voltage), max(t.voltage), avg(t.voltage), count(t.voltage),
    min(t.battery), max(t.battery), avg(t.battery), count(t.battery),
    min(t.mains), max(t.mains), avg(t.mains), count(t.mains),
    min(t.lamp_ok), max(t.lamp_ok), avg(t.lamp_ok), count(t.lamp_ok)
FROM (SELECT DISTINCT bucket FROM rollup_pending) b
JOIN telemetry t ON t.ts >= b.bucket AND t.ts < b.bucket + interval '1 minute'
GROUP BY b.bucket, t.device_id;
