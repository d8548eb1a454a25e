"""A real TimescaleDB for the tests: the PGlite WebAssembly build (TimescaleDB 2.23 on
PostgreSQL 17.5) served on the PostgreSQL wire protocol by tests/timescale/server.mjs.

Install it once with `npm ci --prefix tests/timescale` (Node 20). Known limits of that server:
ONE database session shared by all connections, which are served one at a time (a second
connection waits until the first closes; each starts with DISCARD ALL and its startup `options`
applied); `COPY ... FROM STDIN` crashes it; background jobs never run (`CALL run_job(id)`);
psycopg needs `prepare_threshold=None` (`ioc.core.db.connect_kwargs` sets it).
"""

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ioc.core.settings import Settings
from ioc.embedded.servers import terminate
from tests.support import ROOT
from tests.support.services import free_port

PACKAGE = ROOT / "tests" / "timescale"
READY = "ready on 127.0.0.1:"


class TimescaleError(RuntimeError):
    """The TimescaleDB test server could not start; the message says why and what to do."""


@dataclass(kw_only=True)
class TimescaleServer:
    """`node server.mjs PORT [DATA_DIR]` as a subprocess; data in memory without `data_dir`."""

    log: Path
    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def command(self) -> list[str]:
        if not (PACKAGE / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
            raise TimescaleError(
                f"{PACKAGE / 'node_modules'} is missing: run `npm ci --prefix tests/timescale`"
            )
        node = shutil.which("node")
        if node is None:
            raise TimescaleError("node (Node.js 20) is not on PATH: TimescaleDB tests need it")
        extra = [str(self.data_dir)] if self.data_dir else []
        return [node, str(PACKAGE / "server.mjs"), str(self.port), *extra]

    def start(self, timeout: float = 60) -> None:
        command = self.command()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while READY not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise TimescaleError(f"TimescaleDB server exited with {self.proc.returncode}; "
                                     f"see {self.log}:\n{self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimescaleError(f"TimescaleDB server not ready in {timeout:.0f}s; "
                                     f"see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        terminate(self.proc, timeout=10)


@pytest.fixture(scope="session")
def timescale(services_root: Path) -> Iterator[TimescaleServer]:
    """One in-memory TimescaleDB per test session; use a fresh schema per test."""
    server = TimescaleServer(log=services_root / "timescale.log")
    try:
        server.start()
    except TimescaleError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def fresh_settings(url: str, **overrides: object) -> Settings:
    """Settings on that database with a schema of the test's own (nothing else in them)."""
    return Settings(database_url=url, database_schema=f"t_{uuid.uuid4().hex[:10]}",
                    **overrides)  # type: ignore[arg-type]
