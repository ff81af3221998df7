-- Registry, device events and state, alarms with their audit log, rejects,
-- API tokens, ingest statistics and the linkage command log.
-- Identical on plain PostgreSQL and on TimescaleDB.

CREATE TABLE sites (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE buildings (
    site_id   text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    building  text NOT NULL,
    PRIMARY KEY (site_id, building)
);

CREATE TABLE floors (
    site_id   text NOT NULL,
    building  text NOT NULL,
    floor     text NOT NULL,
    PRIMARY KEY (site_id, building, floor),
    FOREIGN KEY (site_id, building) REFERENCES buildings ON DELETE CASCADE
);

-- A zone is identified by (site, building, floor, zone) (contract section 6).
CREATE TABLE zones (
    site_id   text NOT NULL,
    building  text NOT NULL,
    floor     text NOT NULL,
    zone      text NOT NULL,
    name      text,
    zone_type text,
    PRIMARY KEY (site_id, building, floor, zone),
    FOREIGN KEY (site_id, building, floor) REFERENCES floors ON DELETE CASCADE
);

CREATE TABLE devices (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- Dense integer key: ingest and detection index their arrays by it, and
    -- it is stable across restarts.
    slot        integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    site_id     text NOT NULL,
    building    text NOT NULL,
    floor       text NOT NULL,
    zone        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('smoke', 'heat', 'multi', 'mcp', 'electrical', 'evac')),
    name        text,
    interval_s  double precision CHECK (interval_s > 0),
    thresholds  jsonb NOT NULL DEFAULT '{}'::jsonb,
    routes      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (site_id, building, floor, zone) REFERENCES zones
);
CREATE INDEX devices_site_idx ON devices (site_id, building, floor, zone);
CREATE INDEX devices_updated_idx ON devices (updated_at);

-- What ingest knows of each device; one row per device, updated per batch.
CREATE TABLE device_state (
    device_id     text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    last_seen_at  timestamptz,          -- arrival time of the newest message (supervision)
    last_ts       timestamptz,          -- newest event time processed
    last_seq      bigint,
    status        text CHECK (status IN ('online', 'offline')),  -- the retained status topic
    status_at     timestamptz,
    on_mains      boolean,              -- evac: running on battery when false (a state, not an alarm)
    messages      bigint NOT NULL DEFAULT 0,
    seq_gaps      bigint NOT NULL DEFAULT 0,   -- readings missing according to seq
    duplicates    bigint NOT NULL DEFAULT 0,
    out_of_order  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- State changes the devices report themselves (the event topic).
CREATE TABLE device_events (
    ts           timestamptz NOT NULL,
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    received_at  timestamptz NOT NULL,
    type         text NOT NULL,
    detail       text,
    PRIMARY KEY (device_id, ts, seq)
);
CREATE INDEX device_events_ts_idx ON device_events (ts DESC);

CREATE TABLE alarms (
    id               text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    device_id        text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    site_id          text NOT NULL,
    building         text NOT NULL,
    floor            text NOT NULL,
    zone             text NOT NULL,
    type             text NOT NULL
                     CHECK (type IN ('fire', 'pre_alarm', 'electrical', 'fault', 'offline', 'evac_fault')),
    verdict          text NOT NULL CHECK (verdict IN ('pending', 'confirmed', 'suppressed')),
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'acknowledged', 'cleared')),
    reason           text NOT NULL,
    opened_at        timestamptz NOT NULL,   -- event time (arrival time for offline)
    confirmed_at     timestamptz,
    cleared_at       timestamptz,
    acknowledged_at  timestamptz,            -- wall-clock time of the person's action
    acknowledged_by  text,
    cleared_by       text,
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One open alarm per device and type, enforced by the database so that two
-- messages arriving together cannot open two. A suppressed alarm does not
-- block a new one.
CREATE UNIQUE INDEX alarms_one_open_idx ON alarms (device_id, type)
    WHERE status <> 'cleared' AND verdict <> 'suppressed';
CREATE INDEX alarms_site_opened_idx ON alarms (site_id, opened_at DESC, id DESC);
CREATE INDEX alarms_opened_idx ON alarms (opened_at DESC, id DESC);
CREATE INDEX alarms_open_idx ON alarms (site_id, status) WHERE status <> 'cleared';

-- Audit trail and change feed of alarms: every transition, by whom.
CREATE TABLE alarm_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id  text NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),   -- wall-clock time of the change
    action    text NOT NULL,  -- opened, confirmed, suppressed, acknowledged, cleared
    actor     text NOT NULL,  -- 'system' or the token's name
    note      text
);
CREATE INDEX alarm_log_alarm_idx ON alarm_log (alarm_id, id);

-- Every change to an alarm is announced so that every API process can stream it.
CREATE FUNCTION firesafe_notify_alarm_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firesafe_alarms', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alarm_log_notify AFTER INSERT ON alarm_log
    FOR EACH ROW EXECUTE FUNCTION firesafe_notify_alarm_log();

-- Bad input (contract section 3): never silently dropped.
CREATE TABLE rejects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    reason       text NOT NULL,
    payload      bytea NOT NULL,
    detail       text,
    device_id    text
);
CREATE INDEX rejects_received_idx ON rejects (received_at DESC, id DESC);
CREATE INDEX rejects_reason_idx ON rejects (reason, received_at DESC, id DESC);

-- Monotonic counters per reason, for /metrics without counting the table.
CREATE TABLE reject_counts (
    reason  text PRIMARY KEY,
    count   bigint NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'manager')),
    sites       text[] NOT NULL DEFAULT '{}',
    token_hash  text NOT NULL UNIQUE,       -- sha256 hex of the token; the token is shown once
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Ingest's own figures, written every few seconds (Grafana, /health).
CREATE TABLE ingest_stats (
    at                 timestamptz NOT NULL,
    instance           text NOT NULL,
    messages           bigint NOT NULL,   -- counters since the instance started
    readings           bigint NOT NULL,
    events             bigint NOT NULL,
    rejects            bigint NOT NULL,
    duplicates         bigint NOT NULL,
    seq_gaps           bigint NOT NULL,
    batches            bigint NOT NULL,
    batch_latency_ms   double precision,  -- p95 over the interval, arrival to commit
    queue_depth        integer NOT NULL,
    lag_ms             double precision,  -- oldest uncommitted message's age
    broker_connected   boolean NOT NULL,
    PRIMARY KEY (instance, at)
);
CREATE INDEX ingest_stats_at_idx ON ingest_stats (at DESC);

-- Commands sent to evac devices on a confirmed fire (contract section 2).
CREATE TABLE linkage_commands (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    alarm_id   text,
    device_id  text NOT NULL,
    site_id    text NOT NULL,
    building   text NOT NULL,
    cmd        text NOT NULL,
    direction  text,
    payload    jsonb NOT NULL
);
CREATE INDEX linkage_commands_device_idx ON linkage_commands (device_id, at DESC);
