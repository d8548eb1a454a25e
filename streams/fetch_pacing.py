"""Pacing of empty fetches, for the emulator only (IOC_EMPTY_FETCH_PAUSE_MS, off by default).

Apache Kafka holds an empty fetch for up to `fetch.max.wait.ms`; the emulator (noida-db)
answers at once, and aiokafka then fetches again immediately: an idle worker spun a whole
core. After an empty fetch that came back sooner than the pause, we wait out the rest of it,
or until the application consumes buffered records (the moment aiokafka would fetch for
those partitions again); with data flowing, nothing waits. `ioc up` turns it on when it
runs the emulator (`Emulator.client_settings`).
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
