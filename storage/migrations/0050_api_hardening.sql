-- API hardening (issue #10): token expiry, reserved actor names, a device's
-- site history, and least-privilege database roles. Both flavours.

-- Tokens may expire (optional on creation); an expired token answers 401.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;

-- `system` is the actor of ingest's own alarm transitions (alarm_log.actor,
-- cleared_by) and `admin` the audit name of FIRESAFE_ADMIN_TOKEN: no token may
-- carry either name, or a person's action would read as the system's (ingest
-- ignores the system's clears). Existing tokens so named are renamed.
UPDATE api_tokens SET name = name || ' (token)'
WHERE lower(btrim(name)) IN ('system', 'admin');
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_name_not_reserved;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_name_not_reserved
    CHECK (lower(btrim(name)) NOT IN ('system', 'admin'));

-- When a device was last moved to its current site (POST /devices with
-- move_site=true). A site-scoped caller (manager) sees the device's readings
-- and events received from then on only: a move never hands the old site's
-- history to the new site's managers. Alarms carry their own site already.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS site_since timestamptz;

-- Least-privilege group roles (NOLOGIN). The deployment grants them to its
-- login users (docker compose: deploy/postgres/20-roles.sh):
--   firesafe_ingest   ingest: reads and writes data, never api_tokens
--   firesafe_api      the REST API: reads and writes data and tokens
--   firesafe_grafana  dashboards: reads, but not api_tokens nor reject payloads
-- The owner (who runs `firesafe db migrate`) keeps DDL. Roles are cluster-wide
-- and created idempotently; without CREATEROLE the step is skipped (a notice).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['firesafe_ingest', 'firesafe_api', 'firesafe_grafana'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- created meanwhile by a migration of another database
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'firesafe: role % not created (needs CREATEROLE)', r;
            END;
        END IF;
    END LOOP;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_ingest') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO firesafe_ingest', current_database());
        GRANT USAGE ON SCHEMA public TO firesafe_ingest;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO firesafe_ingest;
        REVOKE ALL ON api_tokens FROM firesafe_ingest;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO firesafe_ingest;
        -- Tables of later migrations (made by the same owner) follow.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO firesafe_ingest;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO firesafe_ingest;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_api') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO firesafe_api', current_database());
        GRANT USAGE ON SCHEMA public TO firesafe_api;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO firesafe_api;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO firesafe_api;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO firesafe_api;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO firesafe_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_grafana') THEN
        -- Read only, and no default privileges: a table added later is not
        -- readable by dashboards until a migration grants it on purpose.
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO firesafe_grafana', current_database());
        GRANT USAGE ON SCHEMA public TO firesafe_grafana;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO firesafe_grafana;
        REVOKE ALL ON api_tokens, rejects FROM firesafe_grafana;
        -- Every column of rejects but the payload (what a device sent, verbatim).
        EXECUTE (
            SELECT format('GRANT SELECT (%s) ON rejects TO firesafe_grafana',
                          string_agg(quote_ident(attname), ', ' ORDER BY attnum))
            FROM pg_attribute
            WHERE attrelid = 'rejects'::regclass AND attnum > 0 AND NOT attisdropped
              AND attname <> 'payload'
        );
    END IF;
END $$;
