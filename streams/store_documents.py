"""Store document events: validate, deduplicate, keep current state and KPI rollups."""

from faust.types import StreamT

from ioc.core.events import Kind
from streams.app import app
from streams.storing import store_events
from streams.topics import documents


@app.agent(documents)
async def store_documents(stream: StreamT) -> None:
    await store_events(stream, Kind.DOCUMENT)
