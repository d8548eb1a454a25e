"""What this worker has done, written to `worker_status` as a heartbeat for the API."""

import asyncio
import json
import os
import socket
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate

import psycopg
import structlog

from ioc.core.db import connect_kwargs
from streams.app import app, settings

log = structlog.get_logger()


# Upper bounds (seconds) of the freshness histogram: connector read to visible in PostgreSQL.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
                     300.0, 3600.0)


@dataclass
class WorkerCounters:
    events_in: Counter[str] = field(default_factory=Counter)
    events_stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    batch_write_seconds_sum: float = 0.0
    batch_write_seconds_max: float = 0.0
    freshness: list[int] = field(default_factory=lambda: [0] * (len(FRESHNESS_BUCKETS) + 1))
    freshness_seconds_sum: float = 0.0
    # Wall seconds per stage of the hot path, summed (bench/pipeline.py divides by the events).
    stage_seconds: Counter[str] = field(default_factory=Counter)
    stage_cpu_seconds: Counter[str] = field(default_factory=Counter)  # this thread's CPU

    def batch_written(self, seconds: float) -> None:
        self.batches += 1
        self.batch_write_seconds_sum += seconds
        self.batch_write_seconds_max = max(self.batch_write_seconds_max, seconds)

    def visible(self, ingested: list[datetime]) -> None:
        """Events just committed: how long since their connector read them."""
        now = datetime.now(UTC)
        for at in ingested:
            age = max((now - at).total_seconds(), 0.0)
            self.freshness_seconds_sum += age
            self.freshness[bisect_left(FRESHNESS_BUCKETS, age)] += 1

    def as_json(self) -> str:
        """The shape the API's /metrics reads; histogram buckets cumulative, as Prometheus's."""
        values = {k: v for k, v in self.__dict__.items() if k != "freshness"}
        values["freshness_buckets"] = dict(zip(
            [*map(str, FRESHNESS_BUCKETS), "+Inf"], accumulate(self.freshness), strict=True))
        return json.dumps(values)


counters = WorkerCounters()
STARTED_AT = datetime.now(UTC)

HEARTBEAT = """
INSERT INTO worker_status (instance_id, started_at, heartbeat_at, counters)
VALUES (%s, %s, now(), %s::jsonb)
ON CONFLICT (instance_id) DO UPDATE
SET started_at = excluded.started_at, heartbeat_at = now(), counters = excluded.counters
"""


# Once per process (migration 0019): the history a restart count needs. The previous heartbeat
# is the instance's row as an earlier process left it (not yet overwritten by this one).
START = """
INSERT INTO worker_starts (instance_id, started_at, host, pid, previous_heartbeat_at)
SELECT v.instance_id, v.started_at, v.host, v.pid,
       (SELECT w.heartbeat_at FROM worker_status w
        WHERE w.instance_id = v.instance_id AND w.started_at < v.started_at)
FROM (VALUES (%s, %s::timestamptz, %s, %s::integer)) AS v(instance_id, started_at, host, pid)
ON CONFLICT (instance_id, started_at) DO NOTHING
"""
START_RECORDED = asyncio.Event()


async def _status(query: str, *params: object) -> bool:
    """Run one status statement for this instance; False (logged) when the database failed."""
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, connect_timeout=3, autocommit=True, **connect_kwargs(settings)
        ) as conn:
            await conn.execute(query, (settings.worker_name, *params))
    except psycopg.Error as exc:
        log.warning("worker status not written", error=str(exc))
        return False
    return True


@app.task
async def record_start() -> None:
    """Write this process's start once; retried by the heartbeat if the database was down."""
    if not START_RECORDED.is_set() and await _status(START, STARTED_AT, socket.gethostname(),
                                                     os.getpid()):
        START_RECORDED.set()


@app.timer(interval=settings.heartbeat_seconds)
async def write_heartbeat() -> None:
    await record_start()
    await _status(HEARTBEAT, STARTED_AT, counters.as_json())


@app.on_before_shutdown.connect
async def forget_worker(app: object, **kwargs: object) -> None:
    """A worker stopped on purpose is gone, not down: /readyz and /metrics stop counting it
    (replicas get new host names, so their rows would otherwise stay forever)."""
    await _status("DELETE FROM worker_status WHERE instance_id = %s")
