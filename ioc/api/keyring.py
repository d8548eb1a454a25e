"""The api_keys rows this process read lately (`KeyRing`), so that a key check rarely waits
for the database and keeps working while it is down.

Each process keeps the rows it read for `KEY_FRESH` seconds, so a revocation reaches every
process within that, and a report POST costs no database round trip. Every failure costs the
same: one HMAC whatever the key id (unknown, revoked, existing), compared with a dummy when
there is no live row. While PostgreSQL is down, a key verified in the last `KEY_GRACE` seconds
is still accepted: the broker is the record.
"""

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from ioc.api import keys
from ioc.core.settings import Settings

log = structlog.get_logger()

KEY_FRESH = 5.0  # seconds a key row read from the database is used before reading it again
KEY_GRACE = 900.0  # database down: keys verified this recently still pass
LOOKUP_TIMEOUT = 2.5  # a frozen database must not hold a request longer
KEYRING_SIZE = 10_000  # key ids remembered (unknown ones too), least recently used dropped
TOUCH_EVERY = 60.0  # last_used_at is written at most this often per key and process
VERIFY_CONCURRENCY = 2  # scrypt checks of not yet upgraded keys at once (CPU, memory)


class KeysUnavailable(RuntimeError):
    """The database could not be asked about a key this process has not verified lately."""


@dataclass
class Entry:
    row: dict[str, Any] | None  # None: no such key id
    read_at: float  # monotonic
    verified_at: float | None = None  # last successful check
    touched_at: float = 0.0


class KeyRing:
    """The api_keys rows this process read lately, by key id (see the module docstring)."""

    def __init__(self, settings: Settings, database: Any) -> None:
        self.database = database
        self.pepper = keys.pepper(settings)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.loading: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self.gate = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self.background: set[asyncio.Task[None]] = set()

    def known(self, key_id: str) -> bool:
        return key_id in self.entries

    def recently_verified(self, presented: str) -> bool:
        """A live key this process verified within KEY_GRACE, with the right secret."""
        parsed = keys.parse(presented)
        entry = self.entries.get(parsed[0]) if parsed else None
        if parsed is None or entry is None or entry.verified_at is None:
            return False
        return time.monotonic() - entry.verified_at < KEY_GRACE and \
            keys.matches(self.pepper, entry.row, parsed[1])

    async def _read(self, key_id: str) -> dict[str, Any] | None:
        async def read(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any] | None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(keys.LOOKUP, (key_id,))
                return await cur.fetchone()

        async with asyncio.timeout(LOOKUP_TIMEOUT):
            row: dict[str, Any] | None = await self.database.run(read)
        return row

    async def row(self, key_id: str) -> dict[str, Any] | None:
        """The key's row (None: no such key), read again when older than KEY_FRESH; one
        read per key id at a time."""
        now = time.monotonic()
        entry = self.entries.get(key_id)
        if entry is not None:
            self.entries.move_to_end(key_id)
            if now - entry.read_at < KEY_FRESH:
                return entry.row
        task = self.loading.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._read(key_id))
            self.loading[key_id] = task
            task.add_done_callback(lambda _: self.loading.pop(key_id, None))
        try:
            row = await asyncio.shield(task)
        except Exception as exc:  # DatabaseDown, psycopg errors, a frozen database
            if entry is not None and entry.row is not None and entry.verified_at is not None \
                    and now - entry.verified_at < KEY_GRACE:
                entry.read_at = now  # ask the database again in KEY_FRESH, not at each request
                return entry.row
            log.warning("api key: cannot verify", error=type(exc).__name__)
            raise KeysUnavailable from None
        if entry is None:
            entry = self.entries[key_id] = Entry(row, now)
            while len(self.entries) > KEYRING_SIZE:
                self.entries.popitem(last=False)
        entry.row, entry.read_at = row, now
        return row

    async def check(self, key_id: str, row: dict[str, Any] | None, secret: str) -> bool:
        """Whether `secret` is the live key's; keys made with scrypt are rehashed once."""
        if row is not None and row["revoked_at"] is None and keys.is_legacy(row):
            async with self.gate:
                if not await asyncio.to_thread(keys.matches_legacy, row, secret):
                    return False
            await self._upgrade(key_id, row, secret)
            return True
        return keys.matches(self.pepper, row, secret)

    async def _upgrade(self, key_id: str, row: dict[str, Any], secret: str) -> None:
        new_hash = keys.digest(self.pepper, secret)

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(keys.UPGRADE, (keys.KDF, new_hash, key_id, row["kdf"]))

        try:
            await self.database.run(write)
        except Exception as exc:  # checked all the same; rehashed at a later use
            log.warning("api key: not rehashed", error=type(exc).__name__)
            return
        entry = self.entries.get(key_id)
        if entry is not None and entry.row is not None:
            entry.row = {**entry.row, "kdf": keys.KDF, "salt": b"", "secret_hash": new_hash}

    def verified(self, key_id: str) -> None:
        """Remember the success (grace while the database is down); touch last_used_at now
        and then, in the background."""
        entry = self.entries.get(key_id)
        if entry is None:
            return
        now = time.monotonic()
        entry.verified_at = now
        if now - entry.touched_at < TOUCH_EVERY:
            return
        entry.touched_at = now

        async def touch() -> None:
            async def write(conn: psycopg.AsyncConnection[Any]) -> None:
                await conn.execute(keys.TOUCH, (key_id,))

            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    await self.database.run(write)
            except Exception as exc:  # bookkeeping only: the key is valid
                log.info("api key: last_used_at not updated", error=type(exc).__name__)

        task = asyncio.ensure_future(touch())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
