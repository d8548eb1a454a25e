"""What the test modules share: servers, data, stand-ins and checks. A test module imports
from here, never from another test module (a contract in pyproject.toml)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # samples the tests read (see tests/data)
