"""Synthetic load for bench/panels.py: a merged province's dossiers, documents and field reports
and their events, generated inside PostgreSQL (generate_series), consistent with each other and
arriving in time order; then the rollups and event counts the worker would keep."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from rich.console import Console

from ioc.core.db import connect
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres

console = Console(stderr=True)


def start_tuned(postgres: Postgres, shared_buffers: str) -> None:
    """Start PostgreSQL with production's shared buffers and WAL room for the bulk loads."""
    postgres.start()
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
    postgres.stop()
    postgres.start()

# A merged province: ~150 communes/wards, each with its People's Committee (UBND) handling
# its own dossiers, and ~20 provincial departments (sở) handling the rest.
COMMUNES, AGENCIES = 148, 20
# Share of the events and events per entity, by kind.
SHARES = {"dossier": (0.60, 4), "document": (0.25, 3), "field_report": (0.15, 3)}

# Entities arrive in time order, as the worker inserts them (with some minutes of jitter).
ARRIVAL = ("now() - interval '1 day' * {days} * (1 - (i - random()) / {n})"
           " - interval '20 minutes' * random()")
UNIT = """lpad((2500 + ({i}::bigint * 7919) % {communes})::text, 5, '0')"""

DOSSIERS = """
INSERT INTO dossiers (dossier_code, province_code, commune_code, agency_code, agency_name,
    procedure_code, procedure_name, field_code, status, channel, submitted_at, received_at,
    due_at, finished_at, digitized, fee_required, paid_online, satisfaction, complaint,
    first_occurred_at, last_occurred_at, events)
SELECT 'H25.' || lpad(i::text, 9, '0'), '25',
       CASE WHEN i % 10 = 0 THEN '' ELSE {unit} END,
       CASE WHEN i % 10 = 0 THEN 'SO' || (i % {agencies}) ELSE 'UB' || {unit} END,
       CASE WHEN i % 10 = 0 THEN 'Sở ' || (i % {agencies}) ELSE 'UBND xã ' || {unit} END,
       'TTHC' || (i % 300), 'Thủ tục ' || (i % 300), 'LV' || (i % 20),
       status, CASE WHEN random() < 0.7 THEN 2 ELSE 1 END,
       received - interval '1 hour' * random(), received, received + due_days, finished,
       random() < 0.8, fee, fee AND random() < 0.6,
       CASE WHEN r < 0.05 THEN 'unsatisfied' WHEN r < 0.6 THEN 'satisfied' END, r < 0.01,
       received - interval '1 hour', greatest(received, coalesce(finished, received)), {per}
FROM (
    SELECT i, received, due_days, r, random() < 0.4 AS fee,
           CASE WHEN open THEN (ARRAY[1, 2, 4, 5, 6])[1 + i % 5]
                WHEN r2 < 0.03 THEN 3 WHEN r2 < 0.05 THEN 7 WHEN r2 < 0.06 THEN 8
                ELSE 9 + i % 2 END AS status,
           CASE WHEN NOT open AND r2 >= 0.06
                THEN least(received + due_days * (0.3 + random()), now()) END AS finished
    FROM (
        SELECT i, received, interval '1 day' * (1 + i % 15) AS due_days, random() AS r,
               random() AS r2,
               random() < CASE WHEN received > now() - interval '15 days' THEN 0.6
                               ELSE 0.03 END AS open
        FROM (SELECT i, {arrival} AS received
              FROM generate_series({start}, {stop}) i) g
    ) a
) b
"""

DOCUMENTS = """
INSERT INTO documents (document_id, province_code, commune_code, agency_code, agency_name,
    status, status_at, direction, signed, deadline, document_type, meta_at, completed_at,
    first_occurred_at, last_occurred_at, events)
SELECT 'VB' || lpad(i::text, 10, '0'), '25', CASE WHEN i % 3 = 0 THEN '' ELSE {unit} END,
       CASE WHEN i % 3 = 0 THEN 'SO' || (i % {agencies}) ELSE 'UB' || {unit} END,
       CASE WHEN i % 3 = 0 THEN 'Sở ' || (i % {agencies}) ELSE 'UBND xã ' || {unit} END,
       status, least(first + interval '2 days', now()),
       CASE WHEN i % 2 = 0 THEN 'incoming' ELSE 'outgoing' END, random() < 0.85,
       first + interval '1 day' * (3 + i % 10), 'CV', first,
       CASE WHEN status = '06' THEN least(first + interval '1 day' * 12 * random(), now()) END,
       first, least(first + interval '2 days', now()), {per}
FROM (SELECT i, {arrival} AS first,
             (ARRAY['01', '02', '03', '04', '05', '06', '06', '06', '06', '15'])[1 + i % 10]
             AS status
      FROM generate_series({start}, {stop}) i) g
"""

REPORTS = """
INSERT INTO field_reports (service_request_id, province_code, commune_code, agency_code,
    agency_name, service_code, service_name, service_group, status, lat, long,
    requested_datetime, updated_datetime, expected_datetime, resolved_at,
    first_occurred_at, last_occurred_at, events)
SELECT 'PA' || lpad(i::text, 10, '0'), '25', {unit}, 'UB' || {unit}, 'UBND xã ' || {unit},
       'S' || (i % 25), 'Dịch vụ ' || (i % 25), 'Đô thị',
       status, 21.3 + random() / 5, 105.2 + random() / 5, requested,
       least(requested + interval '1 day', now()), requested + interval '3 days',
       CASE WHEN status IN ('fixed', 'closed')
            THEN least(requested + interval '1 hour' * 72 * random(), now()) END,
       requested, least(requested + interval '1 day', now()), {per}
FROM (SELECT i, {arrival} AS requested,
             CASE WHEN random() < 0.1
                  THEN (ARRAY['open', 'investigating', 'in_progress'])[1 + i % 3]
                  ELSE (ARRAY['fixed', 'closed', 'closed', 'duplicate'])[1 + i % 4] END AS status
      FROM generate_series({start}, {stop}) i) g
"""

# Events of the entities just loaded: `events` per entity, first to last occurrence.
EVENTS = """
INSERT INTO events (occurred_at, event_id, kind, entity_id, source, province_code,
                    commune_code, agency_code, status, ingested_at, body)
SELECT at, gen_random_uuid(), '{kind}', e.{key}, '{source}', e.province_code, e.commune_code,
       e.agency_code, e.status::text, at + interval '2 seconds',
       jsonb_build_object('kind', '{kind}', 'source', '{source}', 'occurred_at', at,
                          'unit', jsonb_build_object('province_code', e.province_code,
                                                     'commune_code', e.commune_code),
                          'agency', jsonb_build_object('code', e.agency_code,
                                                       'name', e.agency_name),
                          'payload', jsonb_build_object('id', e.{key}, 'status', e.status))
FROM {table} e, generate_series(0, e.events - 1) j,
     LATERAL (SELECT e.first_occurred_at + (e.last_occurred_at - e.first_occurred_at)
                     * j / greatest(e.events - 1, 1) AS at) t
WHERE e.{key} >= %s AND e.{key} < %s
"""
KINDS = {"dossier": ("dossiers", "dossier_code", "dvc", "H25.", DOSSIERS, 9),
         "document": ("documents", "document_id", "lgsp-edoc", "VB", DOCUMENTS, 10),
         "field_report": ("field_reports", "service_request_id", "open311", "PA", REPORTS, 10)}

ROLLUP = """
INSERT INTO {rollup} (bucket, kind, province_code, commune_code, agency_code, metric, value)
SELECT time_bucket(interval '{width}', anchor_at), '{kind}', province_code, commune_code,
       agency_code, metric, sum(value)
FROM {kind}_metrics GROUP BY 1, 3, 4, 5, 6 HAVING sum(value) <> 0
"""
COUNTS = """
INSERT INTO {table} (bucket, {by}, events)
SELECT time_bucket(interval '{width}', occurred_at), {by}, count(*)
FROM events GROUP BY 1, {by}
"""
# The worker's count tables on plain PostgreSQL (streams/store.py, COUNT_TABLES).
COUNT_TABLES = (("kind_counts_minute", "1 minute", "kind, source"),
                ("kind_counts_hour", "1 hour", "kind, source"))


def plan(events: int) -> dict[str, tuple[int, int, int]]:
    """kind -> (entities, events per entity, events); totals exactly `events` (± a few)."""
    counts = {}
    for kind, (share, per) in SHARES.items():
        n = max(1, round(events * share / per))
        counts[kind] = (n, per, n * per)
    return counts


def load(settings: Settings, events: int, days: int, chunk: int = 250_000) -> dict[str, Any]:
    """The state tables, their events, rollups and counts; returns what was loaded."""
    started, loaded = time.monotonic(), 0
    with connect(settings, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SELECT setseed(0.42)")
        for kind, (n, per, _) in plan(events).items():
            table, key, source, prefix, insert, width = KINDS[kind]
            step = max(1, chunk // per)
            for start in range(1, n + 1, step):
                stop = min(n, start + step - 1)
                conn.execute(insert.format(
                    unit=UNIT.format(i="i", communes=COMMUNES), agencies=AGENCIES, per=per,
                    arrival=ARRIVAL.format(days=days, n=n), start=start, stop=stop))
                low, high = (f"{prefix}{i:0{width}d}" for i in (start, stop + 1))
                conn.execute(EVENTS.format(kind=kind, key=key, source=source, table=table),
                             (low, high))
                loaded += (stop - start + 1) * per
                rate = loaded / (time.monotonic() - started)
                console.print(f"  {loaded:>12,} / {events:,} events ({rate:,.0f}/s)", end="\r")
        console.print()
        console.print("rollups and event counts, as the worker keeps them…")
        rollups = {t: w for t, w in (("rollup_minute", "1 minute"), ("rollup_hour", "1 hour"))
                   if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]}
        for kind in KINDS:
            for rollup, width in rollups.items():
                conn.execute(ROLLUP.format(rollup=rollup, width=width, kind=kind))
        for table, width, by in COUNT_TABLES:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:
                conn.execute(COUNTS.format(table=table, width=width, by=by))
        conn.execute("INSERT INTO worker_status (instance_id, started_at, heartbeat_at, counters)"
                     " VALUES ('bench-1', now() - interval '1 day', now(),"
                     " '{\"dead_letters\": {\"ioc.dossiers\": 12}}')")
        console.print("vacuum analyze, checkpoint…")
        conn.execute("VACUUM ANALYZE")
        # Written out now, not by the next timed checkpoint in the middle of a measurement.
        conn.execute("CHECKPOINT")
        sizes = dict(conn.execute(
            "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = relnamespace"
            " WHERE nspname = %s AND relkind = 'r'", (settings.database_schema,)).fetchall())
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "dossiers", "documents", "field_reports", *rollups,
                          *(t for t, _, _ in COUNT_TABLES))}
    return {"seconds": round(time.monotonic() - started), "rows": rows,
            "mb": {t: round(b / 2**20) for t, b in sizes.items() if b > 2**20}}
