-- Rejects are bounded (issue 10): a payload is kept up to its first 4 KiB with
-- its full length beside it, and the table is pruned by age and by count per
-- site (ingest's housekeeping). The site comes from the topic, so a flood on
-- one site's topics cannot push another site's rejects out.
ALTER TABLE rejects
    ADD COLUMN payload_size integer,
    ADD COLUMN site_id text GENERATED ALWAYS AS (NULLIF(split_part(topic, '/', 3), '')) STORED;
UPDATE rejects SET payload_size = length(payload) WHERE payload_size IS NULL;
UPDATE rejects SET payload = substring(payload FROM 1 FOR 4096) WHERE length(payload) > 4096;
CREATE INDEX rejects_site_idx ON rejects (site_id, id DESC);
