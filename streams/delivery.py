"""Hand each fetched message straight to its agent (faust is pinned, its consumer known).

faust's fetch loop (`Consumer._drain_messages`, its only `wait_first` call) delivers every
message through `wait_first(callback(message), suspend_flow.wait())`: four tasks and an
`asyncio.wait` per message, about 35 µs of the worker's CPU, while the callback nearly always
ends at once (it puts the event on its agent's queue). With the flow running we await the
callback itself: a rebalance or a stop cancels the fetch loop, and the callback with it, as
before. With the flow suspended, faust's own path runs.
"""

from collections.abc import Coroutine
from typing import Any

from faust.transport.consumer import Consumer
from mode import Service
from mode.services import WaitResults


async def _wait_first(self: Consumer, *coros: Any, timeout: float | None = None) -> WaitResults:
    if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
        callback, suspended = coros
        if isinstance(callback, Coroutine) and isinstance(suspended, Coroutine):
            suspended.close()  # never started: closed, it raises no "never awaited" warning
            return WaitResults([callback], [await callback], False)
    return await Service.wait_first(self, *coros, timeout=timeout)


def deliver_directly() -> None:
    """Install the direct hand-off on faust's consumers."""
    Consumer.wait_first = _wait_first  # type: ignore[method-assign]
