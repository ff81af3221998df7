-- Read-only views for the Grafana dashboards (grafana/dashboards/*.json).
-- Plain SQL, identical on PostgreSQL and TimescaleDB; they hold no data.

-- The readings each device kind reports, with their units (contract section 1).
CREATE VIEW kind_readings (kind, reading, unit) AS VALUES
    ('smoke', 'obscuration', '%/m'),
    ('smoke', 'temperature', '°C'),
    ('heat', 'temperature', '°C'),
    ('multi', 'obscuration', '%/m'),
    ('multi', 'temperature', '°C'),
    ('multi', 'co', 'ppm'),
    ('multi', 'humidity', '%RH'),
    ('electrical', 'residual_current', 'mA'),
    ('electrical', 'cable_temperature', '°C'),
    ('electrical', 'current', 'A'),
    ('electrical', 'voltage', 'V'),
    ('evac', 'battery', '%'),
    ('evac', 'mains', '1 = mains'),
    ('evac', 'lamp_ok', '1 = ok');

-- Level thresholds drawn on the dashboards: the level thresholds of the
-- detection engine (detection/params.py THRESHOLD_DEFAULTS, same names and
-- defaults), each with the reading it applies to. A device's registry
-- `thresholds` object overrides a default by name (e.g.
-- {"residual_current_ma": 500}). Rate, drift and timing thresholds are not
-- levels of a reading and are not drawn. `direction = 'below'` marks a lower
-- limit (battery), every other limit is an upper one.
CREATE VIEW threshold_defaults (kind, name, reading, value, direction, description) AS VALUES
    ('smoke', 'obscuration_pre_alarm', 'obscuration', 1.5::double precision, 'above', 'smoke pre-alarm, %/m'),
    ('smoke', 'obscuration_alarm', 'obscuration', 3.0, 'above', 'smoke alarm, %/m'),
    ('heat', 'static_c', 'temperature', 58.0, 'above', 'fixed-temperature alarm (EN 54-5 class A1), °C'),
    ('multi', 'obscuration_pre_alarm', 'obscuration', 1.5, 'above', 'smoke pre-alarm, %/m'),
    ('multi', 'obscuration_alarm', 'obscuration', 3.0, 'above', 'smoke alarm, %/m'),
    ('multi', 'static_c', 'temperature', 58.0, 'above', 'fixed-temperature alarm, °C'),
    ('multi', 'co_ppm', 'co', 30.0, 'above', 'CO fire signature, ppm'),
    ('multi', 'steam_rh', 'humidity', 95.0, 'above', 'near condensation: steam, not smoke, %RH'),
    ('electrical', 'residual_current_ma', 'residual_current', 300.0, 'above', 'residual current alarm, mA'),
    ('electrical', 'cable_temperature_c', 'cable_temperature', 70.0, 'above', 'cable temperature alarm (PVC insulation rating), °C'),
    ('evac', 'battery_low_pct', 'battery', 30.0, 'below', 'battery low, % charge');

-- The thresholds each device is drawn against: the registry's value when it
-- gives a number under that name, otherwise the kind's default.
CREATE VIEW device_thresholds AS
SELECT d.id AS device_id, d.site_id, d.building, d.floor, d.zone, d.kind,
    t.name, t.reading, t.direction,
    CASE WHEN jsonb_typeof(d.thresholds -> t.name) = 'number'
        THEN (d.thresholds ->> t.name)::double precision ELSE t.value END AS value,
    jsonb_typeof(d.thresholds -> t.name) = 'number' AS from_registry
FROM devices d
JOIN threshold_defaults t ON t.kind = d.kind;

-- One row per registered device with what ingest knows of it. `interval_s`
-- falls back to the per-kind default of firesafe.contract.DEFAULT_INTERVAL_S;
-- `connectivity` is 'silent' after 3 intervals without a message (the
-- supervision rule), the `offline` alarm being the authoritative record.
CREATE VIEW device_overview AS
SELECT d.id AS device_id, d.site_id, d.building, d.floor, d.zone, d.kind,
    COALESCE(d.name, d.id) AS name,
    COALESCE(d.interval_s, CASE d.kind WHEN 'mcp' THEN 60 WHEN 'evac' THEN 60 ELSE 10 END) AS interval_s,
    s.last_seen_at, s.last_ts, s.status, s.on_mains, s.messages, s.seq_gaps, s.duplicates,
    CASE
        WHEN s.status = 'offline' THEN 'offline'
        WHEN s.last_seen_at IS NULL THEN 'never seen'
        WHEN s.last_seen_at < now() - 3 * make_interval(secs =>
            COALESCE(d.interval_s, CASE d.kind WHEN 'mcp' THEN 60 WHEN 'evac' THEN 60 ELSE 10 END))
            THEN 'silent'
        ELSE 'online'
    END AS connectivity
FROM devices d
LEFT JOIN device_state s ON s.device_id = d.id;
