"""The fetch loop's hand-off of a message to its agent (streams/delivery.py).

No broker here: this checks which of the two paths the hand-off takes, on a real mode service
with faust's flow event. Delivery through a real broker is what test_pipeline.py and
test_recovery.py run, with the hand-off installed.
"""

import asyncio

from faust.transport.consumer import Consumer
from mode import Service
from mode.utils.locks import Event

from streams.delivery import deliver_directly


class FlowService(Service):
    """What the hand-off reads of faust's consumer: its services' wait and the flow flag."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


deliver_directly()  # as streams/app.py does
_wait_first = Consumer.wait_first


def test_running_flow_awaits_the_callback_in_the_fetch_loops_own_task() -> None:
    async def run() -> None:
        service, caller = FlowService(), asyncio.current_task()
        ran_in: list[asyncio.Task | None] = []

        async def callback() -> str:
            ran_in.append(asyncio.current_task())
            return "delivered"

        suspended = service.suspend_flow.wait()
        result = await _wait_first(service, callback(), suspended)
        assert ran_in == [caller]  # no task of its own: no scheduling per message
        assert result.results == ["delivered"] and not result.stopped
        assert suspended.cr_frame is None  # closed, never left pending

    asyncio.run(run())


def test_suspended_flow_takes_faust_path_and_does_not_wait_for_the_callback() -> None:
    async def run() -> None:
        service = FlowService()
        service.suspend_flow.set()  # a rebalance: the callback would wait for the flow
        never = asyncio.get_running_loop().create_future()

        async def blocked() -> None:
            await never

        result = await asyncio.wait_for(
            _wait_first(service, blocked(), service.suspend_flow.wait()), timeout=10)
        assert result.results == [True]  # the suspension's wait won
        assert never.cancelled()  # and the callback with it, as faust does

    asyncio.run(run())
