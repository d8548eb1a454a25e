"""Connections, versioned migrations (plain PostgreSQL or TimescaleDB, detected) and the KPI
definitions (kpis.sql), re-applied after them on every migrate."""

import re
from importlib import resources

import psycopg
import structlog
from psycopg import sql

from ioc.core.settings import Settings

log = structlog.get_logger()

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")
MIGRATE_LOCK = 72_114_001  # pg_advisory_lock key: one migrator at a time


def connect_kwargs(settings: Settings) -> dict[str, object]:
    """Every connection works in the configured schema (TimescaleDB's functions stay in public)."""
    return {
        "options": f"-c search_path={settings.database_schema},public",
        # PgBouncer and PGlite both dislike server-side prepared statements.
        "prepare_threshold": None,
    }


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(settings.database_url, **connect_kwargs(settings), **kwargs)  # type: ignore[arg-type]


def has_timescale(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrations(timescale: bool) -> list[tuple[int, str, str]]:
    """(version, name, SQL) in order, with the variant that fits the database."""
    wanted = "timescale" if timescale else "plain"
    found = []
    for entry in resources.files("ioc.core.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match and match.group(3) in (None, wanted):
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def kpi_definitions() -> str:
    """kpis.sql: every KPI function and view, CREATE OR REPLACE (repeatable)."""
    return resources.files("ioc.core").joinpath("kpis.sql").read_text(encoding="utf-8")


def migrate(settings: Settings) -> list[int]:
    """Apply what is missing, each migration in its own transaction, then kpis.sql; return the
    versions applied."""
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            return _migrate(conn, settings)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def _migrate(conn: psycopg.Connection, settings: Settings) -> list[int]:
    schema = sql.Identifier(settings.database_schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
    timescale = has_timescale(conn)
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, text in migrations(timescale):
        if version in done:
            continue
        with conn.transaction():
            conn.execute(text.encode())  # bytes: run as a script (simple query protocol)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
        log.info("migration applied", version=version, name=name, timescale=timescale)
        applied.append(version)
    with conn.transaction():
        conn.execute(kpi_definitions().encode())
    conn.execute(
        "INSERT INTO ioc_settings (key, value) VALUES ('due_soon_horizon', %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (f"{settings.due_soon_hours} hours",),
    )
    if timescale:
        apply_policies(conn, settings)
    return applied


def apply_policies(conn: psycopg.Connection, settings: Settings) -> None:
    """Compression, retention and refresh policies, re-applied so setting changes take effect."""
    days = "{} days".format
    policies = [
        ("compression", "events", {"compress_after": days(settings.compress_after_days)}),
        ("retention", "events", {"drop_after": days(settings.retain_events_days)}),
        ("retention", "dead_letters", {"drop_after": days(settings.retain_events_days)}),
    ]
    for kind, table, args in policies:
        conn.execute(f"SELECT remove_{kind}_policy(%s, if_exists => true)", (table,))
        (name, value), = args.items()
        conn.execute(f"SELECT add_{kind}_policy(%s, {name} => %s::interval)", (table, value))
    # The refresh window reaches back as far as raw events are kept: a late event of any kept
    # day is counted at the next refresh (below the watermark real-time aggregation does not see
    # it), and buckets whose raw chunks retention dropped are never re-computed (to zero).
    # A batch is a day of minutes / a week of hours (TimescaleDB >= 2.19 defaults to one bucket
    # per transaction: a first refresh of two years of minutes would take a million).
    start = days(settings.retain_events_days)
    for view, end, per_batch in (("kind_counts_minute", "1 minute", 1440),
                                 ("kind_counts_hour", "1 hour", 168)):
        if conn.execute("SELECT to_regclass(%s)", (view,)).fetchone() == (None,):
            continue  # a schema migrated only part of the way (the upgrade test) lacks it
        conn.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (view,))
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => %s::interval,"
            " end_offset => %s::interval, schedule_interval => INTERVAL '1 minute',"
            " buckets_per_batch => %s)",
            (view, start, end, per_batch),
        )
