"""The storing agents, one per kind of event, made by one factory: validate, dead-letter,
write, never lose an event.

An exception escaping an agent would ack and lose its events, so none escapes: bad input
goes to the dead-letter topic, database trouble is retried with backoff until it passes.
"""

import time
from collections.abc import Sequence

import psycopg
import structlog
from faust.types import AgentT, EventT, StreamT, TopicT
from pydantic import ValidationError

from ioc.core.events import Event, Kind, parse_event
from ioc.core.retry import retrying, warn
from streams.app import app, settings
from streams.status import counters
from streams.store import Stages, Store, Written
from streams.topics import dead_letters, documents, dossiers, evaluations, field_reports

log = structlog.get_logger()


def dead_letter_reason(exc: ValidationError) -> tuple[str, str]:
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


async def _write(store: Store, kind: Kind, events: Sequence[Event]) -> Written:
    """Write until the database takes it; a DataError (about the events) is raised."""
    retry = retrying(warn(log, "database unavailable, retrying", kind=kind.value))
    return await retry(store.write, kind, events)


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
    """The body of every storing agent: batches of `kind` events, validated, then written."""
    topic = settings.topic(f"{kind.value}s")
    stages = Stages(counters.stage_seconds, counters.stage_cpu_seconds)
    store = Store(settings, stages)
    try:
        waited = time.perf_counter()
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            stages.wall["take"] += time.perf_counter() - waited  # faust/aiokafka, or idle
            counters.events_in[topic] += len(batch)
            valid: list[tuple[EventT, Event]] = []
            with stages("validate"):  # decoding included: one pydantic call per event
                bad: list[tuple[EventT, ValidationError]] = []
                for event in batch:
                    try:
                        valid.append((event, parse_event(event.value, kind)))
                    except ValidationError as exc:
                        bad.append((event, exc))
            for event, exc in bad:
                await send_dead_letter(event, *dead_letter_reason(exc))
            if valid:
                started = time.perf_counter()
                written = await _write_or_split(store, kind, valid)
                counters.batch_written(time.perf_counter() - started)
                counters.visible([event.ingested_at for _, event in valid])
                counters.events_stored[topic] += written.stored
                counters.duplicates[topic] += written.duplicates
            waited = time.perf_counter()
    finally:
        await store.close()


def storing_agent(kind: Kind, topic: TopicT) -> AgentT:
    """Register the agent storing the `kind` events of `topic`.

    Named `streams.store_<kind>s.store_<kind>s`, as when each lived in a module of its own:
    faust keys its agents by name, which would otherwise be the closure's, the same for all.
    """
    name = f"store_{kind.value}s"

    async def store(stream: StreamT) -> None:
        await store_events(stream, kind)

    store.__name__ = store.__qualname__ = name
    return app.agent(topic, name=f"streams.{name}.{name}")(store)


# In the order the worker registered them when each had its own module.
store_documents = storing_agent(Kind.DOCUMENT, documents)
store_dossiers = storing_agent(Kind.DOSSIER, dossiers)
store_field_reports = storing_agent(Kind.FIELD_REPORT, field_reports)
store_evaluations = storing_agent(Kind.EVALUATION, evaluations)
