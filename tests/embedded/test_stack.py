"""`ioc up` as a user runs it: a real process tree on loopback, stopped by a signal, and
leaving nothing behind when it is killed."""

import json
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import scenario
from tests.support.services import wait_until
from tests.support.stack import PORTS


def ioc(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class Up:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ioc", "up"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.env['IOC_API_PORT']}/readyz"
            return httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> None:
        wait_until(self.ready, 90, "ioc up to be ready", self.log.read_text)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def running(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Up]:
    up = Up(stack_env, tmp_path / "up.log")
    yield up
    if up.proc.poll() is None:
        up.stop()


def ports_open(env: dict[str, str]) -> list[str]:
    open_ = []
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(env[port]))) == 0:
                open_.append(port)
    return open_


def dossiers_received(env: dict[str, str]) -> int:
    result = ioc(env, "kpis", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["dossiers"]["received"]


def test_up_serves_kpis_stops_cleanly_and_keeps_data(running: Up,
                                                     stack_env: dict[str, str]) -> None:
    running.wait_ready()
    sc = scenario.build(seed=11, dossiers=40, documents=10, reports=10, malformed=False)
    script = ("import asyncio, pickle, sys; from ioc.core.settings import Settings;"
              " from tests.support.services import publish;"
              " asyncio.run(publish(Settings(), pickle.load(sys.stdin.buffer)))")
    subprocess.run([sys.executable, "-c", script], env=stack_env, input=pickle.dumps(sc.messages),
                   check=True, timeout=60)
    wait_until(lambda: dossiers_received(stack_env) == len(sc.dossiers), 60,
               "the dossiers to show in `ioc kpis`", running.log.read_text)

    # A second `ioc up` on the same directory is refused with a clear message.
    second = ioc(stack_env, "up", timeout=30)
    assert second.returncode == 1
    assert "in use by a running `ioc up`" in second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr

    assert running.stop() == 0
    assert ports_open(stack_env) == []
    first = running.log.read_text().splitlines()[0]  # says which broker runs, and why
    assert f"broker={stack_env['IOC_BROKER']}" in first and "why=" in first, first

    again = Up(stack_env, running.log)  # same state directory: the data is still there
    try:
        again.wait_ready()
        assert dossiers_received(stack_env) == len(sc.dossiers)
    finally:
        assert again.stop(signal.SIGHUP) == 0  # the terminal closed: as clean as SIGTERM
    assert ports_open(stack_env) == []


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children, grandchildren...) with its command line."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                .replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_up_leaves_no_child_running(running: Up, stack_env: dict[str, str]) -> None:
    running.wait_ready()
    tree = descendants(running.proc.pid)
    commands = " | ".join(tree.values())
    for part in ("postgres", "ioc worker", "ioc api",
                 "kafka.Kafka" if stack_env["IOC_BROKER"] == "apache-kafka" else "noida"):
        assert part in commands, f"{part} not among the stack's processes: {commands}"

    running.proc.kill()  # SIGKILL: no handler, no cleanup in `ioc up` itself
    running.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in tree), 60, "every child to exit",
               lambda: "still running: " + ", ".join(
                   f"{pid} {cmd}" for pid, cmd in tree.items() if alive(pid)))
    wait_until(lambda: ports_open(stack_env) == [], 10, "the ports to close")


def test_port_in_use_is_a_clear_message(stack_env: dict[str, str]) -> None:
    # A lock file left by a crashed `ioc up` (its pid long gone) does not stand in the way.
    state = Path(stack_env["IOC_STATE_DIR"])
    state.mkdir(parents=True)
    (state / "ioc.lock").write_text("999999")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["IOC_EMBEDDED_POSTGRES_PORT"])))
        blocker.listen()
        result = ioc(stack_env, "up", timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"port {stack_env['IOC_EMBEDDED_POSTGRES_PORT']} for postgres is already in use" \
        in output
    assert "Traceback" not in output
    assert "in use by a running" not in output
