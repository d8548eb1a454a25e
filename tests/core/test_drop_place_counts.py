"""Migration 0027: the per-place event counts (event_counts_minute/_hour) and the view
kpi_dossiers_by_agency, which nothing reads, are gone after a fresh install and after an upgrade
from 0026 with data, on plain PostgreSQL and TimescaleDB (continuous aggregates, their stored
rows and their refresh policies); the counts by kind and source, the rollups and the KPIs stay
as they were, and the worker keeps counting after the upgrade."""

from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ioc.core import db
from ioc.core.db import connect, migrate
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.checks import assert_counted_once, assert_kpis, assert_rollups
from tests.support.store import load
from tests.support.timescaledb import fresh_settings

BEFORE = 26  # the newest migration before 0027
PLACE_COUNTS = ("event_counts_minute", "event_counts_hour")
DROPPED = (*PLACE_COUNTS, "kpi_dossiers_by_agency")
KIND_COUNTS = {"kind_counts_minute", "kind_counts_hour"}
# kpis.sql's view until 0027 (`ioc db migrate` re-created it after the migrations).
AGENCY_VIEW = """
CREATE OR REPLACE VIEW kpi_dossiers_by_agency AS
SELECT group_code AS agency_code, received, to_handle, finished, finished_on_time,
       finished_late, in_process, late_in_process, due_soon, not_yet_due, online, digitized,
       with_fee, paid_online, dissatisfied_or_late, evaluated, on_time_rate, online_rate,
       digitized_rate, paid_online_rate, satisfaction_rate
FROM kpi_dossiers_by('-infinity', 'infinity', 'agency');
"""
# Plain PostgreSQL: what the worker of 0026 added to them for the stored events.
COUNT_BY_PLACE = """
INSERT INTO {} (bucket, kind, source, province_code, commune_code, agency_code, events)
SELECT time_bucket(%s::interval, occurred_at), kind, source, province_code, commune_code,
       agency_code, count(*)
FROM events GROUP BY 1, 2, 3, 4, 5, 6
"""
# TimescaleDB: the refresh policies ioc/core/db.py gave them until 0027.
OLD_POLICY = ("SELECT add_continuous_aggregate_policy(%s, start_offset => INTERVAL '730 days',"
              " end_offset => %s::interval, schedule_interval => INTERVAL '1 minute',"
              " buckets_per_batch => %s)")
REFRESH_JOBS = ("SELECT hypertable_schema, hypertable_name FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_refresh_continuous_aggregate'")


@pytest.fixture(params=["plain", "timescale"])
def storage(request: pytest.FixtureRequest) -> Settings:
    server = request.getfixturevalue("postgres" if request.param == "plain" else "timescale")
    return fresh_settings(server.url)


def present(conn: psycopg.Connection) -> set[str]:
    return {name for name in DROPPED
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,)}


def refresh_jobs(conn: psycopg.Connection, settings: Settings) -> tuple[set[str], int]:
    """The schema's refresh policies, and how many the whole server runs."""
    rows = conn.execute(REFRESH_JOBS).fetchall()
    return {name for schema, name in rows if schema == settings.database_schema}, len(rows)


def kept(settings: Settings, at: datetime) -> dict[str, Any]:
    """What the dashboards and `ioc kpis` read: counts by kind and source, rollups, KPIs."""
    with connect(settings) as conn:
        tables = {table: sorted(conn.execute(sql.SQL("SELECT * FROM {}").format(
            sql.Identifier(table))).fetchall()) for table in (*KIND_COUNTS, "rollup_hour")}
    return {**tables, "kpis": read_kpis(settings, as_of=at)}


def test_a_fresh_install_has_none_of_them(storage: Settings) -> None:
    migrate(storage)
    with connect(storage) as conn:
        assert present(conn) == set()
        if db.has_timescale(conn):
            assert refresh_jobs(conn, storage)[0] == KIND_COUNTS


def test_an_upgrade_from_0026_drops_them_and_the_worker_keeps_counting(
    storage: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    current, definitions = db.migrations, db.kpi_definitions
    with monkeypatch.context() as patch:
        patch.setattr(db, "migrations", lambda timescale: [
            m for m in current(timescale) if m[0] <= BEFORE])
        patch.setattr(db, "kpi_definitions", lambda: definitions() + AGENCY_VIEW)
        assert migrate(storage)[-1] == BEFORE
    sc = scenario.build(seed=27, dossiers=40, documents=25, reports=20, malformed=False)
    load(storage, replace(sc, messages=sc.messages[:len(sc.messages) // 2]))

    with connect(storage, autocommit=True) as conn:
        timescale = db.has_timescale(conn)
        if timescale:
            for view, end, per_batch in (("event_counts_minute", "1 minute", 1440),
                                         ("event_counts_hour", "1 hour", 168)):
                conn.execute(OLD_POLICY, (view, end, per_batch))
                conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
            stored_rows = conn.execute(
                "SELECT materialization_hypertable_schema, materialization_hypertable_name"
                " FROM timescaledb_information.continuous_aggregates"
                " WHERE view_schema = %s AND view_name = ANY(%s)",
                (storage.database_schema, list(PLACE_COUNTS))).fetchall()
            assert len(stored_rows) == 2
            for table in stored_rows:
                assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(*table))).fetchone()[0] > 0  # type: ignore[index]
            jobs, server_jobs = refresh_jobs(conn, storage)
            assert jobs == KIND_COUNTS | set(PLACE_COUNTS)
        else:
            for table, width in zip(PLACE_COUNTS, ("1 minute", "1 hour"), strict=True):
                conn.execute(sql.SQL(COUNT_BY_PLACE).format(sql.Identifier(table)), (width,))
        assert present(conn) == set(DROPPED)
        events = conn.execute("SELECT count(*) FROM events").fetchone()
        for table in PLACE_COUNTS:
            assert conn.execute(sql.SQL("SELECT sum(events) FROM {}").format(
                sql.Identifier(table))).fetchone() == events
        assert conn.execute("SELECT count(*) FROM kpi_dossiers_by_agency").fetchone() > (0,)
    before = kept(storage, sc.now)

    assert migrate(storage)[:1] == [BEFORE + 1]  # 0027, then any newer migration

    with connect(storage) as conn:
        assert present(conn) == set()
        if timescale:
            for table in stored_rows:
                assert conn.execute("SELECT to_regclass(%s)", (
                    sql.Identifier(*table).as_string(conn),)).fetchone() == (None,)
            assert refresh_jobs(conn, storage) == (KIND_COUNTS, server_jobs - 2)
    assert kept(storage, sc.now) == before
    # The worker after the upgrade: the second half is new, the first half duplicates.
    load(storage, sc)
    assert_kpis(storage, sc)
    assert_rollups(storage, sc)
    assert_counted_once(storage)
