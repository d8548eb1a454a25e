"""The package as users install it: the wheel built from this tree, installed into a fresh
virtual environment outside the repository, runs its commands from an empty folder.

The other tests use the editable install, which reads data files from the source tree, so only
an installed wheel shows a file left out of it (migrations, alert rules, dashboards JSON,
provisioning, connector templates). The third-party dependencies are this environment's: pip
keeps no cache on these machines and fetching them again takes half a minute. Its site-packages
is added to the fresh environment as a plain path entry, where setuptools' editable hook (a .pth
file) does not run, and the test checks that every project module resolves to the wheel's copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from ioc.core.events import EVENT_TYPES
from ioc.embedded.servers import Postgres
from tests.support import ROOT
from tests.support.grafana import TOKEN, FakeGrafana

PACKAGES = ("ioc", "streams", "connectors", "dashboards")
# What a checkout holds besides the build's input; left out of the copy that is built.
NOT_BUILT = shutil.ignore_patterns(".git", ".venv", ".ioc", "build", "dist", "*.egg-info",
                                   "__pycache__", ".pytest_cache", ".ruff_cache", "tests",
                                   "bench", "node_modules")


class Installed:
    """A fresh virtual environment holding the wheel, and an empty folder to run it from."""

    def __init__(self, venv: Path, work: Path, env: dict[str, str]) -> None:
        self.venv, self.work, self.env = venv, work, env
        self.site = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                             "platbase": str(venv)}))

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / args[0]), *args[1:]], cwd=self.work,
                              env={**self.env, **extra_env}, capture_output=True, text=True,
                              timeout=180, check=False)

    def ioc(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.run("ioc", *args, **extra_env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    shutil.copytree(ROOT, source, ignore=NOT_BUILT)  # a clean tree: no build/ leftovers
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist),
                    str(source)], check=True, timeout=600)
    (wheel,) = dist.glob("ioc_monitor-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    # Third-party packages from this environment, which must not hold the project itself.
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    for path in ours:
        assert not any((Path(path) / name).exists() for name in PACKAGES), path
    work = root / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOC_", "PYTHON"))}
    done = Installed(venv, work, env)
    (done.site / "zz_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return done


def rule_names() -> list[str]:
    """The rule names in the source tree's default rule files, read as plain YAML."""
    names = []
    for path in sorted((ROOT / "ioc" / "alerts" / "defaults" / "rules").glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        rules = document.get("rules", [document])
        names += [rule["name"] for rule in rules]
    return names


def test_the_project_resolves_to_the_wheels_copy(installed: Installed) -> None:
    probe = ("import json, importlib;"
             "from ioc.core.settings import Settings; s = Settings();"
             f"m = {{n: importlib.import_module(n).__file__ for n in {PACKAGES!r}}};"
             "print(json.dumps({'modules': m, 'rules': str(s.alert_rules),"
             " 'recipients': str(s.alert_recipients)}))")
    done = installed.run("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for name, file in found["modules"].items():
        assert Path(file).is_relative_to(installed.site / name), (name, file)
    # A pip-installed worker evaluates the packaged rules and reads the packaged recipients.
    assert Path(found["rules"]) == installed.site / "ioc" / "alerts" / "defaults" / "rules"
    assert Path(found["recipients"]).is_file()
    assert Path(found["recipients"]).is_relative_to(installed.site)


def test_migrate_from_an_empty_folder(installed: Installed, postgres: Postgres) -> None:
    schema = f"t_wheel_{uuid.uuid4().hex[:10]}"
    done = installed.ioc("db", "migrate", IOC_DATABASE_URL=postgres.url,
                         IOC_DATABASE_SCHEMA=schema)
    assert done.returncode == 0, done.stderr
    files = (ROOT / "ioc" / "core" / "migrations").glob("*.sql")
    expected = sorted({int(m[1]) for f in files if (m := re.match(r"(\d{4})_", f.name))})
    with psycopg.connect(postgres.url) as conn:
        applied = conn.execute(sql.SQL("SELECT version FROM {} ORDER BY version").format(
            sql.Identifier(schema, "schema_migrations"))).fetchall()
    assert [v for (v,) in applied] == expected
    # kpis.sql ships too: the KPI functions exist.
    with psycopg.connect(postgres.url, options=f"-c search_path={schema}") as conn:
        assert conn.execute("SELECT received, on_time_rate FROM kpi_dossiers()").fetchall() \
            == [(0, None)]

    # The alert commands read the packaged rules, and the migrated schema for their states.
    names = rule_names()
    assert len(names) >= 5
    rules_dir = installed.site / "ioc" / "alerts" / "defaults" / "rules"
    valid = installed.ioc("alerts", "validate")
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip() == f"{len(names)} rules OK in {rules_dir}"
    listed = installed.ioc("alerts", "list", IOC_DATABASE_URL=postgres.url,
                           IOC_DATABASE_SCHEMA=schema)
    assert listed.returncode == 0, listed.stderr
    assert "warning" not in listed.stderr
    shown = [line.split(":", 1)[0] for line in listed.stdout.splitlines()
             if not line.startswith(" ")]
    assert shown == names


def test_dashboards_from_the_packaged_files(installed: Installed) -> None:
    check = installed.ioc("dashboards", "build", "--check")
    assert check.returncode == 0, check.stderr
    # It compares with the package's files: one changed there is reported, nothing is written.
    packaged = installed.site / "dashboards" / "json" / "overview.json"
    original = packaged.read_text(encoding="utf-8")
    packaged.write_text(original.replace('"title"', '"title" ', 1), encoding="utf-8")
    try:
        stale = installed.ioc("dashboards", "build", "--check")
    finally:
        packaged.write_text(original, encoding="utf-8")
    assert stale.returncode == 1
    assert f"stale: {packaged}" in stale.stderr
    assert list(installed.work.iterdir()) == []


def test_dashboards_push_uploads_the_packaged_dashboards(
        installed: Installed, grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    done = installed.ioc("dashboards", "push", "--url", url, "--token", TOKEN,
                         IOC_GRAFANA_READER_PASSWORD="reader-pw")
    assert done.returncode == 0, done.stderr
    committed = {json.loads(p.read_text(encoding="utf-8"))["uid"]: json.loads(
        p.read_text(encoding="utf-8")) for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert len(committed) >= 6
    uploaded: dict[str, Any] = {b["dashboard"]["uid"]: b["dashboard"]
                                for b in state.calls("POST", "/api/dashboards/db")}
    assert uploaded == committed
    assert list(state.datasources) == ["ioc-timescaledb"]


def test_schema_export_and_the_repository_only_openapi_file(installed: Installed) -> None:
    done = installed.ioc("schema", "export", "schemas")
    assert done.returncode == 0, done.stderr
    expected = {f"{kind.value}.schema.json" for kind in EVENT_TYPES}
    expected.add("connector_status.schema.json")
    written = {p.name for p in (installed.work / "schemas").iterdir()}
    assert written == expected
    for name in written:
        schema = json.loads((installed.work / "schemas" / name).read_text(encoding="utf-8"))
        assert schema["$schema"].endswith("/2020-12/schema") and schema["properties"], name
    # docs/openapi.json is a repository file: outside a checkout, --check says so.
    check = installed.ioc("schema", "openapi", "--check")
    assert check.returncode == 1
    assert "docs/openapi.json: no such file" in check.stderr


def test_connector_scaffold_from_the_packaged_templates(installed: Installed,
                                                        tmp_path: Path) -> None:
    done = installed.ioc("connectors", "new", "phananh", "--kind", "field_report",
                         "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    connector = (tmp_path / "connectors" / "phananh.py").read_text(encoding="utf-8")
    assert "class PhananhConnector" in connector
    assert (tmp_path / "tests" / "connectors" / "test_connector_phananh.py").is_file()
