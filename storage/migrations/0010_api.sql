-- Indexes of the REST API's hot queries (both flavours).

-- GET /api/v1/alarms?site=..&status=..: a building manager's "what is open on
-- my site" page walks this index in keyset order, however many cleared alarms
-- the site has accumulated.
CREATE INDEX IF NOT EXISTS alarms_site_status_opened_idx
    ON alarms (site_id, status, opened_at DESC, id DESC);
