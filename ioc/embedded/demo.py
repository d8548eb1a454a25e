"""`ioc demo`: the embedded stack, the province simulator and the terminal wall at once."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import structlog
from rich.console import Console
from rich.live import Live

from connectors.province import write_directory
from connectors.simulator import Simulator, Stats, run
from ioc.core.lag import BrokerUnavailable, consumer_lag
from ioc.core.settings import Settings
from ioc.embedded.stack import RunningStack
from ioc.embedded.wall import WallData, read_wall, render

log = structlog.get_logger()


class Wall:
    """Refreshes the wall once a second and keeps the stack's children alive meanwhile."""

    def __init__(self, running: RunningStack, console: Console) -> None:
        self.running, self.settings = running, running.settings
        self.live = Live(console=console, refresh_per_second=2, screen=False)
        self.stats: Stats | None = None
        self.last: WallData | None = None
        self._published = (0, time.monotonic())

    async def lag(self) -> int | None:
        try:
            return sum((await consumer_lag(self.settings)).values())
        except BrokerUnavailable:
            return None

    async def refresh(self) -> WallData:
        """The wall as of the simulator's clock: while it replays history, dossiers it has not
        finished yet are not late against the real clock."""
        self.running.supervise()
        clock = self.stats.clock if self.stats else None
        data = await asyncio.to_thread(read_wall, self.settings, await self.lag(), as_of=clock)
        now = time.monotonic()
        if self.last is not None:
            seconds = max(now - self._published[1], 1e-6)
            data.stored_per_s = (data.stored - self.last.stored) / seconds
            published = self.stats.total if self.stats else 0
            data.published_per_s = (published - self._published[0]) / seconds
        self._published = (self.stats.total if self.stats else 0, now)
        if self.stats is not None:
            data.notes.append(f"[dim]{self.stats.line()}[/dim]")
        self.last = data
        self.live.update(render(data))
        return data

    async def keep_refreshing(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(1)


async def demo(running: RunningStack, simulator: Simulator, seconds: float | None,
               console: Console) -> WallData:
    wall = Wall(running, console)

    def on_tick(stats: Stats) -> None:
        wall.stats = stats

    with wall.live:
        refresher = asyncio.create_task(wall.keep_refreshing())
        try:
            await run(running.settings, simulator, seconds, on_tick=on_tick)
            # Let the worker catch up so the final figures include every event sent.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (await wall.lag()) != 0:
                await asyncio.sleep(0.5)
        finally:
            refresher.cancel()
        return await wall.refresh()


def run_demo(settings: Settings, seconds: float | None, seed: int, speed: float,
             rate: float) -> WallData:
    """The simulated clock starts far enough back to reach the real now as the demo ends
    (two days back when it runs until Ctrl-C), then follows real time."""
    from ioc.embedded.stack import embedded_stack

    history = timedelta(seconds=seconds * speed) if seconds else timedelta(days=2)
    simulator = Simulator(settings.province_code, seed=seed, speed=speed, rate=rate,
                          start=datetime.now(UTC) - history)
    # The API files Open311 reports under the simulated agencies, as a province's would.
    directory = write_directory(simulator.province, settings.state_dir / "demo-agencies.csv")
    with embedded_stack(settings.model_copy(update={"agency_directory": directory})) as running:
        return asyncio.run(demo(running, simulator, seconds, Console()))
