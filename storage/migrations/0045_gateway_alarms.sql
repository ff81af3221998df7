-- Alarm floods grouped by gateway as well as by site (issue 16): when most of the
-- devices last heard through one gateway fall silent together, one `offline`
-- alarm (device_id NULL, reason gateway_silent, detail.gateway = its id) stands
-- for them. One open group-level alarm per site, type and gateway ('' : the site).
DROP INDEX IF EXISTS alarms_one_open_site_idx;
CREATE UNIQUE INDEX alarms_one_open_group_idx
    ON alarms (site_id, type, (coalesce(detail->>'gateway', '')))
    WHERE device_id IS NULL AND status <> 'cleared' AND verdict <> 'suppressed';
