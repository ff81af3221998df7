-- Per-site time zone and standard (issue 15). Both flavours.
--
-- timezone: an IANA zone name (the API validates it against Python's zoneinfo
-- and PostgreSQL's own zone list); the API keeps UTC, dashboards and
-- notifications show the site's local time with it.
-- standard: which standards' default thresholds the site's devices follow
-- (detection/standards.py): 'EN' (EN 54 and related) or 'GB' (the Chinese
-- national standards).
ALTER TABLE sites ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC';
ALTER TABLE sites ADD COLUMN IF NOT EXISTS standard text NOT NULL DEFAULT 'EN';
ALTER TABLE sites DROP CONSTRAINT IF EXISTS sites_standard_check;
ALTER TABLE sites ADD CONSTRAINT sites_standard_check CHECK (standard IN ('EN', 'GB'));
