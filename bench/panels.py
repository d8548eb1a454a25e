"""Dashboard panel query benchmark on a large table (run on demand; not a test).

    .venv/bin/python bench/panels.py [--events 10000000] [--repeat 20] [--json] [--explain]

On a fresh embedded PostgreSQL, migrated with the real migrations (plain variant), it loads
`--events` events through generate_series: the state tables (dossiers, documents, field
reports) and their events, consistent with each other, arriving in time order over `--days`
days up to now.
It then fills the rollups and event counts with exactly what the worker's incremental upkeep
converges to (sums of the *_metrics views per bucket; counts of events per bucket), vacuums
and analyzes, and runs every panel, variable and annotation query of every dashboard
(dashboards/json), expanded by dashboards/macros.py as Grafana would for "last 24 hours",
"today" and "last 30 days" with every variable at its saved value ("All"), `--repeat` times
each after one warm-up run. It prints p50/p95 per query and whether the wall (the overview)
meets its target: every query <= 100 ms at p95. A query the schema cannot run is reported.
`--keep DIR` keeps the database to measure again without loading (new migrations apply).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from dashboards.macros import Context, Variable, expand
from ioc.core.db import connect, migrate
from ioc.core.logs import configure
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres, free_port

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[1]
WALL = "overview.json"
TARGET_MS = 100.0
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
# A merged province: ~150 communes/wards, each with its People's Committee (UBND) handling
# its own dossiers, and ~20 provincial departments (sở) handling the rest.
COMMUNES, AGENCIES = 148, 20
# Share of the events and events per entity, by kind.
SHARES = {"dossier": (0.60, 4), "document": (0.25, 3), "field_report": (0.15, 3)}
NICE = [timedelta(seconds=s) for s in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600,
                                       3 * 3600, 6 * 3600, 12 * 3600, 86400)]

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
INSERT INTO {table} (bucket, kind, source, province_code, commune_code, agency_code, events)
SELECT time_bucket(interval '{width}', occurred_at), kind, source, province_code,
       commune_code, agency_code, count(*)
FROM events GROUP BY 1, 2, 3, 4, 5, 6
"""



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
        for table, width in (("event_counts_minute", "1 minute"), ("event_counts_hour", "1 hour")):
            conn.execute(COUNTS.format(table=table, width=width))
        conn.execute("INSERT INTO worker_status (instance_id, started_at, heartbeat_at, counters)"
                     " VALUES ('bench-1', now() - interval '1 day', now(),"
                     " '{\"dead_letters\": {\"ioc.dossiers\": 12}}')")
        console.print("vacuum analyze…")
        conn.execute("VACUUM ANALYZE")
        sizes = dict(conn.execute(
            "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = relnamespace"
            " WHERE nspname = %s AND relkind = 'r'", (settings.database_schema,)).fetchall())
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "dossiers", "documents", "field_reports", *rollups,
                          "event_counts_minute")}
    return {"seconds": round(time.monotonic() - started), "rows": rows,
            "mb": {t: round(b / 2**20) for t, b in sizes.items() if b > 2**20}}


def nice_interval(span: timedelta, width_px: int) -> timedelta:
    """About Grafana's $__interval: the range over the panel's width, rounded up."""
    raw = span / max(width_px, 1)
    return next((step for step in NICE if step >= raw), NICE[-1])


def ranges(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    midnight = now.astimezone(LOCAL).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"last 24 h": (now - timedelta(hours=24), now),
            "today": (midnight, midnight + timedelta(days=1) - timedelta(milliseconds=1)),
            "last 30 days": (now - timedelta(days=30), now)}


@dataclass
class Result:
    dashboard: str
    query: str
    range: str
    p50_ms: float
    p95_ms: float
    max_ms: float
    rows: int
    wall: bool
    sql: str = ""
    error: str = ""


def queries(board: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(label, raw SQL, panel width in px on a 1920 px screen) of every variable query,
    annotation query and panel target."""
    found = [(f"variable ${v['name']}", v["query"], 1920)
             for v in board.get("templating", {}).get("list", []) if v.get("type") == "query"]
    found += [(f"annotation {a['name']}", a["target"]["rawSql"], 1920)
              for a in board.get("annotations", {}).get("list", [])
              if a.get("enable") and "rawSql" in a.get("target", {})]
    panels = []
    for panel in board.get("panels", []):
        panels += [panel, *panel.get("panels", [])]
    for panel in panels:
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append((panel["title"], target["rawSql"], panel["gridPos"]["w"] * 80))
    return found


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def variable(spec: dict[str, Any]) -> Variable:
    """A template variable at its saved selection (the wall's default: "All")."""
    value = spec.get("current", {}).get("value")
    chosen = None if value in ("$__all", ["$__all"]) else value
    options = [o["value"] for o in spec.get("options", []) if o["value"] != "$__all"]
    return Variable(spec["name"], chosen, options=options, multi=spec.get("multi", False),
                    include_all=spec.get("includeAll", False), all_value=spec.get("allValue"))


def measure(settings: Settings, repeat: int, budget: float) -> list[Result]:
    now = datetime.now(UTC)
    results = []
    with connect(settings, autocommit=True) as conn:
        for path in sorted((ROOT / "dashboards" / "json").glob("*.json")):
            board = json.loads(path.read_text(encoding="utf-8"))
            variables = {v["name"]: variable(v)
                         for v in board.get("templating", {}).get("list", [])}
            for label, raw, width in queries(board):
                for name, (start, end) in ranges(now).items():
                    ctx = Context(start, end, interval=nice_interval(end - start, width),
                                  timescaledb=True, variables=variables)
                    sql = expand(raw, ctx)
                    times, rows, spent = [], 0, 0.0
                    try:
                        conn.execute(sql).fetchall()
                    except psycopg.Error as error:  # a query the schema cannot run: say so
                        results.append(Result(path.stem, label, name, math.nan, math.nan,
                                              math.nan, 0, path.name == WALL, sql,
                                              error=str(error).splitlines()[0]))
                        console.print(f"  {path.stem}: {label} [{name}] failed: "
                                      f"{results[-1].error}", highlight=False)
                        continue
                    for i in range(repeat + 1):
                        began = time.perf_counter()
                        rows = len(conn.execute(sql).fetchall())
                        if i:  # the first run warms the caches
                            times.append(1000 * (time.perf_counter() - began))
                        spent += time.perf_counter() - began
                        if len(times) >= 3 and spent > budget:  # a slow query: enough runs
                            break
                    results.append(Result(path.stem, label, name, round(quantile(times, .5), 1),
                                          round(quantile(times, .95), 1), round(max(times), 1),
                                          rows, path.name == WALL, sql))
                    console.print(f"  {path.stem}: {label} [{name}] p95 "
                                  f"{results[-1].p95_ms} ms", highlight=False)
    return results


def explain(settings: Settings, sql: str) -> str:
    with connect(settings, autocommit=True) as conn:
        plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}").fetchall()
    return "\n".join(r[0] for r in plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=365, help="events spread over these days")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query")
    parser.add_argument("--budget", type=float, default=5,
                        help="seconds per query after which 3 runs are enough")
    parser.add_argument("--shared-buffers", default="1GB")
    parser.add_argument("--keep", type=Path, help="keep the database here and reuse it")
    parser.add_argument("--explain", action="store_true", help="plans of slow wall queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure("WARNING")  # logs on stderr, and few: stdout carries the figures (--json)

    root = args.keep or Path(tempfile.mkdtemp(prefix="ioc-bench-panels-"))
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    settings = Settings(database_url=postgres.url, database_schema="bench")
    loaded: dict[str, Any] = {}
    try:
        postgres.start()
        with connect(settings, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
            conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
        postgres.stop()
        postgres.start()
        with connect(settings, autocommit=True) as conn:
            fresh = conn.execute("SELECT to_regclass('bench.events') IS NULL").fetchone()[0]
        migrate(settings)
        if fresh:
            console.print(f"loading {args.events:,} events over {args.days} days…")
            loaded = load(settings, args.events, args.days)
        else:
            console.print(f"reusing the database in {root}")
        with connect(settings) as conn:
            total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        console.print(f"running every query {args.repeat} times…")
        results = measure(settings, args.repeat, args.budget)
        slow = [r for r in results if r.wall and not r.p95_ms <= TARGET_MS]
        plans = {f"{r.query} [{r.range}]": explain(settings, r.sql)
                 for r in slow if not r.error} if args.explain else {}
    finally:
        postgres.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    wall = [r for r in results if r.wall]
    summary = {
        "events": total, "load": loaded, "repeat": args.repeat,
        "wall_queries": len(wall), "wall_over_target": len(slow),
        "wall_worst_p95_ms": max((r.p95_ms for r in wall if not r.error), default=None),
        "failed": sorted({f"{r.dashboard}: {r.query}" for r in results if r.error}),
        "target_ms": TARGET_MS,
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB,"
                   f" shared_buffers {args.shared_buffers}",
    }
    if args.json:
        print(json.dumps({"summary": summary, "plans": plans, "queries": [
            {k: None if isinstance(v, float) and math.isnan(v) else v
             for k, v in asdict(r).items() if k != "sql"} for r in results]},
            ensure_ascii=False))
        return
    out = Console(width=150)
    names = list(ranges(datetime.now(UTC)))
    table = Table(title=f"Panel queries on {total:,} events: p50 / p95 of {args.repeat} runs, "
                        f"ms (wall target: p95 <= {TARGET_MS:.0f} ms)")
    for column in ("dashboard", "query", *names, "rows", "wall"):
        table.add_column(column, justify="left" if column in ("dashboard", "query") else "right")
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.dashboard, r.query), {})[r.range] = r
    for (dashboard, query), by_range in rows.items():
        worst = max(r.p95_ms for r in by_range.values())
        wall = next(iter(by_range.values())).wall
        mark = ("ok" if worst <= TARGET_MS else "SLOW") if wall else ""
        if any(r.error for r in by_range.values()):
            mark = "FAILED: " + next(r.error for r in by_range.values() if r.error)
        table.add_row(dashboard, query,
                      *(f"{by_range[n].p50_ms:.1f} / {by_range[n].p95_ms:.1f}" for n in names),
                      str(by_range[names[-1]].rows), mark)
    out.print(table)
    for title, text in plans.items():
        out.print(f"\n[bold]{title}[/bold]\n{text}", highlight=False)
    out.print_json(data=summary)


if __name__ == "__main__":
    main()
