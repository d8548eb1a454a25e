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
each after one warm-up run. It prints p50/p95 per query and whether each dashboard meets the
target, every query <= 100 ms at p95 (the wall, the overview, and every drill-down; `--json`
carries every query's figures and a pass/fail per dashboard). A query the schema cannot run
is reported.
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
from synthetic import load, start_tuned  # bench/ is the script's folder

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
NICE = [timedelta(seconds=s) for s in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600,
                                       3 * 3600, 6 * 3600, 12 * 3600, 86400)]

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
    cpu_ms: float = math.nan  # the server process's CPU time per run (mean; 10 ms ticks)
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


def cpu_s(process: psutil.Process) -> float:
    used = process.cpu_times()
    return used.user + used.system


def measure(settings: Settings, repeat: int, budget: float, only: str = "") -> list[Result]:
    now = datetime.now(UTC)
    results = []
    with connect(settings, autocommit=True) as conn:
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        for path in sorted((ROOT / "dashboards" / "json").glob("*.json")):
            if only not in path.stem:
                continue
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
                                      f"{results[-1].error}", highlight=False, markup=False)
                        continue
                    cpu = 0.0
                    for i in range(repeat + 1):
                        began, used = time.perf_counter(), cpu_s(backend)
                        rows = len(conn.execute(sql).fetchall())
                        if i:  # the first run warms the caches
                            times.append(1000 * (time.perf_counter() - began))
                            cpu += cpu_s(backend) - used
                        spent += time.perf_counter() - began
                        if len(times) >= 3 and spent > budget:  # a slow query: enough runs
                            break
                    results.append(Result(path.stem, label, name, round(quantile(times, .5), 1),
                                          round(quantile(times, .95), 1), round(max(times), 1),
                                          rows, path.name == WALL,
                                          round(1000 * cpu / len(times), 1), sql))
                    console.print(f"  {path.stem}: {label} [{name}] p95 "
                                  f"{results[-1].p95_ms} ms", highlight=False, markup=False)
    return results


def verdicts(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per dashboard: its queries (× ranges), how many miss the target, the worst p95, and
    whether every one meets it (a query that failed does not)."""
    found: dict[str, dict[str, Any]] = {}
    for name in sorted({r.dashboard for r in results}):
        mine = [r for r in results if r.dashboard == name]
        worst = max((r.p95_ms for r in mine if not r.error), default=None)
        over = sum(not r.p95_ms <= TARGET_MS for r in mine)
        found[name] = {"queries": len(mine), "over_target": over, "worst_p95_ms": worst,
                       "pass": over == 0}
    return found


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
    parser.add_argument("--explain", action="store_true", help="plans of the slow queries")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default="", help="dashboards whose file name holds this")
    args = parser.parse_args()
    configure("WARNING")  # logs on stderr, and few: stdout carries the figures (--json)

    root = args.keep or Path(tempfile.mkdtemp(prefix="ioc-bench-panels-"))
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    settings = Settings(database_url=postgres.url, database_schema="bench")
    loaded: dict[str, Any] = {}
    try:
        start_tuned(postgres, args.shared_buffers)
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
        results = measure(settings, args.repeat, args.budget, args.only)
        slow = [r for r in results if not r.p95_ms <= TARGET_MS]
        plans = {f"{r.query} [{r.range}]": explain(settings, r.sql)
                 for r in slow if not r.error} if args.explain else {}
    finally:
        postgres.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    wall = [r for r in results if r.wall]
    summary = {
        "events": total, "load": loaded, "repeat": args.repeat,
        "wall_queries": len(wall), "wall_over_target": sum(r.wall for r in slow),
        "wall_worst_p95_ms": max((r.p95_ms for r in wall if not r.error), default=None),
        "dashboards": verdicts(results),
        "failed": sorted({f"{r.dashboard}: {r.query}" for r in results if r.error}),
        "target_ms": TARGET_MS,
        "load_average": [round(x, 2) for x in psutil.getloadavg()],
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB,"
                   f" shared_buffers {args.shared_buffers}",
    }
    if args.json:
        print(json.dumps({"summary": summary, "plans": plans, "queries": [
            {**{k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(r).items() if k != "sql"}, "pass": r.p95_ms <= TARGET_MS}
            for r in results]},
            ensure_ascii=False))
        return
    out = Console(width=150)
    names = list(ranges(datetime.now(UTC)))
    table = Table(title=f"Panel queries on {total:,} events: p50 / p95 of {args.repeat} runs, "
                        f"ms (target: p95 <= {TARGET_MS:.0f} ms)")
    for column in ("dashboard", "query", *names, "rows", "target"):
        table.add_column(column, justify="left" if column in ("dashboard", "query") else "right")
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.dashboard, r.query), {})[r.range] = r
    for (dashboard, query), by_range in rows.items():
        worst = max(r.p95_ms for r in by_range.values())
        mark = "ok" if worst <= TARGET_MS else "SLOW"
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
