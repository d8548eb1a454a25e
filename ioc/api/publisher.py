"""Publishing events from the API, waiting for the broker's acknowledgement.

One `EventPublisher` per API process (built by the app, handed to the routes that publish):
one producer, one connection to the broker, however many routes send.
"""

import asyncio

import structlog
from aiokafka import AIOKafkaProducer

from ioc.core.events import Event
from ioc.core.settings import Settings

log = structlog.get_logger()

PUBLISH_TIMEOUT = 15.0  # seconds for a request's events to be acknowledged, in all


class PublishFailed(Exception):
    """The broker did not acknowledge in time (down or slow): the route answers 503."""


class EventPublisher:
    """An idempotent producer started at the first event (the API starts without a broker)."""

    def __init__(self, settings: Settings, timeout: float = PUBLISH_TIMEOUT) -> None:
        self.settings, self.timeout = settings, timeout
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, *events: Event) -> None:
        """Send `events` in order, each acknowledged, within `timeout`; else PublishFailed."""
        try:
            async with asyncio.timeout(self.timeout):
                producer = self._producer or await self._started()
                for event in events:
                    await producer.send_and_wait(self.settings.topic(f"{event.kind}s"),
                                                 event.model_dump_json().encode(),
                                                 key=event.entity_id.encode())
        except Exception as exc:
            log.warning("publish failed", kind=events[0].kind if events else None,
                        error=type(exc).__name__)
            raise PublishFailed(type(exc).__name__) from exc

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                            enable_idempotence=True, request_timeout_ms=10_000)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
