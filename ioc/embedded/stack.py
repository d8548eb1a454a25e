"""`ioc up`: the whole embedded stack on loopback, state under one directory.

Broker and PostgreSQL first, then migrations and topics, then the worker and the API as
child processes (the same commands docker-compose runs). A child that dies is restarted;
Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops everything in reverse order, and
should `ioc up` itself be killed, the kernel stops its children (`die_with_parent`).
"""

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from ioc.core.settings import Settings
from ioc.embedded import broker as brokers
from ioc.embedded.servers import EmbeddedError, Postgres, die_with_parent, port_in_use, terminate

log = structlog.get_logger()


class StackError(RuntimeError):
    pass


def lock_state_dir(state_dir: Path) -> int:
    """Hold an exclusive lock for as long as the stack runs; the OS drops it if we crash."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "ioc.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text().strip() or "another process"
        os.close(fd)
        raise StackError(
            f"{state_dir} is in use by a running `ioc up` (pid {holder}); stop it first or "
            "use another directory (IOC_STATE_DIR)"
        ) from None
    previous = os.pread(fd, 32, 0).decode().strip()
    if previous:
        log.info("stale lock taken over", previous_pid=previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class Child:
    """A child process of the stack (`ioc worker`, `ioc api`), restarted if it dies."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env, self.log_path = name, args, env, log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ioc", *self.args], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.restarts += 1
            log.warning("child exited, restarting", child=self.name, code=self.proc.returncode,
                        restarts=self.restarts, log=str(self.log_path))
            time.sleep(min(2 ** self.restarts, 30) / 10)
            self.start()

    def stop(self) -> None:
        terminate(self.proc)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGHUP:  # the terminal is gone: what we still print goes nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(devnull, fd)
        os.close(devnull)
    raise KeyboardInterrupt  # SIGTERM and SIGHUP stop as cleanly as Ctrl-C


@dataclass
class RunningStack:
    settings: Settings  # pointing at the embedded servers
    children: list[Child]

    def supervise(self) -> None:
        for child in self.children:
            child.check()


@contextmanager
def embedded_stack(settings: Settings) -> Iterator[RunningStack]:
    """Everything up on entry; everything stopped, in reverse order, on exit."""
    from ioc.core.db import migrate
    from ioc.core.topics import ensure_topics

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    state_dir = settings.state_dir.resolve()
    with ExitStack() as stack:
        fd = lock_state_dir(state_dir)
        stack.callback(os.close, fd)
        try:
            choice = brokers.choose(settings.broker, settings.cache_dir)
        except brokers.InstallError as exc:
            raise StackError(str(exc)) from None
        log.info("broker", broker=choice.kind, why=choice.reason,
                 choose="--broker apache-kafka|emulator or IOC_BROKER")
        if port_in_use(settings.api_port, settings.api_host):
            raise StackError(f"port {settings.api_port} for the API is already in use: stop what"
                             " runs there or choose another port (IOC_API_PORT)")
        postgres = Postgres(port=settings.embedded_postgres_port, data_dir=state_dir / "postgres")
        try:
            broker = brokers.make(choice.kind, settings.embedded_kafka_port, state_dir,
                                  settings.cache_dir, progress=lambda line: log.info(line))
        except brokers.InstallError as exc:
            raise StackError(str(exc)) from None
        for server in (postgres, broker):
            try:
                server.start()
            except EmbeddedError as exc:
                raise StackError(str(exc)) from None
            stack.callback(server.stop)
            log.info("started", server=server.name, port=server.port, data=str(server.data_dir))

        client = broker.client_settings()
        settings = settings.model_copy(update={
            "kafka_bootstrap": broker.bootstrap, "database_url": postgres.url, **client,
        })
        migrate(settings)
        asyncio.run(ensure_topics(settings))

        env = {**os.environ, "IOC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
               "IOC_DATABASE_URL": settings.database_url,
               **{f"IOC_{name.upper()}": str(value) for name, value in client.items()}}
        if settings.agency_directory:  # `ioc demo`: the simulator's directory
            env["IOC_AGENCY_DIRECTORY"] = str(settings.agency_directory.resolve())
        children = [Child("worker", ["worker"], env, state_dir),
                    Child("api", ["api"], env, state_dir)]
        for child in children:
            child.start()
            stack.callback(child.stop)
        log.info("ioc is up", api=f"http://{settings.api_host}:{settings.api_port}",
                 kafka=settings.kafka_bootstrap, database=settings.database_url,
                 logs=str(state_dir))
        stack.callback(log.info, "stopping")
        yield RunningStack(settings, children)
    log.info("stopped")


def run_stack(settings: Settings) -> None:
    """`ioc up`: run until Ctrl-C or SIGTERM."""
    with embedded_stack(settings) as running:
        try:
            while True:
                running.supervise()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
