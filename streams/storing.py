"""The body every storing agent shares: validate, dead-letter, write, never lose an event.

An exception escaping an agent would ack and lose its events, so none escapes: bad input
goes to the dead-letter topic, database trouble is retried with backoff until it passes.
"""

import time
from collections.abc import Sequence

import psycopg
import structlog
from faust.types import EventT, StreamT
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

from ioc.core.events import Event, Kind, parse_event
from streams.app import settings
from streams.status import counters
from streams.store import Store, Written
from streams.topics import dead_letters

log = structlog.get_logger()


def describe(exc: ValidationError) -> tuple[str, str]:
    """(reason, message) for a dead letter: which fields are wrong and why."""
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return "invalid_json", errors[0]["msg"]
    lines = [f"{'.'.join(map(str, e['loc'])) or '(event)'}: {e['msg']}" for e in errors]
    return "invalid_event", "; ".join(lines)


async def send_dead_letter(event: EventT, reason: str, error: str) -> None:
    message = event.message
    headers = {
        "ioc.reason": reason.encode(),
        "ioc.error": error[:4000].encode(),
        "ioc.source.topic": message.topic.encode(),
        "ioc.source.partition": str(message.partition).encode(),
        "ioc.source.offset": str(message.offset).encode(),
    }
    pending = await dead_letters.send(key=message.key, value=message.value, headers=headers)
    await pending  # delivered before the source event is acked
    counters.dead_letters[reason] += 1
    log.warning("dead letter", reason=reason, error=error[:300], topic=message.topic,
                partition=message.partition, offset=message.offset)


def _transient(exc: BaseException) -> bool:
    """Database errors worth waiting out; a DataError is about the event, not the database."""
    return isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.DataError)


async def _write(store: Store, kind: Kind, events: Sequence[Event]) -> Written:
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_transient),
        wait=wait_exponential_jitter(multiplier=0.2, max=10),
        stop=stop_never,
        before_sleep=lambda state: log.warning(
            "database unavailable, retrying", kind=kind.value, attempt=state.attempt_number,
            error=str(state.outcome.exception()) if state.outcome else None),
        reraise=True,
    ):
        with attempt:
            return await store.write(kind, events)
    raise AssertionError("unreachable")


async def _write_or_split(store: Store, kind: Kind,
                          items: Sequence[tuple[EventT, Event]]) -> Written:
    """Write a batch; if the database rejects a value, find the event by halving, dead-letter it."""
    try:
        return await _write(store, kind, [event for _, event in items])
    except psycopg.DataError as exc:
        if len(items) == 1:
            await send_dead_letter(items[0][0], "rejected_by_database", str(exc))
            return Written(stored=0, duplicates=0)
        half = len(items) // 2
        first = await _write_or_split(store, kind, items[:half])
        second = await _write_or_split(store, kind, items[half:])
        return Written(first.stored + second.stored, first.duplicates + second.duplicates)


async def store_events(stream: StreamT, kind: Kind) -> None:
    topic = settings.topic(f"{kind.value}s")
    store = Store(settings)
    try:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            counters.events_in[topic] += len(batch)
            valid: list[tuple[EventT, Event]] = []
            for event in batch:
                try:
                    valid.append((event, parse_event(event.value, kind)))
                except ValidationError as exc:
                    await send_dead_letter(event, *describe(exc))
            if not valid:
                continue
            started = time.perf_counter()
            written = await _write_or_split(store, kind, valid)
            counters.batch_written(time.perf_counter() - started)
            counters.visible([event.ingested_at for _, event in valid])
            counters.events_stored[topic] += written.stored
            counters.duplicates[topic] += written.duplicates
    finally:
        await store.close()
