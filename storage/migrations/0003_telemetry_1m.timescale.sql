-- The 1-minute continuous aggregate of telemetry (min/max/avg/count per reading).
-- firesafe: no-transaction
-- A continuous aggregate cannot be created inside a transaction, so the
-- runner executes this file statement by statement (split on `;` at line
-- ends, no dollar quoting here); each statement is idempotent.

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket,
    device_id,
    count(*) AS samples,
    min(obscuration) AS obscuration_min, max(obscuration) AS obscuration_max, avg(obscuration) AS obscuration_avg, count(obscuration) AS obscuration_n,
    min(temperature) AS temperature_min, max(temperature) AS temperature_max, avg(temperature) AS temperature_avg, count(temperature) AS temperature_n,
    min(co) AS co_min, max(co) AS co_max, avg(co) AS co_avg, count(co) AS co_n,
    min(humidity) AS humidity_min, max(humidity) AS humidity_max, avg(humidity) AS humidity_avg, count(humidity) AS humidity_n,
    min(residual_current) AS residual_current_min, max(residual_current) AS residual_current_max, avg(residual_current) AS residual_current_avg, count(residual_current) AS residual_current_n,
    min(cable_temperature) AS cable_temperature_min, max(cable_temperature) AS cable_temperature_max, avg(cable_temperature) AS cable_temperature_avg, count(cable_temperature) AS cable_temperature_n,
    min(current) AS current_min, max(current) AS current_max, avg(current) AS current_avg, count(current) AS current_n,
    min(voltage) AS voltage_min, max(voltage) AS voltage_max, avg(voltage) AS voltage_avg, count(voltage) AS voltage_n,
    min(battery) AS battery_min, max(battery) AS battery_max, avg(battery) AS battery_avg, count(battery) AS battery_n,
    min(mains) AS mains_min, max(mains) AS mains_max, avg(mains) AS mains_avg, count(mains) AS mains_n,
    min(lamp_ok) AS lamp_ok_min, max(lamp_ok) AS lamp_ok_max, avg(lamp_ok) AS lamp_ok_avg, count(lamp_ok) AS lamp_ok_n
FROM telemetry
GROUP BY bucket, device_id
WITH NO DATA;
CREATE INDEX IF NOT EXISTS telemetry_1m_device_idx ON telemetry_1m (device_id, bucket DESC);
-- Refresh the last day every minute; older buckets are final. Real-time
-- aggregation (materialized_only = false) covers the newest minute.
SELECT add_continuous_aggregate_policy('telemetry_1m',
    start_offset => INTERVAL '1 day',
    end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute',
    if_not_exists => true);
