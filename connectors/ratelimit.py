"""Requests to a source spaced out: a token bucket of one, so no source sees a burst."""

import asyncio
import time


class SourceThrottle:
    """`await throttle.wait()` before each request: at most `per_second` of them a second.

    Each request waits until `1 / per_second` has passed since the previous one was let
    through (a bucket holding one token), so the spacing holds over any window, not only on
    average. `per_second` 0 means no limit.
    """

    def __init__(self, per_second: float) -> None:
        if per_second < 0:
            raise ValueError("per_second: 0 (no limit) or more")
        self.interval = 1 / per_second if per_second else 0.0
        self._next = 0.0  # time.monotonic() at which the next request may go
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = max(self._next, time.monotonic()) + self.interval
