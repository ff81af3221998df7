#!/bin/sh
# Runs once, when the TimescaleDB volume is first initialised (the image's
# /docker-entrypoint-initdb.d), as the owner $POSTGRES_USER: login roles of
# least privilege. The owner alone runs migrations (DDL); the others only
# belong to the NOLOGIN group roles whose table privileges migration 0050
# (storage/migrations/0050_api_hardening.sql) grants:
#
#   ingest    in firesafe_ingest   reads and writes data, never api_tokens
#   api       in firesafe_api      reads and writes data and api_tokens
#   grafana   in firesafe_grafana  reads dashboards' data: no api_tokens, no
#                                  reject payloads; read-only transactions
#
# On a volume initialised before this script existed, run it by hand once:
#   docker compose exec timescaledb sh /docker-entrypoint-initdb.d/20-roles.sh
set -eu
: "${INGEST_DB_PASSWORD:?}" "${API_DB_PASSWORD:?}" "${GRAFANA_DB_USER:?}" "${GRAFANA_DB_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v ingest_pw="$INGEST_DB_PASSWORD" -v api_pw="$API_DB_PASSWORD" \
    -v grafana="$GRAFANA_DB_USER" -v grafana_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
-- The group roles (the migration creates them too, idempotently, where it may).
SELECT format('CREATE ROLE %I NOLOGIN', r)
FROM unnest(ARRAY['firesafe_ingest', 'firesafe_api', 'firesafe_grafana']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', r)
FROM unnest(ARRAY['ingest', 'api', :'grafana']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

ALTER ROLE ingest PASSWORD :'ingest_pw';
ALTER ROLE api PASSWORD :'api_pw';
ALTER ROLE :"grafana" PASSWORD :'grafana_pw';
GRANT firesafe_ingest TO ingest;
GRANT firesafe_api TO api;
GRANT firesafe_grafana TO :"grafana";
ALTER ROLE :"grafana" SET default_transaction_read_only = on;
ALTER ROLE :"grafana" SET statement_timeout = '30s';
SQL
