"""Pacing of empty fetches, for brokers that answer them at once.

A Kafka broker holds an empty fetch for up to `fetch.max.wait.ms`; the embedded broker
(noida-db) answers at once, and aiokafka then fetches again immediately: an idle worker
spun a whole core. After an empty fetch that came back sooner than the pause, we wait out
the rest of it, or until the application consumes buffered records (the moment aiokafka
would fetch for those partitions again). Against Apache Kafka an empty fetch already takes
`fetch.max.wait.ms`, so nothing changes there; with data flowing, nothing waits.
"""

import asyncio
import time
from contextlib import suppress
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

_original = Fetcher._proc_fetch_request


def pace_empty_fetches(pause_seconds: float) -> None:
    """Install (or, with 0, remove) the pause; aiokafka is pinned, its fetcher known."""
    if pause_seconds <= 0:
        Fetcher._proc_fetch_request = _original
        return

    async def paced(self: Fetcher, *args: Any) -> bool:
        started = time.monotonic()
        got_records: bool = await _original(self, *args)
        remaining = pause_seconds - (time.monotonic() - started)
        consumed = self._wait_consume_future  # resolved when the application takes records
        if not got_records and remaining > 0 and consumed is not None:
            with suppress(asyncio.CancelledError):  # closing: end quietly, as aiokafka's does
                await asyncio.wait([consumed], timeout=remaining)
        return got_records

    Fetcher._proc_fetch_request = paced
