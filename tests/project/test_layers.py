"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and they can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("ioc", "connectors", "streams", "dashboards", "tests")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts on the packages found in `where`."""
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"],
                          cwd=where, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"})


def copy_of_the_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_foundation_importing_an_app_breaks_the_layers(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    units = tree / "ioc" / "core" / "units.py"
    units.write_text(units.read_text() + "\nimport ioc.api.app  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "ioc.core.units -> ioc.api.app" in done.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    (tree / "streams" / "a_one.py").write_text("import streams.a_two  # noqa\n")
    (tree / "streams" / "a_two.py").write_text("import streams.a_one  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "No cycles are allowed in streams" in done.stdout


def test_production_code_importing_the_simulator_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    (tree / "streams" / "invented.py").write_text("import connectors.province  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "streams.invented -> connectors.province" in done.stdout


def test_a_test_module_importing_another_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    alerts = tree / "tests" / "alerts" / "test_alerts.py"
    alerts.write_text(alerts.read_text() + "\nimport tests.dashboards.test_dashboards  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "tests.alerts.test_alerts -> tests.dashboards.test_dashboards" in done.stdout
