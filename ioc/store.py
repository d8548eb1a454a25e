"""Writing one batch of validated events in one transaction, exactly once in effect.

The events table's primary key decides what is new; only new events touch the state tables,
and the rollup groups they touch are recomputed from the state tables. So a replay, a crash
before the offset commit, or a duplicate leaves the same rows and counts as a single pass.
Concurrent workers lock the groups they recompute (advisory locks, always in one order).
"""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from ioc.db import connect_kwargs
from ioc.events import Event, Kind
from ioc.settings import Settings
from ioc.state import STATE_TABLES, StateTable, json_ready

ROLLUPS = {"rollup_minute": timedelta(minutes=1), "rollup_hour": timedelta(hours=1)}
Group = tuple[datetime, str, str, str]  # bucket, province, commune, agency

INSERT_EVENTS = """
INSERT INTO events (occurred_at, event_id, kind, entity_id, source, province_code,
                    commune_code, agency_code, status, ingested_at, body)
SELECT occurred_at, event_id, kind, entity_id, source, province_code,
       commune_code, agency_code, status, ingested_at, body
FROM jsonb_populate_recordset(NULL::events, %s::jsonb)
ON CONFLICT DO NOTHING
RETURNING event_id, occurred_at, kind, source, province_code, commune_code, agency_code
"""

# Where TimescaleDB is absent, event counts are tables this statement keeps (else caggs).
COUNT_EVENTS = """
INSERT INTO {table} AS t (bucket, kind, source, province_code, commune_code, agency_code, events)
SELECT time_bucket(%(width)s::interval, occurred_at), kind, source, province_code,
       commune_code, agency_code, count(*)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(occurred_at timestamptz, kind text, source text,
     province_code text, commune_code text, agency_code text)
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
ON CONFLICT (bucket, kind, source, province_code, commune_code, agency_code)
DO UPDATE SET events = t.events + excluded.events
"""

GROUP_KEYS = """
SELECT * FROM unnest(%(bucket)s::timestamptz[], %(province)s::text[], %(commune)s::text[],
                     %(agency)s::text[]) AS k(bucket, province_code, commune_code, agency_code)
"""
DELETE_GROUPS = "DELETE FROM {rollup} r USING (" + GROUP_KEYS + """) k
WHERE r.kind = %(kind)s AND r.bucket = k.bucket AND r.province_code = k.province_code
  AND r.commune_code = k.commune_code AND r.agency_code = k.agency_code"""
RECOMPUTE_GROUPS = """
INSERT INTO {rollup} (bucket, kind, province_code, commune_code, agency_code, metric, value)
SELECT k.bucket, %(kind)s, k.province_code, k.commune_code, k.agency_code, m.metric, sum(m.value)
FROM (""" + GROUP_KEYS + """) k
JOIN {metrics} m ON m.agency_code = k.agency_code AND m.commune_code = k.commune_code
     AND m.province_code = k.province_code
     AND m.anchor_at >= k.bucket AND m.anchor_at < k.bucket + %(width)s::interval
GROUP BY k.bucket, k.province_code, k.commune_code, k.agency_code, m.metric
ORDER BY 1, 3, 4, 5, 6
"""


@dataclass
class Written:
    stored: int
    duplicates: int


def bucket(ts: datetime, width: timedelta) -> datetime:
    """time_bucket for widths that divide a day (aligned to midnight UTC)."""
    ts = ts.astimezone(UTC)
    midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + (ts - midnight) // width * width


def lock_id(kind: Kind, group: Group) -> int:
    digest = hashlib.blake2b(repr((kind.value, *group)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def event_row(event: Event) -> dict[str, Any]:
    status = event.payload.status
    return {
        "occurred_at": event.occurred_at.isoformat(),
        "event_id": str(event.event_id),
        "kind": event.kind,
        "entity_id": event.entity_id,
        "source": event.source,
        "province_code": event.unit.province_code,
        "commune_code": event.unit.commune_code or "",
        "agency_code": event.agency.code,
        "status": None if status is None else str(status),
        "ingested_at": event.ingested_at.isoformat(),
        "body": event.model_dump(mode="json"),
    }


class Store:
    """One connection (reopened after a failure) writing batches of one kind at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.AsyncConnection | None = None
        self._keeps_counts = False

    async def connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.settings.database_url, connect_timeout=5, **connect_kwargs(self.settings)
            )
            row = await (await self._conn.execute(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass('event_counts_minute')"
            )).fetchone()
            await self._conn.commit()
            self._keeps_counts = row is not None and row[0] == "r"
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def write(self, kind: Kind, events: Sequence[Event]) -> Written:
        conn = await self.connection()
        unique = list({e.event_id: e for e in events}.values())
        async with conn.transaction():
            cur = await conn.execute(INSERT_EVENTS, (json.dumps([event_row(e) for e in unique]),))
            inserted = await cur.fetchall()
            if inserted:
                await self._count_events(conn, inserted)
                new_ids = {row[0] for row in inserted}
                await self._update_state(conn, STATE_TABLES[kind],
                                         [e for e in unique if e.event_id in new_ids])
        return Written(stored=len(inserted), duplicates=len(events) - len(inserted))

    async def _count_events(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
        if not self._keeps_counts:
            return
        columns = ("event_id", "occurred_at", "kind", "source", "province_code",
                   "commune_code", "agency_code")
        payload = json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str)
        for table, width in (("event_counts_minute", "1 minute"), ("event_counts_hour", "1 hour")):
            await conn.execute(sql.SQL(COUNT_EVENTS).format(table=sql.Identifier(table)),
                               {"width": width, "rows": payload})

    async def _update_state(self, conn: psycopg.AsyncConnection, spec: StateTable,
                            events: list[Event]) -> None:
        rows = spec.fold(events)
        keys = [row[spec.key] for row in rows]
        before = await (await conn.execute(
            sql.SQL("SELECT anchor_at, province_code, commune_code, agency_code FROM {}"
                    " WHERE {} = ANY(%s)").format(sql.Identifier(spec.table),
                                                  sql.Identifier(spec.key)),
            (keys,),
        )).fetchall()
        payload = json.dumps([json_ready(row) for row in rows])
        after = await (await conn.execute(spec.upsert_sql(), (payload,))).fetchall()
        touched = set(before) | {tuple(r[1:]) for r in after}
        await self._recompute_rollups(conn, spec.kind, touched)

    async def _recompute_rollups(self, conn: psycopg.AsyncConnection, kind: Kind,
                                 touched: Iterable[tuple]) -> None:
        hours = sorted({(bucket(a, ROLLUPS["rollup_hour"]), p, c, g) for a, p, c, g in touched})
        locks = sorted({lock_id(kind, group) for group in hours})
        await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) k", (locks,))
        metrics = sql.Identifier(f"{kind}_metrics")
        for rollup, width in ROLLUPS.items():
            groups = sorted({(bucket(a, width), p, c, g) for a, p, c, g in touched})
            params = {
                "kind": kind.value, "width": width,
                "bucket": [g[0] for g in groups], "province": [g[1] for g in groups],
                "commune": [g[2] for g in groups], "agency": [g[3] for g in groups],
            }
            table = sql.Identifier(rollup)
            await conn.execute(sql.SQL(DELETE_GROUPS).format(rollup=table), params)
            await conn.execute(
                sql.SQL(RECOMPUTE_GROUPS).format(rollup=table, metrics=metrics), params
            )
