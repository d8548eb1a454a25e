"""The connector SDK: a source system in, events on Kafka out, a durable cursor in PostgreSQL."""

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

import structlog
from aiokafka import AIOKafkaProducer
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import RetryCallState

from connectors.health import ConnectorHealth
from connectors.mappings.common import AgencyPlaces, AgencyUnit
from connectors.ratelimit import SourceThrottle
from ioc.core.db import connect
from ioc.core.events import AdminUnit, Agency, Event, Kind
from ioc.core.retry import retrying
from ioc.core.settings import Settings


class ConnectorError(Exception):
    """Base of the errors a connector raises on purpose."""


class TransientError(ConnectorError):
    """Worth retrying: the source is down, overloaded (5xx, 429) or slow."""


class PermanentError(ConnectorError):
    """Retrying will not help (4xx, bad credentials, a wrong URL): the connector stops."""


def http_error(status: int, what: str, detail: str = "") -> ConnectorError | None:
    """The error for an HTTP status (None when it is a success), for connectors over HTTP."""
    if status < 400:
        return None
    detail = f": {detail[:300]}" if detail else ""
    if status in (408, 425, 429) or status >= 500:
        return TransientError(f"{what} answered {status}{detail}")
    hint = " (check the credentials)" if status in (401, 403) else ""
    return PermanentError(f"{what} answered {status}{hint}{detail}")


@dataclass(frozen=True)
class Batch:
    """What one `fetch` read: source records, the cursor after them, more available at once."""

    records: Sequence[Any]
    cursor: str | None
    more: bool = False


class ConnectorOptions(BaseSettings):
    """Options every connector has. A subclass adds its own fields (base_url, token...).

    Each option comes from, in order: the `--config` file (JSON or TOML), the environment
    variable `IOC_<CONNECTOR NAME>_<OPTION>` (e.g. `IOC_DVCQG_BATCH_SIZE=200`), the default.
    """

    model_config = SettingsConfigDict(extra="forbid")

    batch_size: int = Field(500, ge=1, description="Most records per batch (one cursor step).")
    poll_seconds: float = Field(30.0, gt=0, description="Pause when the source has nothing new.")
    retry_initial_seconds: float = Field(0.5, gt=0, description="First backoff (then doubled).")
    retry_max_seconds: float = Field(60.0, gt=0, description="Longest backoff between retries.")
    retry_attempts: int = Field(0, ge=0, description="Attempts per call; 0: retry forever.")
    timeout_seconds: float = Field(30.0, gt=0, description="Per request to the source.")
    fetch_timeout_seconds: float = Field(300.0, gt=0, description="Per fetch (all its pages).")
    max_requests_per_second: float = Field(0.0, ge=0, description=(
        "Requests to the source a second, spaced evenly (see `throttle()`); 0: no limit."))
    silence_seconds: float = Field(3600.0, ge=0, description=(
        "No new record for longer: status `silent` and one `connector_silent` event; 0: never."))
    # Agency code -> unit; an agency not listed is a province-level one of `province_code`.
    agencies: dict[str, AgencyUnit] = Field(default_factory=dict)
    province_code: str | None = Field(None, pattern=r"^\d{2}$",
                                      description="Default: IOC_PROVINCE_CODE.")

    @classmethod
    def read(cls, name: str, values: Mapping[str, Any] | None = None) -> Self:
        """The options of the source `name`: `values` (a `--config` file), else `IOC_<NAME>_*`."""
        prefix = f"IOC_{name.upper()}_"
        return cls(_env_prefix=prefix, **dict(values or {}))  # type: ignore[call-arg]

    def agency_places(self, settings: Settings) -> AgencyPlaces:
        """`agencies` and `province_code` as the mappings read them."""
        return AgencyPlaces(self.province_code or settings.province_code, self.agencies)


class Connector(ABC):
    """A connector reads one source system and publishes its records as IOC events.

    A subclass (one file, `connectors/<name>.py`, registered in `connectors/registry.py`)
    implements:

    - `name` (short, the registry key and the events' `source`) and `kind` (`ioc.core.events.Kind`);
    - `Options`: a `ConnectorOptions` subclass with its own fields, if it has any;
    - `async open()` / `async close()`: create and release its client (HTTP session...);
    - `async fetch(cursor)`: read the next records after `cursor` (None: from the start) and
      return a `Batch` with the cursor to store once they are published. Raise
      `TransientError` for what is worth retrying and `PermanentError` for what is not;
      connection errors and timeouts count as transient;
    - `map(record)`: one source record -> one event (or a list: a dossier and its citizen's
      evaluation, each to its kind's topic); raise `ValueError` with a clear reason
      when the record cannot be mapped. Personal data never goes into the event. The built-in
      connectors call their source's pure mapping (`connectors/mappings/`), as the push
      receivers and `ioc import` do;
    - optionally `personal_fields` (top-level keys removed from a dead-lettered record),
      `record_key(record)` (the dead letter's key) and `source_time(record, event)` (when the
      source changed the record, for the lag metric; default: the event's `occurred_at`).

    Call `await self.throttle()` before each request to the source: it spaces requests to
    honour the `max_requests_per_second` option.

    The base does the rest, in `run(once)`: load the cursor, fetch with retries (exponential
    backoff with jitter), map, publish with an idempotent producer keyed by entity id and wait
    for the broker's acks, dead-letter unmappable records (value: the record as JSON without
    `personal_fields`; headers `ioc.reason`, `ioc.error`, `ioc.source.connector`), and only
    then store the new cursor (table `connector_cursors`). Logs go through structlog; metrics
    and health live in `self.health` (connectors/health.py: records read, published,
    rejected, lag behind the source, last success; ok / degraded / silent / stopped, stored
    in `connector_status`; silences announced on `<prefix>connector_status`), served with
    `/healthz` by `ioc connectors run --metrics-port`.

    Settings used (`ioc.core.settings.Settings`): `IOC_KAFKA_BOOTSTRAP`, `IOC_TOPIC_PREFIX` (topics
    `<prefix><kind>s`, `<prefix>dead_letters`, `<prefix>connector_status`), `IOC_DATABASE_URL`,
    `IOC_DATABASE_SCHEMA` (the cursor and status tables); options: see `ConnectorOptions`.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    Options: ClassVar[type[ConnectorOptions]] = ConnectorOptions
    personal_fields: ClassVar[frozenset[str]] = frozenset()
    dead_letter_reason: ClassVar[str] = "unmappable"

    def place(self, agency_code: str, name: str | None = None) -> tuple[AdminUnit, Agency]:
        """An event's unit and agency, from the `agencies` option (for `map`)."""
        return self.places.place(agency_code, name)

    def __init__(self, settings: Settings, options: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.options = self.Options.read(self.name, options)
        self.log = structlog.get_logger().bind(connector=self.name)
        self.health = ConnectorHealth(settings, self.name, self.kind,
                                      self.options.silence_seconds)
        self.metrics = self.health.registry
        self._producer: AIOKafkaProducer | None = None
        self.places = self.options.agency_places(settings)
        self._throttle = SourceThrottle(self.options.max_requests_per_second)

    # --- what a subclass implements ------------------------------------------------------
    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create the source client."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the source client."""

    @abstractmethod
    async def fetch(self, cursor: str | None) -> Batch:
        """The next records after `cursor`, and the cursor after them."""

    @abstractmethod
    def map(self, record: Any) -> Event | list[Event]:
        """One record -> its event(s); ValueError (with the reason) when it cannot be mapped."""

    def record_key(self, record: Any) -> str | None:
        return None

    def source_time(self, record: Any, event: Event) -> datetime | None:
        """When the source changed this record (the lag metric); None when unknown."""
        return event.occurred_at

    async def throttle(self) -> None:
        """Wait until the next request to the source is allowed (`max_requests_per_second`)."""
        await self._throttle.wait()

    # --- the cursor ------------------------------------------------------------------------
    def load_cursor(self) -> str | None:
        with connect(self.settings) as conn:
            row = conn.execute("SELECT cursor FROM connector_cursors WHERE connector = %s",
                               (self.name,)).fetchone()
        return row[0] if row else None

    def save_cursor(self, cursor: str) -> None:
        with connect(self.settings) as conn:
            conn.execute(
                "INSERT INTO connector_cursors (connector, cursor, updated_at)"
                " VALUES (%s, %s, now()) ON CONFLICT (connector)"
                " DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                (self.name, cursor))

    # --- the loop --------------------------------------------------------------------------
    async def run(self, once: bool = False) -> None:
        """Poll until cancelled; with `once`, stop when the source has nothing more."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                          enable_idempotence=True, linger_ms=5)
        await self._producer.start()
        watch: asyncio.Task[None] | None = None
        reason = "finished: nothing more to read (--once)"
        try:
            await self.open()
            self.log.info("connector.start", kind=str(self.kind), once=once)
            await self.health.started()
            watch = asyncio.create_task(self.health.watch(self._producer))
            while True:
                cursor = await asyncio.to_thread(self.load_cursor)
                batch = await self._retrying(self.fetch, cursor)
                await self.publish(batch.records)
                if batch.cursor is not None and batch.cursor != cursor:
                    await asyncio.to_thread(self.save_cursor, batch.cursor)
                await self.health.succeeded(self._producer)
                self.log.info("connector.batch", records=len(batch.records), more=batch.more)
                if batch.more:
                    continue
                if once:
                    break
                await asyncio.sleep(self.options.poll_seconds)
        except (asyncio.CancelledError, KeyboardInterrupt):
            reason = "cancelled"
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            raise
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await self.health.finished(reason)
            await self.close()
            await self._producer.stop()
            self._producer = None
            self.log.info("connector.stop", reason=reason)

    async def publish(self, records: Sequence[Any]) -> None:
        """Map and send every record, dead-letter the unmappable, return once all are acked."""
        assert self._producer is not None, "publish() runs inside run()"
        self.health.records_read(len(records))
        dead = self.settings.topic("dead_letters")
        pending, rejected = [], 0
        for record in records:
            try:
                mapped = self.map(record)
            except ValueError as exc:
                rejected += 1
                error, key = refusal_reason(exc), self.record_key(record)
                self.log.warning("connector.rejected", error=error[:300], key=key)
                headers = [("ioc.reason", self.dead_letter_reason.encode()),
                           ("ioc.error", error[:4000].encode()),
                           ("ioc.source.connector", self.name.encode())]
                pending.append(await self._producer.send(
                    dead, self._redacted(record), key=key.encode() if key else None,
                    headers=headers))
                continue
            events = mapped if isinstance(mapped, list) else [mapped]
            self.health.source_time(self.source_time(record, events[0]))
            for event in events:
                pending.append(await self._producer.send(
                    self.settings.topic(f"{event.kind}s"), event.model_dump_json().encode(),
                    key=event.entity_id.encode()))
        await asyncio.gather(*pending)  # the broker's acks: only then may the cursor move
        self.health.sent(len(records) - rejected, rejected)

    def _redacted(self, record: Any) -> bytes:
        if isinstance(record, Mapping):
            record = {k: v for k, v in record.items() if k not in self.personal_fields}
        return json.dumps(record, ensure_ascii=False, default=str).encode()

    async def _retrying(self, call: Any, *args: Any) -> Any:
        o = self.options

        async def bounded() -> Any:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the fetch completes, and the connector would not stop.
            async with asyncio.timeout(o.fetch_timeout_seconds):
                return await call(*args)

        retry = retrying(self._log_retry, first=o.retry_initial_seconds,
                         longest=o.retry_max_seconds, attempts=o.retry_attempts,
                         also=(TransientError,))
        return await retry(bounded)

    async def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        error = f"{type(exc).__name__}: {exc}"[:1000]
        self.log.warning("connector.retry", attempt=state.attempt_number, error=error,
                         wait=round(state.next_action.sleep, 2) if state.next_action else None)
        await self.health.retrying(error)


def refusal_reason(exc: ValueError) -> str:
    """The reason a record was refused: which fields and why (no pydantic boilerplate)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}"
                         for e in exc.errors(include_url=False))
    return str(exc)
