"""`ioc connectors new`: the generated connector registers, and its generated test passes as
written, in a child pytest against this session's broker and PostgreSQL."""

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import connectors
from connectors import registry
from connectors.base import Connector
from ioc.core.settings import Settings
from tests.support import ROOT

# Stands in for tests/conftest.py in the child pytest: the `settings` fixture gives the parent
# test's own broker, database and fresh names (passed as IOC_* variables), and the scaffold's
# connectors/ directory joins the package, as if the files had been written into the project.
FIXTURES = '''
from pathlib import Path

import pytest

import connectors
from ioc.core.settings import Settings

connectors.__path__.append(str(Path(__file__).parent / "connectors"))


@pytest.fixture
def settings() -> Settings:
    return Settings()
'''


def new(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", "connectors", "new", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_scaffolded_connector_runs_and_its_test_passes(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = new("hue_reports", "--kind", "field_report", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    module, test = tmp_path / "connectors" / "hue_reports.py", \
        tmp_path / "tests" / "connectors" / "test_connector_hue_reports.py"
    assert module.is_file() and test.is_file()
    assert '"hue_reports": "connectors.hue_reports:HueReportsConnector"' in made.stdout

    # It refuses to overwrite, a registered name and a name that is not an identifier.
    before = module.read_text()
    for name, why in (("hue_reports", "exists: not overwritten"),
                      ("dvcqg", "already registered"), ("hue-reports", "Python identifier")):
        refused = new(name, "--dir", str(tmp_path))
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    assert module.read_text() == before

    # Registered by entry point (a distribution on the path), it loads as a Connector.
    dist = tmp_path / "hue_reports-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hue-reports\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        '[ioc.connectors]\nhue_reports = connectors.hue_reports:HueReportsConnector\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(connectors, "__path__", [*connectors.__path__,
                                                 str(tmp_path / "connectors")])
    monkeypatch.delitem(sys.modules, "connectors.hue_reports", raising=False)
    importlib.invalidate_caches()
    loaded = registry.load("hue_reports")
    assert issubclass(loaded, Connector) and loaded.__name__ == "HueReportsConnector"
    assert (loaded.name, str(loaded.kind)) == ("hue_reports", "field_report")
    sys.modules.pop("connectors.hue_reports", None)

    # Its test, unchanged, with the project's pytest settings (warnings are errors).
    (tmp_path / "scaffold_fixtures.py").write_text(FIXTURES)
    env = {**settings.as_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path),
                                                                    str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "scaffold_fixtures",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout

    # And it is as clean as the rest of the code.
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
         str(ROOT / "pyproject.toml"), "--config",
         "lint.isort.known-first-party = ['connectors', 'ioc']", str(module), str(test)],
        capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize("kind", ["dossier", "document"])
def test_every_kind_scaffolds_a_connector_whose_tests_pass(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The other kinds, in this process: the generated tests called as pytest would."""
    name = f"sample_{kind}"
    made = new(name, "--kind", kind, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    monkeypatch.setattr(connectors, "__path__", [*connectors.__path__,
                                                 str(tmp_path / "connectors")])
    path = tmp_path / "tests" / "connectors" / f"test_connector_{name}.py"
    spec = importlib.util.spec_from_file_location(f"test_connector_{name}", path)
    assert spec is not None and spec.loader is not None
    generated = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(generated)
        assert generated.RECORDS and {str(generated.connector(settings).kind)} == {kind}
        generated.test_every_sample_maps_without_personal_data(settings)
        generated.test_a_record_that_cannot_be_mapped_says_which_field(settings)
        source = generated.Source([dict(r) for r in generated.RECORDS])
        try:
            generated.test_publishes_each_record_once(settings, source)
        finally:
            source.close()
    finally:
        sys.modules.pop(f"connectors.{name}", None)
