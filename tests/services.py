"""The real servers the tests talk to: one broker and one PostgreSQL per test session.

Each test gets its own topics, consumer group and schema (named with uuid4), so tests never
see each other's data. A server that cannot start fails the run; nothing is skipped.
"""

import socket
import uuid
from pathlib import Path

from ioc.embedded import Broker, Postgres
from ioc.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(root: Path) -> Broker:
    broker = Broker(port=free_port(), data_dir=root / "kafka")
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
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
