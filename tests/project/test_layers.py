"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and they can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# (file, line added to it, what lint-imports then reports)
BREAKS = {
    "the foundation imports an app": (
        "ioc/core/units.py", "import ioc.api.app", "ioc.core.units -> ioc.api.app"),
    "two siblings import each other": (
        "streams/store.py", "import streams.storing", "No cycles are allowed in streams"),
    "production code imports the simulator": (
        "streams/store.py", "import connectors.province", "streams.store -> connectors.province"),
    "a test module imports another": (
        "tests/alerts/test_alerts.py", "import tests.dashboards.test_dashboards",
        "tests.alerts.test_alerts -> tests.dashboards.test_dashboards"),
}


@pytest.mark.parametrize("why", BREAKS)
def test_each_contract_fails_when_broken(tmp_path: Path, why: str) -> None:
    file, line, report = BREAKS[why]
    tree = copy_of_the_tree(tmp_path)
    planted = tree / file
    planted.write_text(planted.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert report in done.stdout
