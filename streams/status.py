"""What this worker has done, written to `worker_status` as a heartbeat for the API."""

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import structlog

from ioc.db import connect_kwargs
from streams.app import app, settings

log = structlog.get_logger()


@dataclass
class WorkerCounters:
    events_in: Counter[str] = field(default_factory=Counter)
    events_stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    batch_write_seconds_sum: float = 0.0
    batch_write_seconds_max: float = 0.0

    def batch_written(self, seconds: float) -> None:
        self.batches += 1
        self.batch_write_seconds_sum += seconds
        self.batch_write_seconds_max = max(self.batch_write_seconds_max, seconds)

    def as_json(self) -> str:
        return json.dumps(self.__dict__)


counters = WorkerCounters()
STARTED_AT = datetime.now(UTC)

HEARTBEAT = """
INSERT INTO worker_status (instance_id, started_at, heartbeat_at, counters)
VALUES (%s, %s, now(), %s::jsonb)
ON CONFLICT (instance_id) DO UPDATE
SET started_at = excluded.started_at, heartbeat_at = now(), counters = excluded.counters
"""


@app.timer(interval=settings.heartbeat_seconds)
async def write_heartbeat() -> None:
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, connect_timeout=3, autocommit=True, **connect_kwargs(settings)
        ) as conn:
            await conn.execute(
                HEARTBEAT, (settings.worker_instance_id, STARTED_AT, counters.as_json())
            )
    except psycopg.Error as exc:
        log.warning("heartbeat not written", error=str(exc))
