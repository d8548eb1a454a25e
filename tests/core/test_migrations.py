"""Migrations on plain PostgreSQL (TimescaleDB: test_migrations_timescale.py)."""

from datetime import UTC, datetime

from ioc.core.db import migrate, migrations
from ioc.core.settings import Settings
from tests.support.services import query


def test_migrate_is_versioned_and_idempotent(settings: Settings) -> None:
    versions = [version for version, _, _ in migrations(timescale=False)]
    assert migrate(settings) == versions
    assert migrate(settings) == []
    assert [r[0] for r in query(settings, "SELECT version FROM schema_migrations ORDER BY 1")] \
        == versions
    tables = {r[0] for r in query(
        settings, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (settings.database_schema,))}
    assert {"events", "dossiers", "documents", "field_reports", "rollup_hour",
            "kind_counts_minute", "kind_counts_hour", "kpi_dossiers", "kpi_documents",
            "kpi_field_reports", "worker_status"} <= tables


def test_due_soon_horizon_follows_the_setting(settings: Settings) -> None:
    migrate(settings.model_copy(update={"due_soon_hours": 6}))
    assert query(settings, "SELECT ioc_due_soon_horizon()")[0][0].total_seconds() == 6 * 3600


def test_plain_time_bucket_aligns_like_timescaledb(settings: Settings) -> None:
    migrate(settings)
    rows = query(settings, """
        SELECT time_bucket('1 week', TIMESTAMPTZ '2026-11-22 10:00+00'),
               time_bucket('1 month', TIMESTAMPTZ '2026-11-22 10:00+00'),
               time_bucket('1 day', TIMESTAMPTZ '2026-11-22 20:00+00', 'Asia/Ho_Chi_Minh')""")
    week, month, local_day = rows[0]
    assert week == datetime(2026, 11, 16, tzinfo=UTC)  # a Monday, like 2000-01-03
    assert month == datetime(2026, 11, 1, tzinfo=UTC)
    assert local_day == datetime(2026, 11, 22, 17, tzinfo=UTC)  # 23 Nov 00:00 in Vietnam
