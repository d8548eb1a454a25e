"""deploy/healthcheck.py's watchdog, run as Docker runs the healthcheck: one process per check.

The container's PID 1 is played by a process of the test's own (`--pid`), in the role
docker-init has in compose: it passes SIGTERM on to its child, `ioc`, or, wedged, ignores it.
The check itself is the simulator's (a broker port that accepts a connection or not), the
cheapest one to make pass or fail.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ioc.embedded.servers import free_port
from tests.support import ROOT

SCRIPT = ROOT / "deploy" / "healthcheck.py"

# A stand-in for docker-init and `ioc` below it. The child records SIGTERM and exits; wedged,
# both ignore it.
INIT = """
import signal, subprocess, sys
wedged = sys.argv[1] == "wedged"
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
wedged = sys.argv[1] == "wedged"
def stop(*_):
    open(sys.argv[2], "w").write("terminated")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if wedged else stop)
open(sys.argv[2] + ".ready", "w").close()
while True:
    time.sleep(0.1)
''', sys.argv[1], sys.argv[2]])
signal.signal(signal.SIGTERM, signal.SIG_IGN if wedged else lambda *_: child.terminate())
status = child.wait()
sys.exit(128 - status if status < 0 else status)  # as docker-init reports a signal
"""


def start_init(tmp_path: Path, wedged: bool) -> subprocess.Popen[bytes]:
    marker = tmp_path / "child"
    proc = subprocess.Popen([sys.executable, "-c", INIT, "wedged" if wedged else "ok",
                             str(marker)], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "child.ready").exists():
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    return proc


@pytest.fixture
def broker_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def check(pid: int, port: int, state: Path, *, exit_after: int = 3,
          start_period: float = 0) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["IOC_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, str(SCRIPT), "simulator", "--exit-after", str(exit_after),
         "--start-period", str(start_period), "--pid", str(pid), "--state", str(state)],
        env=env, capture_output=True, timeout=60, check=False).returncode


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The stand-in and its child, whatever state they are in."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def exited(proc: subprocess.Popen[bytes], timeout: float = 10) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_stops_the_main_process_after_that_many_failures_in_a_row(
        tmp_path: Path, broker_port: int) -> None:
    init = start_init(tmp_path, wedged=False)
    state, down = tmp_path / "state", free_port()
    try:
        assert check(init.pid, down, state) == 1
        assert check(init.pid, down, state) == 1
        assert check(init.pid, broker_port, state) == 0  # a success starts the count again
        assert check(init.pid, down, state) == 1
        assert check(init.pid, down, state) == 1
        assert init.poll() is None and not (tmp_path / "child").exists()
        assert check(init.pid, down, state) == 1  # the third in a row
        assert exited(init) == 0  # SIGTERM passed on: `ioc` stopped cleanly
        assert (tmp_path / "child").read_text() == "terminated"
    finally:
        stop(init)


def test_a_wedged_process_is_killed_at_the_next_failure(tmp_path: Path) -> None:
    init = start_init(tmp_path, wedged=True)
    state, down = tmp_path / "state", free_port()
    try:
        for _ in range(3):
            assert check(init.pid, down, state) == 1
        assert exited(init, timeout=2) is None  # SIGTERM ignored
        assert check(init.pid, down, state) == 1
        # Its child (`ioc`) got SIGKILL; the stand-in init then exits with its status.
        assert exited(init) == 128 + signal.SIGKILL
    finally:
        stop(init)


def test_failures_during_the_start_period_do_not_count(tmp_path: Path) -> None:
    init = start_init(tmp_path, wedged=False)
    state, down = tmp_path / "state", free_port()
    try:
        for _ in range(4):
            assert check(init.pid, down, state, start_period=3600) == 1
        assert init.poll() is None
    finally:
        stop(init)


def test_a_count_left_by_an_earlier_start_is_forgotten(tmp_path: Path) -> None:
    """A restarted container keeps its /tmp: the count belongs to one run of PID 1."""
    first = start_init(tmp_path, wedged=False)
    state, down = tmp_path / "state", free_port()
    try:
        for _ in range(2):
            check(first.pid, down, state)
    finally:
        stop(first)
    (tmp_path / "child.ready").unlink()
    second = start_init(tmp_path, wedged=False)
    try:
        assert check(second.pid, down, state) == 1
        assert check(second.pid, down, state) == 1
        assert second.poll() is None  # two failures of this run, not four
    finally:
        stop(second)


def test_without_exit_after_it_only_reports(tmp_path: Path) -> None:
    init = start_init(tmp_path, wedged=False)
    try:
        for _ in range(4):
            assert check(init.pid, free_port(), tmp_path / "state", exit_after=0) == 1
        assert init.poll() is None and not (tmp_path / "state").exists()
    finally:
        stop(init)
