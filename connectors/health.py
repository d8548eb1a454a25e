"""What a connector's run looks like from outside: its Prometheus metrics, its health, and its
silences, kept apart from the base class so that a connector author reads only the loop.

Health (`state()`, table `connector_status`, see `connectors/status.py`): `ok`, `degraded`
while a transient error is retried, `silent` when no record arrived for longer than
`silence_seconds` (announced once as a `connector_silent` event on `<prefix>connector_status`,
then `connector_resumed` when records flow again), `stopped` with the reason. The times carry
over from the stored row, so a silence spans restarts.
"""

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge

from connectors.status import (
    TOPIC,
    ConnectorStatusEvent,
    Health,
    StatusChange,
    StatusRow,
    load_statuses,
    save_status,
)
from ioc.core.events import Kind
from ioc.core.settings import Settings


class ConnectorHealth:
    """One connector's counters, times and health, as its run reports them."""

    def __init__(self, settings: Settings, name: str, kind: Kind,
                 silence_seconds: float) -> None:
        self.settings, self.name, self.kind = settings, name, kind
        self.silence_seconds = silence_seconds
        self.log = structlog.get_logger().bind(connector=name)
        self.registry = CollectorRegistry()

        def metric(cls: type, metric: str, text: str, **kwargs: object) -> Any:
            return cls(metric, text, ["connector"], registry=self.registry, **kwargs).labels(name)

        self._read = metric(Counter, "ioc_connector_records_read", "Records read from the source")
        self._published = metric(Counter, "ioc_connector_events_published",
                                 "Events acknowledged by the broker")
        self._rejected = metric(Counter, "ioc_connector_records_rejected",
                                "Records sent to the dead-letter topic")
        self._last_success = metric(Gauge, "ioc_connector_last_success_timestamp_seconds",
                                    "When a batch was last published and its cursor stored")
        self._last_record = metric(Gauge, "ioc_connector_last_record_timestamp_seconds",
                                   "When a record last arrived from the source")
        self._newest_source = metric(Gauge, "ioc_connector_newest_source_timestamp_seconds",
                                     "The newest source time of a record read")
        metric(Gauge, "ioc_connector_source_lag_seconds",
               "Now minus the newest source time read (NaN before the first record)",
               ).set_function(self._lag_seconds)
        self._health = metric(Enum, "ioc_connector_health",
                              "ok, degraded (retrying), silent or stopped",
                              states=[h.value for h in Health])
        self._silence_lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()  # rows stored in the order the states happened
        self.first_run_at = datetime.now(UTC)
        self.last_success_at: datetime | None = None
        self.last_record_at: datetime | None = None
        self.newest_source_at: datetime | None = None
        self.silent_since: datetime | None = None
        self.error: str | None = None  # the transient error being retried
        self.stopped: str | None = None

    def state(self) -> tuple[Health, str | None]:
        """The status now and why."""
        if self.stopped is not None:
            return Health.STOPPED, self.stopped
        retrying = f"retrying: {self.error}" if self.error else None
        if self.silent_since is not None:
            quiet = f"no new record since {self.silent_since.isoformat(timespec='seconds')}"
            return Health.SILENT, f"{quiet}; {retrying}" if retrying else quiet
        if retrying:
            return Health.DEGRADED, retrying
        return Health.OK, None

    def row(self) -> StatusRow:
        health, reason = self.state()
        return StatusRow(self.name, str(self.kind), health, reason, self.first_run_at,
                         self.last_success_at, self.last_record_at, self.newest_source_at,
                         self.silent_since, self.silence_seconds)

    # --- what the run reports --------------------------------------------------------------
    def records_read(self, count: int) -> None:
        self._read.inc(count)
        if count:
            self.last_record_at = datetime.now(UTC)
            self._last_record.set(self.last_record_at.timestamp())

    def source_time(self, when: datetime | None) -> None:
        if when is not None and (self.newest_source_at is None or when > self.newest_source_at):
            self.newest_source_at = when
            self._newest_source.set(when.timestamp())

    def sent(self, published: int, rejected: int) -> None:
        self._published.inc(published)
        self._rejected.inc(rejected)

    async def started(self) -> None:
        self.stopped, self.error = None, None
        await asyncio.to_thread(self._load)
        await self.save()

    async def succeeded(self, producer: AIOKafkaProducer) -> None:
        self.last_success_at, self.error = datetime.now(UTC), None
        self._last_success.set(self.last_success_at.timestamp())
        await self.check_silence(producer)
        await self.save()

    async def retrying(self, error: str) -> None:
        self.error = error
        await self.save()

    async def finished(self, reason: str) -> None:
        self.stopped = reason
        await self.save()

    # --- silence ---------------------------------------------------------------------------
    async def check_silence(self, producer: AIOKafkaProducer) -> None:
        """Announce a silence longer than `silence_seconds`, and its end, once each."""
        async with self._silence_lock:
            now, threshold = datetime.now(UTC), self.silence_seconds
            if self.silent_since is None:
                since = self.last_record_at or self.first_run_at
                if not threshold or (now - since).total_seconds() <= threshold:
                    return
                change, silent_since = StatusChange.SILENT, since
            elif self.last_record_at is not None and self.last_record_at > self.silent_since:
                change, silent_since = StatusChange.RESUMED, self.silent_since
            else:
                return
            event = ConnectorStatusEvent.of(change, self.name, self.kind, silent_since,
                                            threshold, now)
            previous = self.silent_since
            try:
                await producer.send_and_wait(self.settings.topic(TOPIC),
                                             event.model_dump_json().encode(),
                                             key=self.name.encode())
                self.silent_since = silent_since if change is StatusChange.SILENT else None
                await self.save(event)
            except (KafkaError, psycopg.Error, OSError) as exc:  # tried again at the next check
                self.silent_since = previous
                self._health.state(self.state()[0].value)
                self.log.error("connector.status_event_failed", type=str(change),
                               error=f"{type(exc).__name__}: {exc}"[:300])
                return
            log = self.log.warning if change is StatusChange.SILENT else self.log.info
            log(f"connector.{'silent' if change is StatusChange.SILENT else 'resumed'}",
                silent_since=silent_since.isoformat(), threshold=threshold,
                event_id=str(event.event_id))

    async def watch(self, producer: AIOKafkaProducer) -> None:
        """Check for silence between batches too: a source that hangs or keeps failing."""
        tick = min(max(self.silence_seconds / 10, 0.05), 60.0)
        while True:
            await asyncio.sleep(tick)
            await self.check_silence(producer)

    # --- the stored row --------------------------------------------------------------------
    async def save(self, event: ConnectorStatusEvent | None = None) -> None:
        """Update the health metric and the `connector_status` row (with `event`, or raise)."""
        self._health.state(self.state()[0].value)  # at once; the row may wait for the lock
        async with self._save_lock:
            row = self.row()
            try:
                await asyncio.to_thread(save_status, self.settings, row, event)
            except psycopg.Error as exc:
                if event is not None:
                    raise
                self.log.warning("connector.status_not_saved", error=str(exc)[:300])

    def _load(self) -> None:
        try:
            row = load_statuses(self.settings, self.name).get(self.name)
        except psycopg.Error as exc:
            self.log.warning("connector.status_not_loaded", error=str(exc)[:300])
            return
        if row is not None:
            self.first_run_at, self.last_success_at = row.first_run_at, row.last_success_at
            self.last_record_at, self.newest_source_at = row.last_record_at, row.newest_source_at
            self.silent_since = row.silent_since
            for gauge, at in ((self._last_success, row.last_success_at),
                              (self._last_record, row.last_record_at),
                              (self._newest_source, row.newest_source_at)):
                if at is not None:
                    gauge.set(at.timestamp())

    def _lag_seconds(self) -> float:
        newest = self.newest_source_at
        return time.time() - newest.timestamp() if newest else float("nan")
