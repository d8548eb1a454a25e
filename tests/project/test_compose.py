"""docker-compose.yml, the image and Grafana's provisioning, without Docker.

Docker cannot run on these machines. The compose file is checked as data (services, pinned
images, healthchecks, secrets, limits, grace periods, settings, `ioc` commands), and what
runs inside containers is run here for real: the settings read from the secret files, and the
worker, API and simulator healthchecks. The database roles script runs for real in
tests/test_db_roles.py, the healthcheck's watchdog in tests/test_healthcheck_watchdog.py.
Not covered: the images themselves.
"""

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
ONE_SHOT = {"setup", "roles"}
LONG_RUNNING = sorted(set(SERVICES) - ONE_SHOT)
ROLES_SCRIPT = ROOT / "deploy" / "timescaledb" / "roles.sh"
SECRETS_DIR = "/run/secrets/"
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
    assert set(SERVICES) == {"kafka", "timescaledb", "grafana", "roles", "setup", "worker",
                             "api", "simulator"}
    assert {name: s.get("profiles") for name, s in SERVICES.items() if "profiles" in s} == {
        "simulator": ["demo"]}
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name


def test_long_running_services_have_healthchecks_and_restart() -> None:
    for name in LONG_RUNNING:
        check = SERVICES[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    # Restarted, except the one-shot jobs and the simulator (a restarted run would publish a
    # different history under the same event ids and dossier codes).
    assert {name: s["restart"] for name, s in SERVICES.items()} == {
        **{name: "unless-stopped" for name in SERVICES}, "setup": "no", "roles": "no",
        "simulator": "no"}


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


def walk(node: object, key: str = "") -> Iterator[tuple[str, object]]:
    """(key, scalar value) of every leaf of the parsed compose file."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)
    else:
        yield key, node


SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|PEPPER", re.I)


def test_secrets_come_from_files_never_from_values() -> None:
    declared = COMPOSE["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"} and secret["file"] == f"./secrets/{name}", name
    secret_keys = [(k, v) for k, v in walk(COMPOSE)
                   if SECRET_KEY.search(k) and k not in ("secrets", "x-ioc-secrets")]
    assert secret_keys
    for key, value in secret_keys:
        # A file under /run/secrets/, or a pass-through that compose leaves unset.
        assert key.endswith("_FILE") and (
            value is None or (isinstance(value, str) and value.startswith(SECRETS_DIR))), \
            f"{key}: {value!r} is not a secret file"
    assert not [name for name in referenced(COMPOSE) if SECRET_KEY.search(name)]
    # No credentials inside any URL (what `docker inspect` would show).
    assert not re.findall(r"://[^/@\s]+:[^/@\s]*@", COMPOSE_TEXT)
    # Every service is given exactly the secret files its environment names.
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        named = {v.removeprefix(SECRETS_DIR) for _, v in walk(env)
                 if isinstance(v, str) and v.startswith(SECRETS_DIR)}
        if name == "grafana":  # its datasource file reads one ($__file{...})
            named.add("grafana_reader_password")
        assert set(service.get("secrets", [])) == named, name
        assert named <= set(declared), name


def test_deploy_secrets_script_makes_every_declared_secret(tmp_path: Path) -> None:
    script = ROOT / "deploy" / "secrets.sh"
    done = subprocess.run([str(script), str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=30, check=True)
    made = {path.name: path.read_text() for path in (tmp_path / "s").iterdir()}
    assert set(made) == set(COMPOSE["secrets"])
    required = {"db_owner_password", "db_app_password", "grafana_reader_password",
                "grafana_admin_password", "api_key_pepper"}
    for name, content in made.items():
        if name in required:
            assert re.fullmatch(r"[0-9a-f]{48}", content), name
        else:
            assert content == "", name  # an alert channel stays off until its key is written
    assert len({made[name] for name in required}) == len(required)
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0
    assert all(content not in done.stdout for content in made.values() if content)
    (tmp_path / "s" / "db_app_password").write_text("kept")
    subprocess.run([str(script), str(tmp_path / "s")], timeout=30, check=True,
                   capture_output=True)
    assert (tmp_path / "s" / "db_app_password").read_text() == "kept"


def in_container_files(tmp_path: Path, secrets: dict[str, str]) -> dict[str, str]:
    """Secret files written under tmp_path; /run/secrets/<name> -> their paths here."""
    (tmp_path / "run").mkdir()
    for name, content in secrets.items():
        (tmp_path / "run" / name).write_text(content)
    return {SECRETS_DIR + name: str(tmp_path / "run" / name) for name in COMPOSE["secrets"]}


def container_settings(service: str, files: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> Settings:
    """The settings `ioc` reads in this service's container: its environment, file paths
    mapped to the test's copies."""
    for name in [n for n in os.environ if n.startswith("IOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for key, value in SERVICES[service]["environment"].items():
        if value is not None:
            monkeypatch.setenv(key, files.get(str(value), interpolate(str(value), {})))
    return Settings()


@pytest.mark.parametrize(("service", "user", "secret"), [
    ("worker", "ioc_app", "db_app_password"), ("api", "ioc_app", "db_app_password"),
    ("setup", "ioc", "db_owner_password")])
def test_database_login_comes_from_the_secret_file(
        service: str, user: str, secret: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    secrets = {name: f"{name}-value" for name in COMPOSE["secrets"]}
    secrets[secret] = "p@ss:w/ord with 'quotes'\n"  # as `echo ... > file` leaves it
    settings = container_settings(service, in_container_files(tmp_path, secrets), monkeypatch,
                                  tmp_path)
    db = SERVICES["timescaledb"]["environment"]
    assert conninfo_to_dict(settings.database_url) == {
        "user": user, "password": "p@ss:w/ord with 'quotes'", "host": "timescaledb",
        "port": "5432", "dbname": db["POSTGRES_DB"]}
    assert "p@ss" not in repr(settings)
    if service != "setup":
        assert settings.smtp_password == "smtp_password-value"
        assert settings.telegram_bot_token == "telegram_bot_token-value"
        assert Path(settings.api_key_pepper_file).read_text() == "api_key_pepper-value"
    # The database owner's password is the one the database image reads.
    assert db["POSTGRES_PASSWORD_FILE"] == SECRETS_DIR + "db_owner_password"
    assert db["POSTGRES_USER"] == "ioc"


def test_a_setting_and_its_file_together_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw").write_text("from-file")
    monkeypatch.setenv("IOC_SMTP_PASSWORD_FILE", str(tmp_path / "pw"))
    assert Settings().smtp_password == "from-file"
    monkeypatch.setenv("IOC_SMTP_PASSWORD", "from-env")
    with pytest.raises(ValueError, match="IOC_SMTP_PASSWORD or IOC_SMTP_PASSWORD_FILE"):
        Settings()
    monkeypatch.delenv("IOC_SMTP_PASSWORD")
    monkeypatch.setenv("IOC_SMTP_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_ioc_variables_are_settings() -> None:
    fields = {f"IOC_{name.upper()}{suffix}" for name in Settings.model_fields
              for suffix in ("", "_FILE")}
    for where, text in (("docker-compose.yml", COMPOSE_TEXT), (".env.example", ENV_EXAMPLE)):
        unknown = set(IOC_NAME.findall(text)) - fields
        assert not unknown, f"{where} names settings ioc/core/settings.py lacks: {sorted(unknown)}"


def test_env_example_lists_every_variable_and_setting() -> None:
    listed = env_example()
    used = referenced(COMPOSE)
    assert not set(used) - set(listed), "compose variables missing from .env.example"
    missing = {f"IOC_{name.upper()}" for name in Settings.model_fields} - set(listed)
    assert not missing, f".env.example lacks settings: {sorted(missing)}"
    # Nothing is required (the secrets are files), and every line is commented out: a copied
    # .env changes nothing.
    assert not {name for name, ops in used.items() if ":?" in ops}
    assert not {name for name, (_, commented) in listed.items() if not commented}


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


def bind_mounts(args: str) -> dict[str, str]:
    """A RUN's `--mount=type=bind,source=S,target=T` (no `from`): target -> context source."""
    mounts = {}
    for spec in re.findall(r"--mount=(\S+)", args):
        options = dict(part.split("=", 1) for part in spec.split(","))
        if options.get("type") == "bind" and "from" not in options:
            mounts[options["target"]] = options["source"]
    return mounts


def test_the_image_installs_the_locked_dependencies_and_the_wheel_only() -> None:
    build, runtime = dockerfile_stages()
    assert re.fullmatch(r"\S+ AS build", build[0][1], re.I), build[0]
    copied = {args.split()[0].rstrip("/") for keyword, args in build if keyword == "COPY"
              and "--from" not in args}
    assert copied >= {"pyproject.toml", *packaged_top_levels()}, copied
    # The build stage builds with the locked setuptools, not whatever an isolated build takes.
    [locked_build] = [a for k, a in build if k == "RUN" and "--require-hashes" in a]
    assert bind_mounts(locked_build)[re.search(r"-r (\S+)", locked_build)[1]] == (
        "deploy/build-requirements.lock")
    assert any(k == "RUN" and "pip wheel" in a and "--no-deps" in a
               and "--no-build-isolation" in a for k, a in build)
    # The runtime stage takes nothing from the build context but the lock (bound, not
    # copied): the dependencies from the lock with their hashes, then the wheel alone.
    assert not [args for keyword, args in runtime if keyword in ("COPY", "ADD")]
    [install] = [a for k, a in runtime if k == "RUN" and "pip install" in a]
    steps = [step.strip() for step in install.split("&&")]
    first, wheel = steps[0], steps[1]
    assert "--require-hashes" in first and "--only-binary=:all:" in first
    assert bind_mounts(first)[re.search(r"-r (\S+)", first)[1]] == "deploy/requirements.lock"
    assert "from=build" in install and re.search(r"\bioc_monitor-\*\.whl\b", wheel)
    assert "--no-deps" in wheel and "--no-index" in wheel
    assert "pip check" in steps
    # Offline builds: pip finds the wheelhouse, and the index only when allowed.
    for stage in (build, runtime):
        env = " ".join(args for keyword, args in stage if keyword == "ENV")
        assert "PIP_FIND_LINKS=/wheelhouse" in env and "PIP_NO_INDEX=${PIP_NO_INDEX}" in env
        assert ("ARG", "PIP_NO_INDEX=0") in stage
        for keyword, args in stage:
            if keyword == "RUN" and "--require-hashes" in args:
                assert bind_mounts(args)["/wheelhouse"] == "deploy/wheelhouse"
    assert (ROOT / "deploy" / "wheelhouse").is_dir()
    # The settings' own defaults (the packaged alert rules) apply in the image.
    env = " ".join(args for keyword, args in runtime if keyword in ("ENV", "ARG"))
    assert "IOC_ALERT_RULES" not in env and "IOC_ALERT_RECIPIENTS" not in env
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert not set(ignored) & {"pyproject.toml", "README.md", *packaged_top_levels()}
    # deploy/ and secrets/ stay out of the context, but for what the build binds.
    assert "deploy" in ignored and "secrets" in ignored
    for needed in ("deploy/requirements.lock", "deploy/build-requirements.lock",
                   "deploy/wheelhouse"):
        assert f"!{needed}" in ignored, needed


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
    # The password: a secret file Grafana reads, the one the roles job gives the role.
    reference = re.fullmatch(r"\$__file\{(/run/secrets/\w+)\}",
                             source["secureJsonData"]["password"])
    assert reference, "secureJsonData.password must come from a secret file"
    secret = reference[1].removeprefix(SECRETS_DIR)
    assert secret in SERVICES["grafana"]["secrets"]
    assert SERVICES["roles"]["environment"]["READER_PASSWORD_FILE"] == reference[1]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in SERVICES["grafana"]["environment"]
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith(
        SECRETS_DIR)


def test_alerting_folder_holds_only_files_grafana_accepts() -> None:
    files = list((PROVISIONING / "alerting").iterdir())
    assert files
    for path in files:
        assert path.is_file() and path.suffix in (".yaml", ".yml", ".json"), path.name
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1


# --- the database roles ---------------------------------------------------------------------

def test_roles_job_runs_the_script_as_the_owner_before_the_migrations() -> None:
    roles, db = SERVICES["roles"], SERVICES["timescaledb"]
    assert roles["image"] == db["image"]  # its psql is the server's
    [(target, (source, read_only))] = volume_mounts("roles").items()
    assert (ROOT / source).resolve() == ROLES_SCRIPT and read_only
    assert roles["entrypoint"] == [target] and os.access(ROLES_SCRIPT, os.X_OK)
    env = roles["environment"]
    assert (env["PGHOST"], env["PGUSER"], env["PGDATABASE"]) == (
        "timescaledb", db["environment"]["POSTGRES_USER"], db["environment"]["POSTGRES_DB"])
    assert env["PGPASSWORD_FILE"] == db["environment"]["POSTGRES_PASSWORD_FILE"]
    assert env["APP_PASSWORD_FILE"] == SERVICES["worker"]["environment"][
        "IOC_DATABASE_PASSWORD_FILE"]
    assert "IOC_DATABASE_SCHEMA" in env  # grants where the tables are
    assert roles["depends_on"] == {"timescaledb": {"condition": "service_healthy"}}
    done = {"condition": "service_completed_successfully"}
    assert SERVICES["setup"]["depends_on"]["roles"] == done
    assert SERVICES["grafana"]["depends_on"]["roles"] == done
    # No init script beside the image's own: the job covers new and old volumes alike.
    assert not [t for t in volume_mounts("timescaledb") if "initdb" in t]


def test_only_the_setup_job_connects_as_the_owner() -> None:
    owner = SERVICES["timescaledb"]["environment"]["POSTGRES_USER"]
    for name in OURS:
        user = conninfo_to_dict(SERVICES[name]["environment"]["IOC_DATABASE_URL"])["user"]
        assert user == (owner if name == "setup" else "ioc_app"), name


# --- limits, stops and restarts, telemetry ---------------------------------------------------

MACHINE = {"cpus": 4, "memory": 16 * 2**30}  # the stated machine size (README, Production)
OS_RESERVE = 2 * 2**30  # the host's own share: kernel, Docker, page cache for the rest
SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)b?$", re.I)


def size(text: str) -> int:
    """Docker's (k, m, g) and PostgreSQL's (kB, MB, GB) sizes, in bytes."""
    match = SIZE.match(str(text).strip())
    assert match, text
    return int(float(match[1]) * 1024 ** " kmg".index(match[2].lower() or " "))


def limits(name: str) -> tuple[float, int]:
    limit = SERVICES[name]["deploy"]["resources"]["limits"]
    return float(limit["cpus"]), size(limit["memory"])


def postgres_settings() -> dict[str, str]:
    command = SERVICES["timescaledb"]["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    return dict(flag.split("=", 1) for flag in command[2::2])


def test_every_service_has_limits_that_fit_the_stated_machine() -> None:
    workers = 2  # the README's sizing: two workers on this machine
    memory = 0
    for name in SERVICES:
        cpus, mem = limits(name)
        assert 0 < cpus <= MACHINE["cpus"] and mem > 0, name
        if name not in ONE_SHOT and "profiles" not in SERVICES[name]:
            memory += mem * (workers if name == "worker" else 1)
    assert memory <= MACHINE["memory"] - OS_RESERVE, f"{memory / 2**30:.1f} GB of limits"
    assert "13 GB" in COMPOSE_TEXT and memory == 13 * 2**30  # the figure the header states


def test_heaps_and_buffers_fit_their_containers() -> None:
    heap = re.fullmatch(r"-Xms(\w+) -Xmx(\w+)", SERVICES["kafka"]["environment"]["KAFKA_HEAP_OPTS"])
    assert heap and heap[1] == heap[2]
    _, kafka_memory = limits("kafka")
    assert size(heap[2]) <= kafka_memory / 2  # the rest is the page cache Kafka reads from
    pg = postgres_settings()
    cpus, db_memory = limits("timescaledb")
    assert size(pg["shared_buffers"]) <= db_memory / 4
    assert size(pg["shared_buffers"]) < size(pg["effective_cache_size"]) <= db_memory
    # work_mem per sort for a dashboard's worth of connections, and maintenance, still fit.
    assert (size(pg["shared_buffers"]) + size(pg["maintenance_work_mem"])
            + int(pg["max_connections"]) // 4 * size(pg["work_mem"])) <= db_memory * 0.6
    # timescaledb-tune (new volumes) sizes for the container, not the host.
    env = SERVICES["timescaledb"]["environment"]
    assert size(env["TS_TUNE_MEMORY"]) == db_memory and int(env["TS_TUNE_NUM_CPUS"]) == cpus


def test_stateful_services_get_time_for_a_clean_shutdown() -> None:
    def seconds(text: str) -> int:
        match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
        assert match and text, text
        return int(match[1] or 0) * 60 + int(match[2] or 0)

    assert seconds(SERVICES["kafka"]["stop_grace_period"]) >= 60
    assert seconds(SERVICES["timescaledb"]["stop_grace_period"]) >= 60
    # The worker's batch and the API's requests in flight: more than Docker's 10 s default.
    assert seconds(SERVICES["worker"]["stop_grace_period"]) >= 30
    assert seconds(SERVICES["api"]["stop_grace_period"]) > 10


def test_telemetry_is_off() -> None:
    assert SERVICES["timescaledb"]["environment"]["TIMESCALEDB_TELEMETRY"] == "off"
    assert postgres_settings()["timescaledb.telemetry_level"] == "off"  # older volumes too
    grafana = SERVICES["grafana"]["environment"]
    assert grafana["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert grafana["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"


@pytest.mark.parametrize("name", ["worker", "api"])
def test_an_unhealthy_worker_or_api_is_stopped_and_restarted(name: str) -> None:
    """Docker never restarts an unhealthy container: the healthcheck's watchdog stops it after
    as many failures as Docker counts, and the restart policy starts it again."""
    service = SERVICES[name]
    check = service["healthcheck"]
    args = check["test"][3:]
    assert args[0] == name
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert int(options["--exit-after"]) == check["retries"]
    assert options["--start-period"] + "s" == check["start_period"]
    assert "--pid" not in options  # PID 1: docker-init, which passes signals to `ioc`
    assert service["init"] is True and service["restart"] == "unless-stopped"
    assert volume_mounts(name)[check["test"][2]] == ("./deploy/healthcheck.py", True)


# --- the healthchecks, run as the container runs them ----------------------------------------

def healthcheck(service: str, env: dict[str, str], cwd: Path) -> int:
    """The service's healthcheck command, its script the mounted file; the watchdog pointed
    at a process of the test's own (never this machine's PID 1)."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    [(source, _)] = [m for t, m in volume_mounts(service).items() if t == test[2]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as bystander:
        try:
            return subprocess.run(
                [sys.executable, str(ROOT / source), *test[3:], "--pid", str(bystander.pid),
                 "--state", str(cwd / "health-state")], cwd=cwd, env={**clean, **env},
                capture_output=True, timeout=60, check=False).returncode
        finally:
            bystander.kill()


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
