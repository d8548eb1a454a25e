import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ioc.core.db import migrate
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres
from tests.support.services import (
    ServedApps,
    broker_kind_under_test,
    isolated_settings,
    start_broker,
    start_postgres,
)

# Fixtures that live beside their helpers in tests/support, offered to every test module.
pytest_plugins = [
    "tests.support.grafana",  # grafana: a stand-in Grafana
    "tests.support.portal",  # portal: a stand-in DVCQG portal
    "tests.support.smtp",  # smtp: a real SMTP server
    "tests.support.stack",  # stack_env: the environment of an `ioc up` child
    "tests.support.timescaledb",  # timescale: one TimescaleDB per session
]


@pytest.fixture(scope="session")
def services_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def broker(services_root: Path) -> Iterator[Broker]:
    server = start_broker(services_root)
    yield server
    server.stop()


def _broker_of_kind(kind: str, root: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's broker when it is of that kind, else one of that kind of its own."""
    if broker_kind_under_test() == kind:
        yield request.getfixturevalue("broker")
        return
    server = start_broker(root, kind)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator(services_root: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The emulator (noida-db), for the few tests that keep its path alive."""
    yield from _broker_of_kind("emulator", services_root, request)


@pytest.fixture(scope="session")
def apache_kafka(services_root: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Apache Kafka even when IOC_TEST_BROKER=emulator: the consumer-group tests need a broker
    that expires a crashed member (the emulator never does)."""
    yield from _broker_of_kind("apache-kafka", services_root, request)


@pytest.fixture(scope="session")
def postgres(services_root: Path) -> Iterator[Postgres]:
    server = start_postgres(services_root)
    yield server
    server.stop()


@pytest.fixture
def serve_app() -> Iterator[ServedApps]:
    """`serve_app(app)` -> an httpx client of the app on a real port; stopped after the test."""
    apps = ServedApps()
    yield apps
    apps.stop()


@pytest.fixture
def settings(broker: Broker, postgres: Postgres) -> Settings:
    return isolated_settings(broker, postgres)


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    """The test's schema, migrated."""
    migrate(settings)
    return settings


@pytest.fixture
def prepared(migrated: Settings) -> Settings:
    """The test's schema migrated and its topics created."""
    asyncio.run(ensure_topics(migrated))
    return migrated
