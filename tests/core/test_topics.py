"""`ioc topics ensure` against the real broker."""

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from ioc.core.settings import TOPIC_NAMES, Settings
from ioc.core.topics import ensure_topics


async def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = [settings.topic(n) for n in TOPIC_NAMES]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


def test_creates_then_grows_then_leaves_alone(settings: Settings) -> None:
    names = [settings.topic(n) for n in TOPIC_NAMES]
    done = asyncio.run(ensure_topics(settings))
    assert done == dict.fromkeys(names, f"created with {settings.partitions} partitions")
    assert asyncio.run(partition_counts(settings)) == dict.fromkeys(names, settings.partitions)

    more = settings.model_copy(update={"partitions": settings.partitions + 2})
    done = asyncio.run(ensure_topics(more))
    assert set(done.values()) == {f"grown from {settings.partitions} to {more.partitions}"
                                  " partitions"}
    assert asyncio.run(partition_counts(settings)) == dict.fromkeys(names, more.partitions)
    assert set(asyncio.run(ensure_topics(more)).values()) == {"exists"}


def test_refuses_to_shrink(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    fewer = settings.model_copy(update={"partitions": 1})
    try:
        asyncio.run(ensure_topics(fewer))
    except RuntimeError as exc:
        assert "cannot shrink" in str(exc)
    else:
        raise AssertionError("shrinking partitions was not refused")
