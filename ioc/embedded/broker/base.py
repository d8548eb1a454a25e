"""What both embedded brokers share: ready means metadata answered, not just a port open."""

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from ioc.embedded.servers import EmbeddedError, Server


async def _metadata_answered(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000,
                            client_id="ioc-health")
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


def metadata_answered(bootstrap: str) -> bool:
    """One metadata request, in a thread of its own: callers may run an event loop."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(
        asyncio.run(_metadata_answered(bootstrap))), daemon=True)
    thread.start()
    thread.join(15)
    return bool(result and result[0])


@dataclass(kw_only=True)
class Broker(Server):
    """A Kafka-protocol broker on loopback; `kind` is what IOC_BROKER calls it."""

    kind: ClassVar[str]
    port_setting: str = "IOC_EMBEDDED_KAFKA_PORT"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_settings(self) -> dict[str, Any]:
        """Settings the clients of this broker need (none for Apache Kafka)."""
        return {}

    def wait_ready(self, deadline: float) -> None:
        while not metadata_answered(self.bootstrap):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                         else "opened its port but answers no metadata request")
                raise EmbeddedError(f"the {self.name} broker {state}; see {self.log}")
            time.sleep(0.2)
