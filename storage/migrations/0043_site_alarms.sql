-- Alarm floods grouped (issue 16): when a large share of a site's devices fall
-- silent together (an upstream outage), one `offline` alarm stands for the site
-- (device_id NULL, reason site_silent) and the devices' own offline alarms point
-- to it (detail.cause). One open site-level alarm per site and type.
ALTER TABLE alarms ALTER COLUMN device_id DROP NOT NULL;
CREATE UNIQUE INDEX alarms_one_open_site_idx ON alarms (site_id, type)
    WHERE device_id IS NULL AND status <> 'cleared' AND verdict <> 'suppressed';
