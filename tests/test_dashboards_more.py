"""The league table (dashboards/ranking.py) and pipeline health (dashboards/pipeline.py)
dashboards: structure, and every panel and variable query expanded as Grafana would and run on
real PostgreSQL and real TimescaleDB, with values computed here from the scenario's ground truth
(Decision 766 points in Python from `scenario.dossiers`, event rates from the events' own
`occurred_at`), never from the SQL under test."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grafana_foundation_sdk.models import dashboard as model

from dashboards import build as builder
from dashboards import pipeline, ranking
from dashboards.macros import Context, Variable, expand
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.db import connect
from ioc.settings import Settings
from tests import scenario
from tests.test_dashboards import (
    WALL_ROWS,
    as_time,
    covered_cells,
    loaded,
    on_timescaledb,
    plain,
    walk,
)
from tests.timescaledb import TimescaleServer

Board = dict[str, Any]
BOARDS = {"ranking": ranking.build, "pipeline": pipeline.build}
# Decision 766 groups measured: rate -> (target %, points).
GROUPS = {"on_time_rate": (99, 20), "digitized_rate": (90, 22), "online_rate": (80, 22),
          "satisfaction_rate": (95, 18)}
CENT = Decimal("0.01")
ALIVE, LOST = "Hoạt động", "Mất tín hiệu"


@pytest.fixture(scope="module", params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> Board:
    return to_dict(BOARDS[request.param]())


def queries(board: Board) -> list[str]:
    return [t["rawSql"] for p in board["panels"] for t in p["targets"]]


# --- structure ----------------------------------------------------------------------------

def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    assert builder.check() == []
    names = [p.name for p in builder.build(tmp_path)]
    assert {"ranking.json", "pipeline.json"} <= set(names)
    for name in ("ranking.json", "pipeline.json"):
        committed = builder.JSON_DIR / name
        assert committed.read_text(encoding="utf-8") == (tmp_path / name).read_text("utf-8")
        (tmp_path / name).write_text("{}", encoding="utf-8")
        assert tmp_path / name in builder.check(tmp_path)


def test_panel_ids_unique_grid_within_24_columns_without_overlap(board: Board) -> None:
    cells = covered_cells(board, WALL_ROWS)
    assert len(cells) == 24 * WALL_ROWS - 24  # a full wall: only the last row is free


def test_every_datasource_is_the_provisioned_one(board: Board) -> None:
    refs = [n["datasource"] for n in walk(board) if "datasource" in n]
    assert len(refs) >= 2 * len(board["panels"]) + len(board["templating"].get("list", []))
    assert all(r == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID} for r in refs)


def test_every_template_variable_is_used(board: Board) -> None:
    names = [v["name"] for v in board.get("templating", {}).get("list", [])]
    assert names == (["commune"] if board["uid"] == ranking.UID else [])
    sql = "\n".join(queries(board))
    for name in names:
        assert re.search(rf"\$\{{{name}(:\w+)?\}}|\${name}\b|\[\[{name}\]\]", sql), name


def test_load_and_resave_through_the_sdk_keeps_every_key(board: Board) -> None:
    assert to_dict(model.Dashboard.from_json(board)) == board
    typo = json.loads(json.dumps(board))
    typo["panels"][0]["fieldConfig"]["defaults"]["tresholds"] = {"mode": "absolute"}
    assert to_dict(model.Dashboard.from_json(typo)) != typo


def test_settings_titles_and_no_personal_data(board: Board) -> None:
    assert board["uid"] in (ranking.UID, pipeline.UID) and board["editable"] is False
    assert board["refresh"] in ("10s", "15s", "20s", "30s", "1m")
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board.get("templating", {}).get("list", [])]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    allowed = {ranking.UID: {"kpi_agency_ranking", "kpi_commune_ranking"},
               pipeline.UID: {"event_counts_minute", "worker_status"}}[board["uid"]]
    for sql in queries(board):  # aggregates and heartbeats only, nothing per person
        sources = set(re.findall(r"(?<!epoch )\bFROM\s+(\w+)", sql)) - {"jsonb_each_text"}
        assert sources <= allowed, sql
    if board["uid"] == ranking.UID:
        assert board["title"].endswith("Xếp hạng cơ quan")
        for panel in board["panels"]:
            assert panel["type"] == "table"
            assert panel["options"]["sortBy"] == [{"displayName": "Hạng", "desc": False}]
    else:
        assert board["title"].endswith("Sức khỏe hệ thống")


# --- ground truth -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=70, documents=40, reports=30, malformed=False)


def points(rate: float | None, target: int, most: int) -> Decimal | None:
    """766: full points at or above the target, else rate / target × points (2 decimals)."""
    if rate is None:
        return None
    if rate >= target:
        return Decimal(most)
    return (Decimal(str(rate)) * most / target).quantize(CENT, ROUND_HALF_UP)


def league(sc: scenario.Scenario, key: str, names: dict[str, str] | None) -> list[tuple]:
    """Rows of the league table per `key` (agency, commune), in the panel's column order."""
    groups: dict[str, list[scenario.Dossier]] = defaultdict(list)
    for d in sc.dossiers:
        groups[getattr(d, key)].append(d)
    rows = []
    for code, dossiers in groups.items():
        k = scenario.Scenario(now=sc.now, dossiers=dossiers).expected_dossier_kpis()
        rates = [k[r] for r in ranking.COLUMNS.values() if r.endswith("_rate")]
        earned = [points(k[r], *GROUPS[r]) for r in ranking.COLUMNS.values()
                  if r.endswith("_rate")]
        total = sum((p or Decimal(0) for p in earned), Decimal(0))
        label = [code, names[code]] if names is not None else [code]
        rows.append([*label, k["received"], k["to_handle"], *rates,
                     *(None if p is None else float(p) for p in earned), float(total)])
    totals = sorted((r[-1] for r in rows), reverse=True)
    ranked = [(totals.index(r[-1]) + 1, *r) for r in rows]  # equal totals share a rank
    return sorted(ranked, key=lambda r: (r[0], r[1]))


def events(sc: scenario.Scenario) -> list[dict[str, Any]]:
    unique = {}
    for _, _, value in sc.messages:
        event = json.loads(value)
        unique[event["event_id"]] = event
    return list(unique.values())


def minute(event: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
    return at.replace(second=0, microsecond=0)


def expected_rates(sc: scenario.Scenario, column: str, start: datetime, end: datetime,
                   interval: timedelta) -> dict[tuple[datetime, str], float]:
    """Events per minute per kind/source, averaged over buckets of `interval`, for the minute
    buckets `$__timeFilter(bucket)` keeps."""
    width = int(interval.total_seconds())
    counts: Counter[tuple[datetime, str]] = Counter()
    for event in events(sc):
        at = minute(event)
        if start <= at <= end:
            epoch = int(at.timestamp()) // width * width
            counts[datetime.fromtimestamp(epoch, UTC), event[column]] += 1
    per = Decimal(60_000) / max(interval // timedelta(milliseconds=1), 60_000)
    return {key: float((n * per).quantize(CENT, ROUND_HALF_UP)) for key, n in counts.items()}


def events_in(sc: scenario.Scenario, start: datetime, end: datetime) -> int:
    return sum(start <= minute(e) <= end for e in events(sc))


# --- every query on real servers ----------------------------------------------------------

def run(conn: psycopg.Connection, sql: str, ctx: Context) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(expand(sql, ctx))
    rows = cursor.fetchall()
    return [c.name for c in cursor.description or []], rows


def check_ranking(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(ranking.build())
    end = sc.now + timedelta(minutes=5)
    ranges = [sc.now - timedelta(days=41, microseconds=250_000),
              sc.now - timedelta(days=10) + timedelta(minutes=17, seconds=3)]
    names = {d.agency: f"Cơ quan {d.agency}" for d in sc.dossiers}
    agencies, communes = board["panels"]
    with connect(settings) as conn:
        (spec,) = board["templating"]["list"]
        rows = conn.execute(expand(spec["query"], Context(ranges[0], end))).fetchall()
        options = [r[0] for r in rows]
        assert options == sorted({d.commune for d in sc.dossiers} | {r.commune for r in sc.reports})
        for start in ranges:
            for ward in (None, options[1]):
                commune = Variable("commune", ward, options=options, multi=spec["multi"],
                                   include_all=spec["includeAll"], all_value=spec["allValue"])
                by_agency = league(sc.subset(commune=ward, since=start), "agency", names)
                by_commune = league(sc.subset(since=start), "commune", None)
                assert by_agency and len(by_commune) == len(scenario.COMMUNES)
                for timescaledb in (True, False):
                    ctx = Context(start, end, timescaledb=timescaledb,
                                  variables={"commune": commune})
                    where = (start, ward, timescaledb)
                    columns, rows = run(conn, agencies["targets"][0]["rawSql"], ctx)
                    assert columns == ["Hạng", "Mã cơ quan", "Cơ quan", *ranking.COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == by_agency, where
                    columns, rows = run(conn, communes["targets"][0]["rawSql"], ctx)
                    assert columns == ["Hạng", "Mã xã/phường", *ranking.COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == by_commune, where


WORKERS = [  # instance, heartbeat age (s), counters
    ("worker-a", 2, {"events_stored": {"dossiers": 10, "documents": 5},
                     "dead_letters": {"dossiers": 1}}),
    ("worker-b", 600, {"events_stored": {"field_reports": 7}, "dead_letters": {}}),
    ("worker-c", 3, {}),
]


def beat(conn: psycopg.Connection) -> dict[str, tuple[datetime, datetime]]:
    """Write the workers' heartbeats now; returns instance -> (started, heartbeat)."""
    now = datetime.now(UTC)
    written = {}
    for instance, age, counters in WORKERS:
        started, heartbeat = now - timedelta(hours=1), now - timedelta(seconds=age)
        conn.execute("INSERT INTO worker_status VALUES (%s, %s, %s, %s::jsonb)"
                     " ON CONFLICT (instance_id) DO UPDATE SET started_at = excluded.started_at,"
                     " heartbeat_at = excluded.heartbeat_at, counters = excluded.counters",
                     (instance, started, heartbeat, json.dumps(counters)))
        written[instance] = (started, heartbeat)
    conn.commit()
    return written


def check_pipeline(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(pipeline.build())
    panels = {p["title"]: p["targets"][0] for p in board["panels"]}
    assert board.get("templating", {}).get("list", []) == []
    end = sc.now + timedelta(minutes=5)
    ranges = [sc.now - timedelta(days=41, microseconds=250_000),
              sc.now - timedelta(days=10) + timedelta(minutes=17, seconds=3)]
    with connect(settings) as conn:
        for start in ranges:
            for interval in (timedelta(minutes=1), timedelta(hours=1)):
                expected = {"kind": expected_rates(sc, "kind", start, end, interval),
                            "source": expected_rates(sc, "source", start, end, interval)}
                assert {k for _, k in expected["kind"]} == {"dossier", "document",
                                                            "field_report"}
                for timescaledb in (True, False):
                    ctx = Context(start, end, interval=interval, timescaledb=timescaledb)
                    where = (start, interval, timescaledb)
                    for title, column in (("Sự kiện mỗi phút theo loại", "kind"),
                                          ("Sự kiện mỗi phút theo nguồn", "source")):
                        target = panels[title]
                        assert target["format"] == "time_series"
                        columns, rows = run(conn, target["rawSql"], ctx)
                        assert columns == ["time", "metric", "value"]
                        assert [as_time(r[0]) for r in rows] == sorted(as_time(r[0])
                                                                       for r in rows)
                        got = {(as_time(t), m): plain(v) for t, m, v in rows}
                        assert got == expected[column], (title, *where)
                    _, rows = run(conn, panels["Sự kiện trong khoảng thời gian"]["rawSql"], ctx)
                    assert rows == [(events_in(sc, start, end),)], where
                    beats = beat(conn)
                    _, rows = run(conn, panels["Tiến trình xử lý hoạt động"]["rawSql"], ctx)
                    assert rows == [(2,)], where
                    _, rows = run(conn, panels["Nhịp tim gần nhất"]["rawSql"], ctx)
                    assert 2 <= plain(rows[0][0]) < 2 + 10, where
                    _, rows = run(conn, panels["Thư lỗi (từ khi khởi động)"]["rawSql"], ctx)
                    assert rows == [(1,)], where
                    columns, rows = run(conn, panels["Tiến trình xử lý (worker)"]["rawSql"], ctx)
                    assert columns == ["Tiến trình", "Khởi động lúc", "Nhịp tim gần nhất",
                                       "Tuổi nhịp tim (giây)", "Trạng thái", "Sự kiện đã lưu",
                                       "Thư lỗi"]
                    assert [r[0] for r in rows] == [w[0] for w in WORKERS]
                    for (instance, age, counters), row in zip(WORKERS, rows, strict=True):
                        started, heartbeat = beats[instance]
                        assert row[1:3] == (started, heartbeat), where
                        assert age <= plain(row[3]) < age + 10, where
                        assert row[4] == (ALIVE if age < pipeline.HEARTBEAT_LIMIT_S else LOST)
                        assert row[5:] == (sum(counters.get("events_stored", {}).values()),
                                           sum(counters.get("dead_letters", {}).values()))


def check_points_function(settings: Settings) -> None:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT ioc_766_points(99, 99, 20), ioc_766_points(100, 99, 20),"
            " ioc_766_points(85.71, 90, 22), ioc_766_points(0, 80, 22),"
            " ioc_766_points(NULL, 95, 18)").fetchall()
    assert [tuple(map(plain, r)) for r in rows] == [
        (20.0, 20.0, float(points(85.71, 90, 22)), 0.0, None)]
    assert points(85.71, 90, 22) == Decimal("20.95")


def check_all(settings: Settings, sc: scenario.Scenario) -> None:
    check_points_function(settings)
    check_ranking(settings, sc)
    check_pipeline(settings, sc)


def test_every_query_on_plain_postgresql(settings: Settings, sc: scenario.Scenario) -> None:
    check_all(loaded(settings, sc, timescaledb=False), sc)


def test_every_query_on_timescaledb(timescale: TimescaleServer, sc: scenario.Scenario) -> None:
    check_all(on_timescaledb(timescale, sc), sc)
