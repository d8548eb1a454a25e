"""Store every dead letter as a row of `dead_letters` (streams/dead_letters.py): from the storing
agents, the connectors and `ioc import` alike; never the payload.

Nothing escapes the agent (an escaping exception would ack and lose the batch): database
trouble is retried with backoff until it passes; a row the database refuses (DataError) is
logged and skipped, the dead letter itself stays on the topic. Stored once, even when the
topic is replayed or a producer sends a dead letter again (see streams/dead_letters.py).
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
import structlog
from faust.types import EventT, StreamT

from ioc.core.db import connect_kwargs
from ioc.core.retry import retrying, warn
from streams.app import app, settings
from streams.dead_letters import DeadLetter, from_message, store
from streams.topics import dead_letters

log = structlog.get_logger()


def letter_of(event: EventT) -> DeadLetter:
    m = event.message
    at = datetime.fromtimestamp(m.timestamp, UTC) if m.timestamp and m.timestamp > 0 else None
    return from_message(partition=m.partition, offset=m.offset, timestamp=at, key=m.key,
                        value=m.value, headers=m.headers or ())


class Writer:
    """One connection, reopened after a failure."""

    def __init__(self) -> None:
        self._conn: psycopg.AsyncConnection | None = None

    async def _store(self, letters: Sequence[DeadLetter]) -> int:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                settings.database_url, connect_timeout=5, **connect_kwargs(settings))
        return await store(self._conn, letters)

    async def write(self, letters: Sequence[DeadLetter]) -> int:
        """Store the letters; if the database refuses a row, find it one by one and skip it."""
        try:
            retry = retrying(warn(log, "database unavailable, retrying dead letters"))
            return await retry(self._store, letters)
        except psycopg.DataError as exc:
            if len(letters) > 1:
                return sum([await self.write([letter]) for letter in letters])
            log.error("dead letter not stored", error=str(exc)[:300],
                      origin_key=letters[0].origin_key)
            return 0

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


@app.agent(dead_letters)
async def store_dead_letters(stream: StreamT) -> None:
    writer = Writer()
    try:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            new = await writer.write([letter_of(event) for event in batch])
            log.debug("dead letters stored", received=len(batch), new=new)
    finally:
        await writer.close()
