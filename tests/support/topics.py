"""What a test's topics hold, read with a plain consumer (never through the code under test)."""

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ioc.core.settings import Settings


def read_topic(settings: Settings, name: str) -> list[ConsumerRecord]:
    """Every message on the topic, up to its end offsets."""
    async def read() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            topic = settings.topic(name)
            parts = [TopicPartition(topic, p)
                     for p in sorted(consumer.partitions_for_topic(topic) or
                                     await _partitions(consumer, topic))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            found: list[ConsumerRecord] = []
            async with asyncio.timeout(30):
                while [p for p in parts if await consumer.position(p) < end[p]]:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        found += records
            return found
        finally:
            await consumer.stop()
    return asyncio.run(read())


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()



def end_offsets(settings: Settings, name: str) -> int:
    """Messages ever written to the topic (the sum of its partitions' end offsets)."""
    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            topic = settings.topic(name)
            parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
            return sum((await consumer.end_offsets(parts)).values())
        finally:
            await consumer.stop()
    return asyncio.run(read())

