"""The API's /metrics: consumer lag, worker heartbeats and counters, connectors' health and
the API's own requests, read at scrape time.

Nothing is cached between scrapes: each one reads the broker and the tables the worker and the
connectors keep up to date, so one scrape shows whether events flow from Kafka to PostgreSQL.
"""

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ioc.api.asgi import ASGIApp, Message, Receive, Scope, Send
from ioc.api.connector_metrics import ConnectorRow, connector_families, connector_rows
from ioc.api.database import Database, DatabaseDown, describe_db_error
from ioc.api.health import heartbeat_limit
from ioc.core.lag import BrokerUnavailable, consumer_lag
from ioc.core.settings import Settings

log = structlog.get_logger()

LAG_TIMEOUT = 3.0  # metrics: offsets of every source partition


@dataclass
class WorkerRow:
    instance: str
    started_at: float  # unix time
    age: float  # seconds since the last heartbeat (database clock)
    counters: dict[str, Any]


async def _worker_rows(conn: psycopg.AsyncConnection[Any]) -> list[WorkerRow]:
    cur = await conn.execute(
        "SELECT instance_id, extract(epoch FROM started_at)::float8,"
        " extract(epoch FROM now() - heartbeat_at)::float8, counters"
        " FROM worker_status ORDER BY instance_id"
    )
    rows = []
    for instance, started, age, counters in await cur.fetchall():
        if isinstance(counters, str):  # jsonb arrives decoded; text only if someone cast it
            counters = json.loads(counters)
        rows.append(WorkerRow(instance, started, age, counters if isinstance(counters, dict)
                              else {}))
    return rows


@dataclass
class Snapshot:
    """What one scrape read; the collector turns it into metric families."""

    lag: dict[tuple[str, int], int] | None
    workers: list[WorkerRow] | None
    heartbeat_limit: float
    connectors: list[ConnectorRow] | None = None  # connector_status (ioc/api/connector_metrics.py)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _per_key(value: object) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, n in sorted(value.items()):
            number = _number(n)
            if number is not None:
                yield str(key), number


class MonitorCollector(Collector):
    """Exposes the snapshot read at scrape time (consumer lag, worker heartbeats, counters)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # names vary with the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        errors = GaugeMetricFamily(
            "ioc_scrape_error", "1 when this scrape could not read a component",
            labels=["component"])
        errors.add_metric(["broker"], float(snap.lag is None))
        errors.add_metric(["database"], float(snap.workers is None))
        yield errors
        if snap.lag is not None:
            lag = GaugeMetricFamily(
                "ioc_consumer_lag", "Messages the worker's group has not committed yet",
                labels=["topic", "partition"])
            for (topic, partition), value in sorted(snap.lag.items()):
                lag.add_metric([topic, str(partition)], float(value))
            yield lag
        if snap.workers is not None:
            yield from self._workers(snap.workers, snap.heartbeat_limit)
        if snap.connectors is not None:
            yield from connector_families(snap.connectors)

    @staticmethod
    def _workers(rows: list[WorkerRow], limit: float) -> Iterator[Metric]:
        age = GaugeMetricFamily("ioc_worker_heartbeat_age_seconds",
                                "Seconds since the worker's last heartbeat", labels=["instance"])
        up = GaugeMetricFamily("ioc_worker_up", f"1 if the worker's heartbeat is under {limit:g} s"
                               " old", labels=["instance"])
        started = GaugeMetricFamily("ioc_worker_start_time_seconds",
                                    "When the worker started (its counters restart from 0)",
                                    labels=["instance"])
        per_topic = {
            "events_in": CounterMetricFamily(
                "ioc_events_in", "Events the worker read", labels=["instance", "topic"]),
            "events_stored": CounterMetricFamily(
                "ioc_events_stored", "Events the worker stored", labels=["instance", "topic"]),
            "duplicates": CounterMetricFamily(
                "ioc_duplicate_events", "Events already stored (replays)",
                labels=["instance", "topic"]),
            "dead_letters": CounterMetricFamily(
                "ioc_dead_letters", "Events sent to the dead-letter topic",
                labels=["instance", "reason"]),
        }
        batch = SummaryMetricFamily("ioc_batch_write_seconds", "Time to write one batch",
                                    labels=["instance"])
        batch_max = GaugeMetricFamily("ioc_batch_write_seconds_max",
                                      "Longest batch write since the worker started",
                                      labels=["instance"])
        freshness = HistogramMetricFamily(
            "ioc_event_freshness_seconds",
            "From the connector reading an event to the event visible in PostgreSQL",
            labels=["instance"])
        for row in rows:
            labels = [row.instance]
            age.add_metric(labels, max(row.age, 0.0))
            up.add_metric(labels, float(row.age < limit))
            started.add_metric(labels, row.started_at)
            for key, family in per_topic.items():
                for name, value in _per_key(row.counters.get(key)):
                    family.add_metric([*labels, name], value)
            count = _number(row.counters.get("batches"))
            total = _number(row.counters.get("batch_write_seconds_sum"))
            if count is not None or total is not None:
                batch.add_metric(labels, count or 0.0, total or 0.0)
            longest = _number(row.counters.get("batch_write_seconds_max"))
            if longest is not None:
                batch_max.add_metric(labels, longest)
            buckets = list(_per_key(row.counters.get("freshness_buckets")))
            if buckets:
                buckets.sort(key=lambda b: float(b[0]))  # "+Inf" sorts last as inf
                freshness.add_metric(labels, buckets,
                                     _number(row.counters.get("freshness_seconds_sum")) or 0.0)
        yield from (age, up, started, *per_topic.values(), batch, batch_max, freshness)


class RequestCounter:
    """ASGI middleware counting requests by method, route template and status."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server sends if the app fails before starting a response

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # templates: bounded labels
            self.counter.labels(scope["method"], path, str(status)).inc()


class Metrics:
    """The API's registry: the scrape-time collector and the request counter."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.registry = CollectorRegistry()
        self.collector = MonitorCollector()
        self.registry.register(self.collector)
        self.requests = Counter("ioc_api_requests", "HTTP requests the API answered",
                                ["method", "path", "status"], registry=self.registry)

    async def scrape(self) -> bytes:
        """Prometheus text format, read from the broker and the database now."""
        lag, workers, connectors = await asyncio.gather(
            _read_lag(self.settings), _read_workers(self.db), _read_connectors(self.db))
        # No await from here to the reset: concurrent scrapes never see each other's snapshot.
        self.collector.snapshot = Snapshot(lag, workers, heartbeat_limit(self.settings),
                                           connectors)
        try:
            return generate_latest(self.registry)
        finally:
            self.collector.snapshot = None


async def _read_lag(settings: Settings) -> dict[tuple[str, int], int] | None:
    try:
        return await consumer_lag(settings, timeout=LAG_TIMEOUT)
    except BrokerUnavailable as exc:
        log.warning("scrape: broker unavailable", detail=str(exc))
        return None


async def _read_workers(db: Database) -> list[WorkerRow] | None:
    try:
        rows: list[WorkerRow] = await db.run(_worker_rows)
    except DatabaseDown as exc:
        log.warning("scrape: database unavailable", detail=str(exc))
        return None
    except psycopg.Error as exc:
        log.warning("scrape: worker_status unreadable", detail=describe_db_error(db.settings, exc))
        return None
    return rows


async def _read_connectors(db: Database) -> list[ConnectorRow] | None:
    try:
        rows: list[ConnectorRow] = await db.run(connector_rows)
    except (DatabaseDown, psycopg.Error) as exc:  # the database check reports it
        log.warning("scrape: connector_status unreadable", detail=str(exc))
        return None
    return rows
