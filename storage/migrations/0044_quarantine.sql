-- Readings kept out of detection because their time was far ahead of the
-- device's own clock and the estate's (issue 10: one far-future reading must
-- not blind a detector); counted per device for operators to see.
ALTER TABLE device_state ADD COLUMN quarantined bigint NOT NULL DEFAULT 0;
