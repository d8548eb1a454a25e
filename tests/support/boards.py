"""What the dashboard tests share: a generated dashboard's queries, run as Grafana would, on a
schema holding the scenario; the grid; and the checks every drill-down dashboard passes."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from dashboards.macros import Context, Variable, expand
from ioc.core.db import connect, migrate
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.store import load
from tests.support.timescaledb import TimescaleServer, fresh_settings

Board = dict[str, Any]
T = TypeVar("T")

WALL_ROWS = 26  # grid rows visible on a 1920×1080 wall in kiosk mode (30 px + 8 px margin)
HOURS = [("< 4 giờ", 0, 4), ("4–8 giờ", 4, 8), ("8–24 giờ", 8, 24), ("1–3 ngày", 24, 72),
         ("3–7 ngày", 72, 168), ("≥ 7 ngày", 168, float("inf"))]
PERIODS = ["day", "week", "month", "quarter", "year"]


def queries(board: Board) -> list[str]:
    """Every panel query of a dashboard (its JSON form)."""
    return [t["rawSql"] for p in board["panels"] for t in p["targets"]]


def run(conn: psycopg.Connection, sql: str, ctx: Context) -> tuple[list[str], list[tuple]]:
    """A panel or variable query after Grafana's macro expansion: its columns and rows."""
    cursor = conn.execute(expand(sql, ctx))
    rows = cursor.fetchall()
    return [c.name for c in cursor.description or []], rows


def variable(spec: dict[str, Any], value: str | None, options: list[str]) -> Variable:
    """A dashboard variable (its JSON form) set to `value` among `options`."""
    return Variable(spec["name"], value, options=options, multi=spec["multi"],
                    include_all=spec["includeAll"], all_value=spec.get("allValue"))


def walk(node: object) -> Iterator[dict[str, Any]]:
    """Every JSON object in a dashboard, nested ones included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def covered_cells(board: Board, max_rows: int | None = None) -> set[tuple[int, int]]:
    """The grid cells the panels cover, checking unique ids, 24 columns, no overlap and,
    with `max_rows`, the height."""
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24, p["title"]
        assert max_rows is None or g["y"] + g["h"] <= max_rows, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps"
        cells |= mine
    return cells


def assert_each_query_filters(board: Board, names: list[str]) -> None:
    """Every query of every panel filters on each of these variables (`$name::text`)."""
    for panel in board["panels"]:
        for name in names:
            assert all(re.search(rf"\${name}::text\b", t["rawSql"]) for t in panel["targets"]), (
                panel["title"], name)


def trended(board: Board) -> list[str]:
    """The titles of the panels whose period follows the `trend` variable."""
    return [p["title"] for p in board["panels"] if "'$trend'" in p["targets"][0]["rawSql"]]


def assert_hours_left_coloured(panel: dict[str, Any], column: str) -> None:
    """The "hours left" column: red text below 0 (overdue), orange from 0 (due soon)."""
    (override,) = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": column}
    props = {p["id"]: p["value"] for p in override["properties"]}
    assert props["custom.cellOptions"] == {"type": "color-text"}
    assert props["color"] == {"mode": "thresholds"}
    assert props["thresholds"]["steps"] == [{"color": "red", "value": None},
                                            {"color": "orange", "value": 0}]


# --- values, from the ground truth and as the database gives them -----------------------------

def plain(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else value


def as_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    assert isinstance(value, Decimal | float | int)  # epoch seconds (no TimescaleDB macro)
    return datetime.fromtimestamp(float(value), UTC)


def period_start(moment: datetime, unit: str) -> datetime:
    """PostgreSQL's date_trunc(unit, moment, 'Asia/Ho_Chi_Minh'), as UTC."""
    local = moment.astimezone(scenario.VIETNAM).replace(hour=0, minute=0, second=0,
                                                        microsecond=0)
    match unit:
        case "week":
            local -= timedelta(days=local.weekday())
        case "month":
            local = local.replace(day=1)
        case "quarter":
            local = local.replace(month=(local.month - 1) // 3 * 3 + 1, day=1)
        case "year":
            local = local.replace(month=1, day=1)
    return local.astimezone(UTC)


def by_attribute(items: Iterable[T], key: str) -> dict[str, list[T]]:
    """The items by the value of one attribute, in its order (a table's GROUP BY)."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[getattr(item, key)].append(item)
    return dict(sorted(groups.items()))


def time_ranges(sc: scenario.Scenario, days: int, recent: int) -> list[datetime]:
    """The starts of two time ranges, off the minute grid: the whole scenario (`days` back)
    and its last `recent` days."""
    return [sc.now - timedelta(days=days, microseconds=250_000),
            sc.now - timedelta(days=recent) + timedelta(minutes=17, seconds=3)]


def options(conn: psycopg.Connection, board: Board, sc: scenario.Scenario, agencies: set[str],
            ctx: Context) -> tuple[list[str], list[str], list[str]]:
    """The communes, agencies and former districts a drill-down offers, checked against the
    scenario: every commune with data, the agencies given, every former district."""
    specs = {v["name"]: v for v in board["templating"]["list"]}
    rows = conn.execute(expand(specs["commune"]["query"], ctx)).fetchall()
    communes = [r[0] for r in rows]
    assert communes == sorted({d.commune for d in sc.dossiers} | {r.commune for r in sc.reports})
    columns, rows = run(conn, specs["agency"]["query"], ctx)
    assert columns == ["__value", "__text"]
    assert rows == [(a, f"Cơ quan {a} ({a})") for a in sorted(agencies)]
    codes = [r[0] for r in rows]
    columns, rows = run(conn, specs["former_district"]["query"], ctx)
    assert columns == ["__value", "__text"]
    assert rows == [(c, f"Huyện cũ {c}") for c in scenario.FORMER_DISTRICTS]
    return communes, codes, [r[0] for r in rows]


# --- a schema holding the scenario --------------------------------------------------------

def loaded(settings: Settings, sc: scenario.Scenario, timescaledb: bool) -> Settings:
    """A migrated schema holding the scenario, on the kind of database the test says."""
    migrate(settings)
    with connect(settings) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchall()
    assert bool(found) == timescaledb
    load(settings, sc)
    return settings


def on_timescaledb(server: TimescaleServer, sc: scenario.Scenario) -> Settings:
    return loaded(fresh_settings(server.url), sc, timescaledb=True)
