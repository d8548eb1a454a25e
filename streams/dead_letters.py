"""Dead letters as rows of the `dead_letters` table (migration 0016, ioc/core/migrations/).

Every producer of the dead-letter topic sets the header `ioc.reason` and `ioc.error`; the
worker's storing agents (streams/storing.py) add `ioc.source.topic`, `.partition` and
`.offset`, the connectors and `ioc import` (connectors/base.py) `ioc.source.connector`. A row
keeps where the dead letter came from, why, its key and its size, never its payload (it may
hold personal data; it stays on the topic, at `dead_letter_partition` / `dead_letter_offset`).

Stored once: `origin_key` is the source topic, partition and offset (a worker that dead-letters
an event again after a restart repeats them), else a hash of the connector's name, reason,
error, key and record (a connector re-reading a record, or a file imported again, sends the
same), else the dead letter's own place on its topic. A replay of the dead-letter topic
changes nothing.
"""

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime

import psycopg

ERROR_CHARS = 1000
KEY_CHARS = 200
LOCK_CLASS = 72_114_016  # pg_advisory_xact_lock(LOCK_CLASS, key): one writer per origin_key
UNKNOWN = "unknown"

Headers = Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class DeadLetter:
    """One row of `dead_letters` (column order)."""

    at: datetime
    origin: str
    reason: str
    error: str | None
    message_key: str | None
    payload_bytes: int
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    source_connector: str | None
    dead_letter_partition: int
    dead_letter_offset: int
    origin_key: str


COLUMNS = ", ".join(f.name for f in fields(DeadLetter))
INSERT = f"""
INSERT INTO dead_letters ({COLUMNS})
SELECT {", ".join(["%s"] * len(fields(DeadLetter)))}
WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE origin_key = %s)
ON CONFLICT DO NOTHING
"""


def _text(value: bytes | None, limit: int) -> str | None:
    """Bytes as text PostgreSQL accepts (no NUL), at most `limit` characters."""
    if value is None:
        return None
    return value.decode("utf-8", errors="replace").replace("\x00", "\ufffd")[:limit]


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _digest(*parts: bytes | None) -> str:
    """A hash of the parts, each length-prefixed (None and b"" differ)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(b"\xff" * 8 if part is None else len(part).to_bytes(8, "big"))
        h.update(part or b"")
    return h.hexdigest()


def from_message(*, partition: int, offset: int, timestamp: datetime | None,
                 key: bytes | None, value: bytes | None, headers: Headers) -> DeadLetter:
    """The row for one message of the dead-letter topic (whatever its headers hold)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    h: dict[str, bytes | None] = {}
    for name, raw in items:
        h.setdefault(name, raw)  # the first of a repeated header counts
    reason = _text(h.get("ioc.reason"), 100) or UNKNOWN
    error = h.get("ioc.error")
    topic = _text(h.get("ioc.source.topic"), 255)
    source = (_int(h.get("ioc.source.partition")), _int(h.get("ioc.source.offset")))
    connector = _text(h.get("ioc.source.connector"), 255)
    if topic and None not in source:
        origin, origin_key = topic, f"topic:{topic}:{source[0]}:{source[1]}"
    elif connector:
        origin = connector
        origin_key = f"connector:{connector}:" + _digest(
            connector.encode(), reason.encode(), error, key, value)
    else:
        origin, origin_key = topic or UNKNOWN, f"dead_letter:{partition}:{offset}"
    return DeadLetter(
        at=timestamp or datetime.now(UTC), origin=origin, reason=reason,
        error=_text(error, ERROR_CHARS), message_key=_text(key, KEY_CHARS),
        payload_bytes=len(value or b""), source_topic=topic, source_partition=source[0],
        source_offset=source[1], source_connector=connector, dead_letter_partition=partition,
        dead_letter_offset=offset, origin_key=origin_key)


def lock_key(origin_key: str) -> int:
    """A 32-bit advisory-lock key for an origin (collisions only make writers wait)."""
    return int.from_bytes(hashlib.sha256(origin_key.encode()).digest()[:4], "big", signed=True)


async def store(conn: psycopg.AsyncConnection, letters: Iterable[DeadLetter]) -> int:
    """Insert the letters not stored yet, in one transaction; returns how many were new.

    Each origin_key is locked first (in a fixed order: no deadlock between workers), so two
    workers holding copies of one dead letter cannot both find it absent.
    """
    unique: dict[str, DeadLetter] = {}
    for letter in letters:
        unique.setdefault(letter.origin_key, letter)  # the first copy in the batch
    if not unique:
        return 0
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, k)"
            " FROM (SELECT DISTINCT k FROM unnest(%s::int[]) AS k ORDER BY k) AS keys",
            (LOCK_CLASS, [lock_key(key) for key in unique]))
        new = 0
        async with conn.cursor() as cur:
            for letter in unique.values():
                await cur.execute(INSERT, (*astuple(letter), letter.origin_key))
                new += cur.rowcount
    return new
