"""The real servers the tests talk to: one broker and one PostgreSQL per test session.

The broker is Apache Kafka (its jars installed on first use), or the emulator with
IOC_TEST_BROKER=emulator; a few tests run on the emulator anyway to keep its path alive.
Each test gets its own topics, consumer group and schema (named with uuid4), so tests never
see each other's data. A server that cannot start fails the run; nothing is skipped.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from ioc.core.db import connect
from ioc.core.settings import Settings, default_cache_dir
from ioc.embedded import broker as brokers
from ioc.embedded.broker import Broker, BrokerKind
from ioc.embedded.servers import Postgres, die_with_parent, free_port, terminate


def broker_kind_under_test() -> BrokerKind:
    kind = os.environ.get("IOC_TEST_BROKER", "apache-kafka")
    assert kind in brokers.KINDS, f"IOC_TEST_BROKER={kind}: one of {', '.join(brokers.KINDS)}"
    return kind  # type: ignore[return-value]


def make_broker(root: Path, kind: BrokerKind | None = None) -> Broker:
    """A broker on a free port with its data under `root` (not started): `start()`, `stop()`,
    `kill()`, `restart()`; a start after a stop or a kill reuses the data."""
    progress = lambda line: print(line, file=sys.stderr)  # noqa: E731
    return brokers.make(kind or broker_kind_under_test(), free_port(), root, default_cache_dir(),
                        progress=progress)


def start_broker(root: Path, kind: BrokerKind | None = None) -> Broker:
    broker = make_broker(root, kind)
    broker.start()
    return broker


def start_postgres(root: Path) -> Postgres:
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    postgres.start()
    return postgres


def isolated_settings(broker: Broker, postgres: Postgres, **overrides: object) -> Settings:
    """Settings for one test: fresh topic prefix, consumer group and schema."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "kafka_bootstrap": f"127.0.0.1:{broker.port}",
        "database_url": postgres.url,
        "database_schema": f"t_{tag}",
        "topic_prefix": f"t{tag}.",
        "app_id": f"ioc-test-{tag}",
        "worker_instance_id": f"worker-{tag}",
        "partitions": 2,
        "batch_seconds": 0.2,
        "heartbeat_seconds": 1,
        **broker.client_settings(),
        "api_key_pepper": f"pepper-{tag}",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class WorkerProcess:
    """`ioc worker` in a child process: real signals, real crashes."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "WorkerProcess":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ioc", "worker"],
                                         env=self.settings.as_env(), stdout=log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        return self

    def stop(self) -> None:
        terminate(self.proc, timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def publish(settings: Settings, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Send (topic name, key, value) messages with an idempotent producer; return the count."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    count = 0
    try:
        for topic, key, value in messages:
            await producer.send(settings.topic(topic), value, key=key)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 f"{on_timeout()[-5000:]}")
        time.sleep(0.25)


def query(settings: Settings, text: str, params: object = None) -> list[tuple]:
    with connect(settings) as conn:
        return conn.execute(text, params).fetchall()  # type: ignore[arg-type]


class ServedApps:
    """ASGI apps served by uvicorn on free ports, in threads: real HTTP, lifespan included."""

    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def __call__(self, app: object) -> httpx.Client:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                               access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.02)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.running.append((server, thread, client))
        return client

    def stop(self) -> None:
        for server, thread, client in self.running:
            client.close()
            server.should_exit = True
            thread.join(15)
            assert not thread.is_alive(), "uvicorn did not shut down"


class PacedPublisher(threading.Thread):
    """Publishes (topic, key, value) messages at `rate` a second in a thread, as a steady
    source would, riding out a broker outage: a chunk that fails is sent again (the pipeline
    deduplicates by event id, so a resend is harmless)."""

    def __init__(self, settings: Settings, messages: list[tuple[str, bytes, bytes]],
                 rate: float, chunk: int = 20) -> None:
        super().__init__(daemon=True)
        self.settings, self.messages, self.rate, self.chunk = settings, messages, rate, chunk
        self.sent = 0
        self.resends = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    async def _run(self) -> None:
        started = time.monotonic()
        producer: AIOKafkaProducer | None = None
        while self.sent < len(self.messages):
            delay = started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            part = self.messages[self.sent:self.sent + self.chunk]
            try:
                if producer is None:
                    producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                                enable_idempotence=True, linger_ms=5,
                                                request_timeout_ms=5000)
                    await producer.start()
                sent = [await producer.send(self.settings.topic(t), v, key=k)
                        for t, k, v in part]
                await asyncio.gather(*sent)
            except KafkaError:
                self.resends += 1
                if producer is not None:
                    await producer.stop()
                producer = None
                await asyncio.sleep(0.5)
                continue
            self.sent += len(part)
        if producer is not None:
            await producer.stop()

    def finish(self, timeout: float = 300) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"publishing took over {timeout:.0f} s"
        if self.error is not None:
            raise self.error


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a keyed message lands on (the Java client's and aiokafka's murmur2)."""
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


async def _describe_group(settings: Settings) -> dict[str, set[tuple[str, int]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=5000)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    (group,) = response.groups
    members = group[5]  # error, group id, state, protocol type, protocol, members
    assigned: dict[str, set[tuple[str, int]]] = {}
    for member_id, _client, _host, _metadata, assignment in members:
        parts = ConsumerProtocolMemberAssignment.decode(assignment).assignment if assignment \
            else []
        assigned[member_id] = {(topic, p) for topic, partitions in parts for p in partitions}
    return assigned


def group_members(settings: Settings) -> dict[str, set[tuple[str, int]]]:
    """The worker group as the broker describes it: member id -> assigned (topic, partition).
    A static member's id starts with its group.instance.id. Empty while it rebalances or
    while the broker is away."""
    try:
        return asyncio.run(_describe_group(settings))
    except KafkaError:
        return {}


async def _group_lag(settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
        ends = await consumer.end_offsets(list(committed))
    finally:
        await consumer.stop()
        await admin.close()
    return {(tp.topic, tp.partition): (meta.offset, ends[tp]) for tp, meta in committed.items()}


def group_lag(settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (the group's committed offset, the end offset), for diagnostics."""
    return asyncio.run(_group_lag(settings))


class TcpProxy:
    """A TCP proxy on a free loopback port to `target_port`, for a peer that fails: `freeze()`
    stops moving bytes (a frozen server: connections open, no answer), `close()` refuses."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.closed = False
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
                if self.closed:
                    break
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()
        self._close_sockets()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set() and not self.closed:
                    time.sleep(0.05)
                if self.closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def _close_sockets(self) -> None:
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self.lock:
            self.closed = True
        self.listener.close()
        self._close_sockets()
