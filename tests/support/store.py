"""The scenario written through the worker's own write path (streams.store.Store), without a
broker: for the tests that need the data in place, not the trip through Kafka."""

import asyncio

from ioc.core.events import Kind, parse_event
from ioc.core.settings import Settings
from streams.store import Store
from tests.support import scenario

TOPICS = {"dossiers": Kind.DOSSIER, "documents": Kind.DOCUMENT, "field_reports": Kind.FIELD_REPORT}


def load(settings: Settings, sc: scenario.Scenario, replay: bool = False) -> None:
    """Write every event of the scenario in batches of 50; with `replay`, write each kind's
    first batch once more (a replay must change nothing)."""

    async def write_all() -> None:
        store = Store(settings)
        try:
            for topic, kind in TOPICS.items():
                events = [parse_event(v, kind) for t, _, v in sc.messages if t == topic]
                for i in range(0, len(events), 50):
                    await store.write(kind, events[i:i + 50])
                if replay:
                    await store.write(kind, events[:50])
        finally:
            await store.close()

    asyncio.run(write_all())
