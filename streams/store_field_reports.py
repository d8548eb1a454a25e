"""Store field report events: validate, deduplicate, keep current state and KPI rollups."""

from faust.types import StreamT

from ioc.core.events import Kind
from streams.app import app
from streams.storing import store_events
from streams.topics import field_reports


@app.agent(field_reports)
async def store_field_reports(stream: StreamT) -> None:
    await store_events(stream, Kind.FIELD_REPORT)
