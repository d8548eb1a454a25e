"""Broker-side look-ups for the API: is the broker there, and how far behind is the worker.

Every call opens short-lived clients with bounded timeouts, so that a scrape or a readiness
probe never hangs on a broker that is down, and never joins the worker's consumer group.

Only topics that the broker lists are queried by name: a metadata request that names a missing
topic makes the broker (noida-db, like Kafka with auto-create on) create it with one partition.
"""

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from ioc.core.settings import Settings

log = structlog.get_logger()

SOURCE_TOPICS = ("dossiers", "documents", "field_reports", "evaluations")
# What the worker's group consumes: the sources and the dead letters it stores
# (streams/store_dead_letters.py). Not `connector_status`: no agent reads it.
CONSUMED_TOPICS = (*SOURCE_TOPICS, "dead_letters")
CLIENT_ID = "ioc-api"

T = TypeVar("T")


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or did not answer in time; the message says which."""


def _bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        hosts.append((host.strip("[]") or "localhost", int(port or 9092)))
    return hosts


async def _tcp_reason(host: str, port: int, timeout: float) -> str | None:
    """Why a broker address cannot be reached, in words a person on call understands."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    except ConnectionRefusedError:
        return f"connection refused at {host}:{port}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    writer.close()
    return None


async def diagnose(bootstrap: str, timeout: float = 1.0) -> str:
    """Why the bootstrap addresses cannot be reached ("" when they all accept connections)."""
    reasons = await asyncio.gather(
        *(_tcp_reason(host, port, timeout) for host, port in _bootstrap_hosts(bootstrap))
    )
    return "; ".join(r for r in reasons if r)


async def _bounded(settings: Settings, timeout: float, work: Awaitable[T]) -> T:
    """Run broker work within `timeout`, turning every failure into BrokerUnavailable."""
    try:
        async with asyncio.timeout(timeout):
            return await work
    except BrokerUnavailable:
        raise
    except TimeoutError as exc:
        raise BrokerUnavailable(
            f"broker at {settings.kafka_bootstrap} did not answer within {timeout:g} s"
        ) from exc
    except Exception as exc:
        reason = await diagnose(settings.kafka_bootstrap)
        if reason:
            raise BrokerUnavailable(reason) from exc
        raise BrokerUnavailable(f"broker at {settings.kafka_bootstrap} failed: {exc}") from exc


def _admin(settings: Settings, timeout: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=CLIENT_ID,
        request_timeout_ms=max(int(timeout * 1000), 1000),
    )


async def broker_metadata(settings: Settings, timeout: float = 2.0) -> dict[str, Any]:
    """Cluster metadata (brokers, all topics): the broker's readiness test.

    Returns {"brokers": [...], "topics": {name: partition count}}.
    """

    async def work() -> dict[str, Any]:
        admin = _admin(settings, timeout)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            topics = await admin.describe_topics()  # no names: all topics, nothing created
        finally:
            await admin.close()
        return {
            "brokers": cluster.get("brokers", []),
            "topics": {t["topic"]: len(t["partitions"]) for t in topics if not t["error_code"]},
        }

    return await _bounded(settings, timeout, work())


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and exc.retriable


async def _committed(admin: AIOKafkaAdminClient, group: str,
                     partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
    """The group's committed offsets. Apache Kafka answers "coordinator not available" while
    it creates its offsets topic (a fresh cluster) or moves a coordinator: ask again, within
    the caller's deadline."""
    retry = AsyncRetrying(retry=retry_if_exception(_retriable), reraise=True,
                          wait=wait_exponential(multiplier=0.05, max=0.5))
    return await retry(admin.list_consumer_group_offsets, group, partitions=partitions)


async def consumer_lag(settings: Settings, timeout: float = 3.0) -> dict[tuple[str, int], int]:
    """Messages not yet committed by the worker's group, per (topic, partition).

    Lag is end offset minus committed offset; a partition the group never committed counts
    from its beginning offset. Every topic the worker consumes (CONSUMED_TOPICS); those that
    do not exist yet are left out.
    Raises BrokerUnavailable when the broker cannot be asked within `timeout` seconds.
    """

    async def work() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=CLIENT_ID,
            group_id=None,  # reading offsets only: never join (and rebalance) the worker's group
            enable_auto_commit=False,
            request_timeout_ms=max(int(timeout * 1000), 1000),
        )
        admin = _admin(settings, timeout)
        try:
            await consumer.start()
            await admin.start()
            existing = {t["topic"]: t["partitions"] for t in await admin.describe_topics()}
            partitions = [
                TopicPartition(topic, p["partition"])
                for topic in (settings.topic(name) for name in CONSUMED_TOPICS)
                for p in existing.get(topic, [])
                if not p["error_code"]
            ]
            if not partitions:
                return {}
            committed, beginning, end = await asyncio.gather(
                _committed(admin, settings.app_id, partitions),
                consumer.beginning_offsets(partitions),
                consumer.end_offsets(partitions),
            )
        finally:
            await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)
        lag = {}
        for tp in sorted(partitions):
            meta = committed.get(tp)
            start = meta.offset if meta is not None and meta.offset >= 0 else beginning[tp]
            lag[(tp.topic, tp.partition)] = max(end[tp] - start, 0)
        return lag

    return await _bounded(settings, timeout, work())
