-- Telemetry on TimescaleDB: a hypertable with daily chunks and compression
-- (columnstore) segmented by device; the retention policy is set at migrate. Written for TimescaleDB >= 2.18 (hypercore API).

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
);
-- create_hypertable also creates the default index on (ts DESC).
SELECT create_hypertable('telemetry', by_range('ts', INTERVAL '1 day'));
-- A duplicate (device, ts, seq) is stored once; the time column is part of
-- the key as hypertables require.
CREATE UNIQUE INDEX telemetry_key_idx ON telemetry (device_id, ts, seq);

-- Columnstore (compression), segmented by device so a device's range query
-- decompresses only its own segments; chunks older than a week are
-- converted (late readings can still be inserted into them). The retention
-- policy is set by `firesafe db migrate` from FIRESAFE_RETENTION_DAYS.
ALTER TABLE telemetry SET (
    timescaledb.enable_columnstore = true,
    timescaledb.segmentby = 'device_id',
    timescaledb.orderby = 'ts DESC, seq DESC'
);
CALL add_columnstore_policy('telemetry', after => INTERVAL '7 days', if_not_exists => true);
