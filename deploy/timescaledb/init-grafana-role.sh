#!/bin/sh
# grafana_reader: the read-only role of Grafana's datasource.
#
# The TimescaleDB container runs this once, from /docker-entrypoint-initdb.d/, when it
# initialises an empty data volume, before `ioc db migrate` creates any table: so it grants
# SELECT on the tables and EXECUTE on the functions (kpi_dossiers(...)...) that the owner
# ($POSTGRES_USER, `ioc`) creates later, in IOC_DATABASE_SCHEMA (default public).
# Safe to run again: on a volume initialised before this script existed, or after changing
# GRAFANA_READER_PASSWORD:
#   docker compose exec timescaledb /docker-entrypoint-initdb.d/010-grafana-role.sh
set -eu

: "${GRAFANA_READER_PASSWORD:?set GRAFANA_READER_PASSWORD}"
owner="${POSTGRES_USER:-postgres}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "$owner" --dbname "${POSTGRES_DB:-$owner}" \
    --set=owner="$owner" \
    --set=schema="${IOC_DATABASE_SCHEMA:-public}" <<'SQL'
-- From the environment, not the command line (which `ps` shows).
\getenv password GRAFANA_READER_PASSWORD
SET client_min_messages = warning;
SELECT 'CREATE ROLE grafana_reader'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader') \gexec
ALTER ROLE grafana_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD :'password';
-- Defence in depth: even a function that writes fails, and no dashboard query runs away.
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET statement_timeout = '60s';

SELECT format('GRANT CONNECT ON DATABASE %I TO grafana_reader', current_database()) \gexec
SELECT format('ALTER ROLE grafana_reader IN DATABASE %I SET search_path = %I, public',
              current_database(), :'schema') \gexec

CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"owner";
GRANT USAGE ON SCHEMA :"schema", public TO grafana_reader;
-- What exists now...
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO grafana_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA :"schema" TO grafana_reader;
-- ...and what the owner creates later (tables, views, continuous aggregates, functions).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT EXECUTE ON FUNCTIONS TO grafana_reader;
SQL
echo "grafana_reader: read-only role ready (schema ${IOC_DATABASE_SCHEMA:-public})"
