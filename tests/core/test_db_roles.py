"""The database roles of docker-compose.yml (deploy/timescaledb/roles.sh), for real.

The script runs as the compose `roles` service runs it (psql, passwords from files), then the
owner migrates, as the `setup` service does. On the embedded PostgreSQL each role connects as
itself; on TimescaleDB (the PGlite build serves one session and one user) the owner's session
takes each role with SET ROLE, which drops the superuser's rights just the same.
"""

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ioc.core.db import connect, migrate
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres
from tests.support.roles import run_roles, write_secrets
from tests.support.timescaledb import TimescaleServer

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
NOT_GRANTED = ("TRUNCATE", "REFERENCES", "TRIGGER")
RELATIONS = ("SELECT c.oid, c.relname, c.relkind FROM pg_class c"
             " JOIN pg_namespace n ON n.oid = c.relnamespace"
             " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY c.relname")


def scram_matches(stored: str, password: str) -> bool:
    """Whether PostgreSQL's SCRAM-SHA-256 verifier was made from this password."""
    method, iterations_salt, keys = stored.split("$")
    assert method == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(keys.split(":")[0])


def stored_password(conn: psycopg.Connection, role: str) -> str:
    [stored] = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            (role,)).fetchone()
    return str(stored)


def check_privileges(conn: psycopg.Connection, schema: str) -> None:
    """Every table and view: ioc_app has exactly the DML (a view grants no more than its
    tables do), grafana_reader exactly SELECT; the owner owns them all."""
    relations = conn.execute(RELATIONS, (schema,)).fetchall()
    assert {"events", "worker_status", "api_keys", "alerts"} <= {name for _, name, _ in relations}
    for oid, name, _ in relations:
        for role, granted in (("ioc_app", DML),
                              ("grafana_reader", ("SELECT",))):
            for privilege in DML + NOT_GRANTED:
                has = conn.execute("SELECT has_table_privilege(%s, %s::oid, %s)",
                                   (role, oid, privilege)).fetchone()
                assert has == (privilege in granted,), (role, name, privilege)
    sequences = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S'", (schema,)).fetchall()
    for (oid,) in sequences:
        assert conn.execute("SELECT has_sequence_privilege('ioc_app', %s::oid, 'USAGE')",
                            (oid,)).fetchone() == (True,)
    owned = conn.execute("SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
                         " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                         (schema,)).fetchall()
    assert owned == [(conn.info.user,)]


def app_writes_but_changes_no_schema(conn: psycopg.Connection) -> None:
    """As ioc_app: rows in, out and changed; every DDL refused."""
    conn.execute("INSERT INTO worker_status VALUES ('app-test', now(), now())")
    conn.execute("UPDATE worker_status SET heartbeat_at = now() WHERE instance_id = 'app-test'")
    assert conn.execute("DELETE FROM worker_status WHERE instance_id = 'app-test'"
                        " RETURNING instance_id").fetchall() == [("app-test",)]
    conn.execute("CREATE TEMP TABLE scratch (n int)")  # the batch writer's metric_delta
    for ddl in ("DROP TABLE events", "DROP TABLE worker_status CASCADE",
                "ALTER TABLE events ADD COLUMN x int", "TRUNCATE worker_status",
                "CREATE TABLE mine (n int)", "CREATE TABLE public.mine (n int)",
                "DROP FUNCTION ioc_pct(numeric, numeric)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(ddl)


def reader_reads_only(conn: psycopg.Connection) -> None:
    """As grafana_reader: the KPIs and tables read; every write refused."""
    assert conn.execute("SELECT received FROM kpi_dossiers(now() - interval '1 day', now(),"
                        " NULL, NULL)").fetchone() == (0,)
    conn.execute("SELECT * FROM events, worker_status LIMIT 1")
    conn.execute("SET default_transaction_read_only = off")  # what any session may do
    for write in ("INSERT INTO worker_status VALUES ('x', now(), now())",
                  "DELETE FROM events", "DROP TABLE events", "CREATE TABLE mine (n int)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(write)


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:
    """A fresh database on the embedded PostgreSQL; its owner's URL."""
    name = f"roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.parametrize("schema", ["public", "ioc_custom"])
def test_roles_on_postgresql(database: str, schema: str, tmp_path: Path) -> None:
    with psycopg.connect(database, autocommit=True) as owner:
        if schema == "public":  # a table from before the script: an older deployment's volume
            owner.execute("CREATE TABLE before_roles (n int)")
        else:  # a hardened database: the roles get what PUBLIC lost
            owner.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(owner.info.dbname)))
    secrets = write_secrets(tmp_path / "s", "app pw, it's $ecret", "reader: pw")
    done = run_roles(database, schema, secrets)
    assert done.returncode == 0, done.stderr
    assert "pw" not in done.stdout + done.stderr
    owner_settings = Settings(database_url=database, database_schema=schema)
    migrate(owner_settings)  # after the roles: default privileges cover what it creates
    again = run_roles(database, schema, secrets)
    assert again.returncode == 0, again.stderr

    with psycopg.connect(database, autocommit=True) as owner:
        assert scram_matches(stored_password(owner, "ioc_app"), "app pw, it's $ecret")
        assert scram_matches(stored_password(owner, "grafana_reader"), "reader: pw")
        check_privileges(owner, schema)

    # As the containers connect: the app through the settings (URL + password), its search
    # path from connect_kwargs; Grafana with no options, the role's search_path.
    app = Settings(database_url=database.replace("postgres@", "ioc_app@", 1),
                   database_password="unused: the embedded server trusts local users",
                   database_schema=schema)
    with connect(app, autocommit=True) as conn:
        assert conn.info.user == "ioc_app"
        app_writes_but_changes_no_schema(conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            migrate(app)  # only the owner migrates
    with psycopg.connect(database.replace("postgres@", "grafana_reader@", 1),
                         autocommit=True) as conn:
        if schema == "public":
            assert conn.execute("SELECT count(*) FROM before_roles").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO worker_status VALUES ('x', now(), now())")
        reader_reads_only(conn)


def test_changing_a_password_takes_effect_at_the_next_run(database: str,
                                                         tmp_path: Path) -> None:
    assert run_roles(database, "public", write_secrets(tmp_path / "a", "old-app", "old-reader")
                     ).returncode == 0
    done = run_roles(database, "public", write_secrets(tmp_path / "b", "new-app", "old-reader"))
    assert done.returncode == 0, done.stderr
    with psycopg.connect(database, autocommit=True) as owner:
        assert scram_matches(stored_password(owner, "ioc_app"), "new-app")
        assert not scram_matches(stored_password(owner, "ioc_app"), "old-app")
        assert scram_matches(stored_password(owner, "grafana_reader"), "old-reader")


def test_a_missing_secret_file_stops_the_script(database: str, tmp_path: Path) -> None:
    secrets = write_secrets(tmp_path / "s", "a", "r")
    done = run_roles(database, "public", {**secrets, "APP_PASSWORD_FILE": str(tmp_path / "no")})
    assert done.returncode != 0 and "APP_PASSWORD_FILE" in done.stderr


def test_roles_on_timescaledb(timescale: TimescaleServer, tmp_path: Path) -> None:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    secrets = write_secrets(tmp_path / "s", "app-pw", "reader-pw")
    done = run_roles(timescale.url, schema, secrets)
    assert done.returncode == 0, done.stderr
    owner = Settings(database_url=timescale.url, database_schema=schema)
    migrate(owner)
    with connect(owner, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM timescaledb_information.hypertables"
                            " WHERE hypertable_schema = %s", (schema,)).fetchone()[0] >= 2
        check_privileges(conn, schema)
        conn.execute("SET ROLE ioc_app")
        app_writes_but_changes_no_schema(conn)
        # A hypertable row far from any chunk: TimescaleDB creates the chunk for the app.
        conn.execute(
            "INSERT INTO events (occurred_at, event_id, kind, entity_id, source,"
            " province_code, agency_code, status, ingested_at, body)"
            " VALUES ('2001-02-03T04:05:06Z', %s, 'dossier', 'x', 'test', '25', 'A',"
            " 'received', now(), '{}')", (uuid.uuid4(),))
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        conn.execute("SELECT * FROM kind_counts_minute LIMIT 1")  # a continuous aggregate
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE grafana_reader")
        conn.execute("SET default_transaction_read_only = on")  # the role's setting
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), conn.transaction():
            conn.execute("INSERT INTO worker_status VALUES ('x', now(), now())")
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        conn.execute("SELECT * FROM kind_counts_hour LIMIT 1")
        reader_reads_only(conn)
        conn.execute("RESET ROLE")

