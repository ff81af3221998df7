-- Readings (and events) of a detector that are stored but not yet judged:
-- detection shows a zone's data in event-time order, so what a detector sent
-- waits while a neighbour's data are behind (a lagging connection, a
-- gateway's backlog). Ingest marks the oldest of them in the transaction that
-- stores them and unmarks it once judged; after a SIGKILL, or for the process
-- that takes a shard over, a mark says which zones to replay, so those alarms
-- still come. Both flavours.
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS detection_held_from timestamptz;
CREATE INDEX IF NOT EXISTS device_state_held_idx ON device_state (device_id)
    WHERE detection_held_from IS NOT NULL;
