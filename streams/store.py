"""Writing one batch of validated events in one transaction, exactly once in effect.

The events table's primary key decides what is new; only new events touch the state tables.
Each changed entity then moves the rollups by its new counts minus its old ones, read under
a row lock, so a replay, a crash before the offset commit, a duplicate, or two workers
handling one entity during a rebalance leave the same rows and counts as a single pass.
"""

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from time import perf_counter, thread_time

import psycopg
from psycopg import sql
from pydantic_core import to_json

from ioc.core.db import connect_kwargs
from ioc.core.events import Event, Kind
from ioc.core.settings import Settings
from streams.state import STATE_TABLES, StateTable

ROLLUP, ROLLUP_WIDTH = sql.Identifier("rollup_hour"), timedelta(hours=1)

INSERT_EVENTS = """
INSERT INTO events (occurred_at, event_id, kind, entity_id, source, province_code,
                    commune_code, agency_code, status, ingested_at, body)
SELECT * FROM unnest(%b::timestamptz[], %b::uuid[], %b::text[], %b::text[], %b::text[],
                     %b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[],
                     %b::jsonb[])
ON CONFLICT DO NOTHING
RETURNING event_id, occurred_at, kind, source
"""

# Where TimescaleDB is absent, event counts are tables the same statement keeps (else caggs),
# so the new events never leave the server: table, bucket width, what it counts by.
COUNT_TABLES = (("kind_counts_minute", "1 minute", "kind, source"),
                ("kind_counts_hour", "1 hour", "kind, source"))
COUNT_NEW = """
, {table} AS (
    INSERT INTO {table} AS t (bucket, {by}, events)
    SELECT time_bucket('{width}'::interval, occurred_at) AS bucket, {by}, count(*)
    FROM new GROUP BY 1, {by} ORDER BY 1, {by}
    ON CONFLICT (bucket, {by}) DO UPDATE SET events = t.events + excluded.events
)"""
# The new events' ids as 16 bytes: building a UUID object per event costs more than the rest.
NEW_IDS = "\nSELECT uuid_send(event_id) FROM new"
INSERT_NEW = "WITH new AS (" + INSERT_EVENTS + ")" + NEW_IDS
INSERT_COUNTED = ("WITH new AS (" + INSERT_EVENTS + ")"
                  + "".join(COUNT_NEW.format(table=table, width=width, by=by)
                            for table, width, by in COUNT_TABLES)
                  + NEW_IDS)

# Per transaction: the counts of the changed entities, old ones negated (server side).
METRIC_DELTA = """
CREATE TEMP TABLE IF NOT EXISTS metric_delta (
    anchor_at timestamptz, province_code text, commune_code text, agency_code text,
    metric text, value numeric
) ON COMMIT DELETE ROWS
"""
ADD_METRICS = """
INSERT INTO metric_delta
SELECT anchor_at, province_code, commune_code, agency_code, metric, {sign} value
FROM {metrics} WHERE entity_id = ANY(%b)
"""
ADD_TO_ROLLUP = """
WITH changed AS (
    INSERT INTO {rollup} AS t
           (bucket, kind, province_code, commune_code, agency_code, metric, value)
    SELECT time_bucket(%(width)s::interval, anchor_at), %(kind)s, province_code, commune_code,
           agency_code, metric, sum(value)
    FROM metric_delta
    GROUP BY 1, 3, 4, 5, 6 HAVING sum(value) <> 0
    ORDER BY 5, 4, 3, 1, 6
    ON CONFLICT (kind, agency_code, commune_code, province_code, bucket, metric)
    DO UPDATE SET value = t.value + excluded.value
    RETURNING t.bucket, t.province_code, t.commune_code, t.agency_code, t.metric, t.value
)
SELECT bucket, province_code, commune_code, agency_code, metric FROM changed WHERE value = 0
"""
DROP_ZEROS = """
DELETE FROM {rollup} r
USING unnest(%(bucket)b::timestamptz[], %(province)b::text[], %(commune)b::text[],
             %(agency)b::text[], %(metric)b::text[])
      AS d(bucket, province_code, commune_code, agency_code, metric)
WHERE r.kind = %(kind)s AND r.agency_code = d.agency_code AND r.commune_code = d.commune_code
  AND r.province_code = d.province_code AND r.bucket = d.bucket AND r.metric = d.metric
  AND r.value = 0
"""


@dataclass
class Written:
    stored: int
    duplicates: int


@dataclass
class Stages:
    """Wall and CPU seconds per stage of the hot path, summed over batches: what the benchmark
    divides by the events. A stage that awaits the database also counts the other agents' CPU."""

    wall: Counter[str] = field(default_factory=Counter)
    cpu: Counter[str] = field(default_factory=Counter)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = perf_counter(), thread_time()
        try:
            yield
        finally:
            self.wall[stage] += perf_counter() - wall
            self.cpu[stage] += thread_time() - cpu


def _columns(rows: Sequence[tuple]) -> list[list]:
    return [list(column) for column in zip(*rows, strict=True)]


class Store:
    """One connection (reopened after a failure) writing batches of one kind at a time."""

    def __init__(self, settings: Settings, stages: Stages | None = None) -> None:
        self.settings = settings
        self.stages = stages or Stages()
        self._conn: psycopg.AsyncConnection | None = None
        self._keeps_counts = False

    async def connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.settings.database_url, connect_timeout=5, **connect_kwargs(self.settings)
            )
            row = await (await self._conn.execute(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass('kind_counts_minute')"
            )).fetchone()
            self._keeps_counts = row is not None and row[0] == "r"
            await self._conn.commit()
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def write(self, kind: Kind, events: Sequence[Event]) -> Written:
        conn, stage = await self.connection(), self.stages
        with stage("dedupe"):
            unique = list({e.event_id: e for e in events}.values())
        with stage("encode"):
            columns = _columns([(
                e.occurred_at, e.event_id, e.kind, e.entity_id, e.source, e.unit.province_code,
                e.unit.commune_code or "", e.agency.code,
                None if e.payload.status is None else str(e.payload.status), e.ingested_at,
                e.model_dump_json(),
            ) for e in unique])
        try:
            with stage("write events"):
                query = INSERT_COUNTED if self._keeps_counts else INSERT_NEW
                inserted = await (await conn.execute(query, columns)).fetchall()
            if inserted:
                new_ids = {row[0] for row in inserted}
                spec = STATE_TABLES[kind]
                with stage("fold"):
                    rows = spec.fold([e for e in unique if e.event_id.bytes in new_ids])
                await self._update_state(conn, spec, rows)
            with stage("commit"):
                await conn.commit()
        except BaseException:
            with suppress(psycopg.Error):
                await conn.rollback()
            raise
        return Written(stored=len(inserted), duplicates=len(events) - len(inserted))

    async def _update_state(self, conn: psycopg.AsyncConnection, spec: StateTable,
                            rows: list[dict]) -> None:
        stage = self.stages
        table, key = sql.Identifier(spec.table), sql.Identifier(spec.key)
        metrics = sql.Identifier(f"{spec.kind}_metrics")
        # New entities first: inserting takes their row locks, and an entity another worker
        # is inserting right now makes us wait, then counts as existing.
        with stage("write state"):
            created = {r[0] for r in await (await conn.execute(
                sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM jsonb_populate_recordset("
                        "NULL::{}, %s::jsonb) ON CONFLICT DO NOTHING RETURNING {}").format(
                    table, spec.column_list, spec.column_list, table, key),
                (to_json(rows).decode(),),
            )).fetchall()}
            existing = [r for r in rows if r[spec.key] not in created]
            await conn.execute(METRIC_DELTA)
        if existing:
            keys = [r[spec.key] for r in existing]
            with stage("write state"):
                await conn.execute(sql.SQL("SELECT 1 FROM {} WHERE {} = ANY(%b) ORDER BY {}"
                                           " FOR UPDATE").format(table, key, key), (keys,))
            with stage("write rollups"):  # the old counts, before the upsert changes them
                await conn.execute(sql.SQL(ADD_METRICS).format(metrics=metrics,
                                                               sign=sql.SQL("-")), (keys,))
            with stage("write state"):
                await conn.execute(spec.upsert_sql(), (to_json(existing).decode(),))
        with stage("write rollups"):
            await conn.execute(sql.SQL(ADD_METRICS).format(metrics=metrics, sign=sql.SQL("")),
                               ([r[spec.key] for r in rows],))
            emptied = await (await conn.execute(sql.SQL(ADD_TO_ROLLUP).format(rollup=ROLLUP),
                                                {"kind": spec.kind.value, "width": ROLLUP_WIDTH})
                             ).fetchall()
            if emptied:  # a group an entity left: drop the row rather than keep a zero
                b, p, c, a, m = _columns(emptied)
                await conn.execute(sql.SQL(DROP_ZEROS).format(rollup=ROLLUP), {
                    "kind": spec.kind.value, "bucket": b, "province": p, "commune": c,
                    "agency": a, "metric": m})
