-- Linkage commands become an outbox (issue 17): a command is written as
-- `pending` in the transaction that confirmed or cleared the fire, published
-- after commit at QoS 1, and marked `acknowledged` once the broker has
-- acknowledged it. Unsent commands survive reconnects and restarts.
-- Rows written before this migration were published before it: acknowledged.
ALTER TABLE linkage_commands
    ADD COLUMN state    text NOT NULL DEFAULT 'acknowledged'
                        CHECK (state IN ('pending', 'acknowledged', 'superseded')),
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN sent_at  timestamptz,
    ADD COLUMN acked_at timestamptz;
ALTER TABLE linkage_commands ALTER COLUMN state SET DEFAULT 'pending';
-- The sender's work list: small, because rows leave it once acknowledged.
CREATE INDEX linkage_commands_pending_idx ON linkage_commands (site_id, id)
    WHERE state = 'pending';
CREATE INDEX linkage_commands_alarm_idx ON linkage_commands (alarm_id, id)
    WHERE alarm_id IS NOT NULL;
