-- Telemetry on plain PostgreSQL: native range partitions by day, created
-- ahead of time (storage.partitions) and a default partition for clocks
-- far off.

CREATE TABLE telemetry (
    ts                 timestamptz NOT NULL,   -- the device's clock (event time)
    device_id          text NOT NULL,
    seq                bigint NOT NULL,
    received_at        timestamptz NOT NULL,   -- arrival time
    obscuration        double precision,
    temperature        double precision,
    co                 double precision,
    humidity           double precision,
    residual_current   double precision,
    cable_temperature  double precision,
    current            double precision,
    voltage            double precision,
    battery            double precision,
    mains              double precision,
    lamp_ok            double precision,
    extra              jsonb                   -- unknown reading names: stored, otherwise ignored
) PARTITION BY RANGE (ts);
-- A duplicate (device, ts, seq) is stored once.
CREATE UNIQUE INDEX telemetry_key_idx ON telemetry (device_id, ts, seq);
CREATE INDEX telemetry_ts_idx ON telemetry (ts DESC);
-- Readings whose clock is far from now land here until their day's
-- partition is created (storage.partitions moves them then).
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;
