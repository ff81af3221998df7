-- The plain flavour's 1-minute rollup is upserted by every batch that adds to a
-- minute already stored (storage.ingest_store). With free room on its pages
-- the update is HOT: the new row version stays on the page and neither the
-- primary key nor the bucket index gets a new entry (bench/profile_gateway.py
-- measures it). Pages written from now on keep 30 % free.
ALTER TABLE telemetry_rollup_1m SET (fillfactor = 70);
