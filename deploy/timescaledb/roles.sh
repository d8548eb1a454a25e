#!/bin/sh
# The database roles besides the owner, created or updated; run by the `roles` service of
# docker-compose.yml at every `docker compose up`, before the migrations:
#   ioc_app         the worker and the API: reads and writes rows (DML), no DDL, no TRUNCATE;
#   grafana_reader  Grafana's datasource: reads only.
# The owner (PGUSER, the image's POSTGRES_USER `ioc`) owns the schema and runs the migrations
# (the `setup` service); what it creates later is granted by default privileges.
# Passwords come from files (Docker secrets), set again at every run: to rotate one, change
# its file and `docker compose up -d` (README, Production). Safe to run any number of times.
# Needs: psql, PGHOST/PGPORT/PGDATABASE/PGUSER, and the owner's password in PGPASSWORD_FILE
# (or a trusted connection), APP_PASSWORD_FILE, READER_PASSWORD_FILE, IOC_DATABASE_SCHEMA.
set -eu

secret() {  # the content of a secret file, whose name is in variable $1
    eval "file=\${$1:?set $1}"
    [ -r "$file" ] || { echo "roles: cannot read $1=$file" >&2; exit 1; }
    cat "$file"
}
if [ -n "${PGPASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(secret PGPASSWORD_FILE)"
    export PGPASSWORD
fi
# To psql through the environment, never the command line (which `ps` shows).
APP_PASSWORD="$(secret APP_PASSWORD_FILE)"
READER_PASSWORD="$(secret READER_PASSWORD_FILE)"
export APP_PASSWORD READER_PASSWORD

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --set=schema="${IOC_DATABASE_SCHEMA:-public}" <<'SQL'
\getenv app_password APP_PASSWORD
\getenv reader_password READER_PASSWORD
SET client_min_messages = warning;
SELECT current_user AS owner \gset

SELECT format('CREATE ROLE %I', name) FROM unnest(ARRAY['ioc_app', 'grafana_reader']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
ALTER ROLE ioc_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD :'app_password';
ALTER ROLE grafana_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD :'reader_password';
-- Defence in depth: even a function that writes fails, and no dashboard query runs away.
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET statement_timeout = '60s';

-- Granted to PUBLIC unless the site revoked it: granted here only where missing.
SELECT format('GRANT %s ON DATABASE %I TO %I', privilege, current_database(), name)
FROM (VALUES ('ioc_app', 'CONNECT'), ('ioc_app', 'TEMPORARY'), ('grafana_reader', 'CONNECT'))
    AS granted (name, privilege)
WHERE NOT has_database_privilege(name, current_database(), privilege) \gexec
SELECT format('ALTER ROLE %I IN DATABASE %I SET search_path = %I, public',
              name, current_database(), :'schema')
FROM unnest(ARRAY['ioc_app', 'grafana_reader']) AS name \gexec

-- The schema belongs to the owner: only it creates, alters or drops objects there.
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"owner";
GRANT USAGE ON SCHEMA :"schema", public TO ioc_app, grafana_reader;
-- What exists now (a database migrated before this script ran)...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO ioc_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA :"schema" TO ioc_app;
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO grafana_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA :"schema" TO ioc_app, grafana_reader;
-- ...and what the owner's migrations create later (tables, views, continuous aggregates,
-- sequences, functions).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ioc_app;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ioc_app;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT EXECUTE ON FUNCTIONS TO ioc_app, grafana_reader;
SQL
echo "roles: ioc_app (read-write rows) and grafana_reader (read-only) ready in schema ${IOC_DATABASE_SCHEMA:-public}"
