-- Which gateway each device was last heard through (issue 16, flood grouping).
-- Ingest learns it from arrivals; kept here so that a gateway that falls silent
-- right after a restart or a shard takeover, before any of its devices spoke
-- again, still raises one `gateway_silent` alarm and not one per device.
-- Written only when a device's gateway changes. Both flavours.
CREATE TABLE IF NOT EXISTS gateway_members (
    device_id  text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    gateway    text NOT NULL,
    heard_at   timestamptz NOT NULL DEFAULT now()
);
