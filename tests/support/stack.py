"""The environment of an `ioc up` or `ioc demo` child: its own state folder and free ports,
nothing inherited from the caller's IOC_* settings, on the broker the suite runs on."""

import os
from pathlib import Path

import pytest

from tests.support.services import broker_kind_under_test, free_port

PORTS = ("IOC_API_PORT", "IOC_EMBEDDED_KAFKA_PORT", "IOC_EMBEDDED_POSTGRES_PORT")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """The child's environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(IOC_STATE_DIR=str(tmp_path / "state"), IOC_API_PORT=str(free_port()),
               IOC_EMBEDDED_KAFKA_PORT=str(free_port()),
               IOC_EMBEDDED_POSTGRES_PORT=str(free_port()), IOC_PARTITIONS="2",
               IOC_HEARTBEAT_SECONDS="1", IOC_BROKER=broker_kind_under_test())
    return env

