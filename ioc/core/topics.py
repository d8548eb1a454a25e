"""Creating the topics: faust only creates its own, and needs ours with matching partitions."""

import asyncio
import time

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaConnectionError

from ioc.core.settings import TOPIC_NAMES, Settings

log = structlog.get_logger()


class TopicError(RuntimeError):
    pass


async def ensure_topics(settings: Settings, attempts: int = 30) -> dict[str, str]:
    """Create missing topics, grow ones with too few partitions; return what was done."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=10_000)
    for attempt in range(attempts):  # the broker may still be starting
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise TopicError(f"no Kafka broker at {settings.kafka_bootstrap}") from None
            await asyncio.sleep(1)
    try:
        wanted = {settings.topic(name): settings.partitions for name in TOPIC_NAMES}
        # describe only topics that exist: asking for a missing one may auto-create it
        present = [name for name in await admin.list_topics() if name in wanted]
        described = await admin.describe_topics(present) if present else []
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        done: dict[str, str] = {}
        missing = [name for name in wanted if name not in partitions]
        if missing:
            retention = str(settings.topic_retention_hours * 3_600_000)
            await admin.create_topics([
                NewTopic(name, settings.partitions, 1, topic_configs={"retention.ms": retention})
                for name in missing
            ])
            done.update(dict.fromkeys(missing, f"created with {settings.partitions} partitions"))
        for name, count in partitions.items():
            if count > settings.partitions:
                raise TopicError(
                    f"topic {name} has {count} partitions, more than IOC_PARTITIONS="
                    f"{settings.partitions}: partitions cannot shrink, raise the setting"
                )
            if count < settings.partitions:
                await admin.create_partitions({name: NewPartitions(settings.partitions)})
                done[name] = f"grown from {count} to {settings.partitions} partitions"
            else:
                done[name] = "exists"
        for name, what in done.items():
            log.info("topic", topic=name, state=what)
        await _until_described(admin, wanted)
        return done
    finally:
        await admin.close()


async def _until_described(admin: AIOKafkaAdminClient, wanted: dict[str, int]) -> None:
    """Wait until the broker's metadata shows every topic with its partitions: creating and
    growing are asynchronous, and a worker started right after must see the new count."""
    deadline = time.monotonic() + 30
    while True:
        described = await admin.describe_topics(list(wanted))
        lagging = sorted(t["topic"] for t in described
                         if len(t["partitions"]) < wanted.get(t["topic"], 0))
        if not lagging:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"after 30 s the broker still shows too few partitions: {lagging}")
        await asyncio.sleep(0.2)
