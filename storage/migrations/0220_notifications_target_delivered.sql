-- A failed attempt is retried at once when its target has taken a delivery
-- since the attempt began (storage/queries/notifications.py, record_outcome):
-- that question, per target and newest first, without reading the target's
-- whole history.
CREATE INDEX IF NOT EXISTS notifications_target_delivered_idx
    ON notifications (target_id, delivered_at DESC) WHERE delivered_at IS NOT NULL;
