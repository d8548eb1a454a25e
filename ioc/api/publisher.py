"""Publishing single events from the API, waiting for the broker's acknowledgement."""

import asyncio

from aiokafka import AIOKafkaProducer

from ioc.core.events import Event
from ioc.core.settings import Settings


class EventPublisher:
    """An idempotent producer started at the first event (the API starts without a broker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, event: Event) -> None:
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
        await self._producer.send_and_wait(self.settings.topic(f"{event.kind}s"),
                                           event.model_dump_json().encode(),
                                           key=event.entity_id.encode())

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
