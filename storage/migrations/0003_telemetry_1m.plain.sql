-- The 1-minute rollup of telemetry, maintained by ingest in the same
-- transaction as the rows it summarises (storage.telemetry), and a view with
-- the same shape as the TimescaleDB continuous aggregate.

CREATE TABLE telemetry_rollup_1m (
    bucket     timestamptz NOT NULL,
    device_id  text NOT NULL,
    samples    bigint NOT NULL,
    obscuration_min double precision, obscuration_max double precision, obscuration_sum double precision, obscuration_n bigint NOT NULL DEFAULT 0,
    temperature_min double precision, temperature_max double precision, temperature_sum double precision, temperature_n bigint NOT NULL DEFAULT 0,
    co_min double precision, co_max double precision, co_sum double precision, co_n bigint NOT NULL DEFAULT 0,
    humidity_min double precision, humidity_max double precision, humidity_sum double precision, humidity_n bigint NOT NULL DEFAULT 0,
    residual_current_min double precision, residual_current_max double precision, residual_current_sum double precision, residual_current_n bigint NOT NULL DEFAULT 0,
    cable_temperature_min double precision, cable_temperature_max double precision, cable_temperature_sum double precision, cable_temperature_n bigint NOT NULL DEFAULT 0,
    current_min double precision, current_max double precision, current_sum double precision, current_n bigint NOT NULL DEFAULT 0,
    voltage_min double precision, voltage_max double precision, voltage_sum double precision, voltage_n bigint NOT NULL DEFAULT 0,
    battery_min double precision, battery_max double precision, battery_sum double precision, battery_n bigint NOT NULL DEFAULT 0,
    mains_min double precision, mains_max double precision, mains_sum double precision, mains_n bigint NOT NULL DEFAULT 0,
    lamp_ok_min double precision, lamp_ok_max double precision, lamp_ok_sum double precision, lamp_ok_n bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, bucket)
);
CREATE INDEX telemetry_rollup_1m_bucket_idx ON telemetry_rollup_1m (bucket DESC);

-- The same shape as the TimescaleDB continuous aggregate.
CREATE VIEW telemetry_1m AS
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
FROM telemetry_rollup_1m;
