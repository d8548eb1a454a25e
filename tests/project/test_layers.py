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


def planted(tmp_path: Path, *imports: tuple[str, str]) -> str:
    """lint-imports' report on a copy of the tree with each (file, import) added; it must fail."""
    tree = copy_of_the_tree(tmp_path)
    for name, line in imports:
        path = tree / name
        path.write_text((path.read_text() if path.exists() else "") + f"\n{line}  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout


def test_the_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_foundation_importing_an_app_breaks_the_layers(tmp_path: Path) -> None:
    report = planted(tmp_path, ("ioc/core/units.py", "import ioc.api.app"))
    assert "ioc.core.units -> ioc.api.app" in report


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path: Path) -> None:
    report = planted(tmp_path, ("streams/a_one.py", "import streams.a_two"),
                     ("streams/a_two.py", "import streams.a_one"))
    assert "No cycles are allowed in streams" in report


def test_production_code_importing_the_simulator_breaks_the_contract(tmp_path: Path) -> None:
    report = planted(tmp_path, ("streams/invented.py", "import connectors.province"))
    assert "streams.invented -> connectors.province" in report


def test_a_test_module_importing_another_breaks_the_contract(tmp_path: Path) -> None:
    report = planted(tmp_path, ("tests/alerts/test_alerts.py",
                                "import tests.dashboards.test_dashboards"))
    assert "tests.alerts.test_alerts -> tests.dashboards.test_dashboards" in report
