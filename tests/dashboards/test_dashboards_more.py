"""The league table (dashboards/ranking.py) and pipeline health (dashboards/pipeline.py)
dashboards: structure, and every panel and variable query expanded as Grafana would and run on
real PostgreSQL and real TimescaleDB, with values computed here from the scenario's ground truth
(Decision 766 points in Python from `scenario.dossiers`, event rates from the events' own
`occurred_at`), never from the SQL under test."""

from __future__ import annotations

import json
import random
import re
import socket
import unicodedata
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg
import pytest

from dashboards import build as builder
from dashboards import pipeline, ranking
from dashboards.macros import Context, Variable, expand
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import (
    WALL_ROWS,
    Board,
    as_time,
    covered_cells,
    loaded,
    on_timescaledb,
    plain,
    queries,
    run,
    walk,
)
from tests.support.scenario import events, events_in, minute
from tests.support.services import WorkerProcess, query, wait_until
from tests.support.timescaledb import TimescaleServer

BOARDS = {"ranking": ranking.build, "pipeline": pipeline.build}
# Decision 766 groups measured: rate -> (target %, points).
GROUPS = {"on_time_rate": (99, 20), "digitized_rate": (90, 22), "online_rate": (80, 22),
          "satisfaction_rate": (95, 18)}
CENT = Decimal("0.01")
ALIVE, LOST = "Hoạt động", "Mất tín hiệu"


@pytest.fixture(scope="module", params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> Board:
    return to_dict(BOARDS[request.param]())


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
    if board["uid"] == ranking.UID:
        cells = covered_cells(board, WALL_ROWS)
        assert len(cells) == 24 * WALL_ROWS - 24  # a full wall: only the last row is free
    else:  # pipeline health scrolls: taller than a wall, but without a hole
        cells = covered_cells(board)
        assert len(cells) == 24 * (max(y for _, y in cells) + 1)


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


def test_settings_titles_and_no_personal_data(board: Board) -> None:
    assert board["uid"] in (ranking.UID, pipeline.UID) and board["editable"] is False
    assert board["refresh"] in ("10s", "15s", "20s", "30s", "1m")
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board.get("templating", {}).get("list", [])]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    allowed = {ranking.UID: {"kpi_agency_ranking", "kpi_commune_ranking"},
               pipeline.UID: {"event_counts", "worker_status", "worker_starts", "dead_letters",
                              "connector_status"}}[board["uid"]]
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
        # After the satisfaction rate: what it lacks, when no citizen evaluated a dossier.
        rates.append("chưa có dữ liệu đánh giá" if k["evaluated"] == 0
                     and k["satisfaction_rate"] is not None else None)
        earned = [points(k[r], *GROUPS[r]) for r in ranking.COLUMNS.values()
                  if r.endswith("_rate")]
        total = sum((p or Decimal(0) for p in earned), Decimal(0))
        label = [code, names[code]] if names is not None else [code]
        rows.append([*label, k["received"], k["to_handle"], *rates,
                     *(None if p is None else float(p) for p in earned), float(total)])
    totals = sorted((r[-1] for r in rows), reverse=True)
    ranked = [(totals.index(r[-1]) + 1, *r) for r in rows]  # equal totals share a rank
    return sorted(ranked, key=lambda r: (r[0], r[1]))


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


# --- every query on real servers ----------------------------------------------------------

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


WORKERS = [  # instance, heartbeat age (s), counters (dead letters per reason)
    ("worker-a", 2, {"events_stored": {"dossiers": 10, "documents": 5},
                     "dead_letters": {"invalid_json": 1}}),
    ("worker-b", 600, {"events_stored": {"field_reports": 7},
                       "dead_letters": {"invalid_json": 4, "invalid_event": 3,
                                        "rejected_by_database": 0}}),
    ("worker-c", 3, {}),
]
STARTED_AGO = {"worker-a": timedelta(hours=1), "worker-b": timedelta(days=30),
               "worker-c": timedelta(days=50)}
# Process starts per instance (ago); every start after an instance's first is a restart.
STARTS_AGO = {"worker-a": [timedelta(days=45), timedelta(days=20), timedelta(days=9),
                           timedelta(hours=1)],
              "worker-b": [timedelta(days=30)],
              "worker-c": [timedelta(days=60), timedelta(days=50)],
              "gone": [timedelta(days=40, minutes=1), timedelta(days=3), timedelta(days=2)]}
REASON_LABELS = {"invalid_json": "JSON không hợp lệ", "invalid_event": "Sự kiện không hợp lệ",
                 "rejected_by_database": "CSDL từ chối", "unmappable": "Không chuyển đổi được"}
HEALTH_LABELS = {"ok": "Bình thường", "degraded": "Đang thử lại", "silent": "Im lặng",
                 "stopped": "Đã dừng"}
KIND_LABELS = {"dossier": "Hồ sơ", "document": "Văn bản", "field_report": "Phản ánh"}


def beat(conn: psycopg.Connection) -> dict[str, tuple[datetime, datetime]]:
    """Write the workers' heartbeats now; returns instance -> (started, heartbeat)."""
    now = datetime.now(UTC)
    written = {}
    for instance, age, counters in WORKERS:
        started, heartbeat = now - STARTED_AGO[instance], now - timedelta(seconds=age)
        conn.execute("INSERT INTO worker_status VALUES (%s, %s, %s, %s::jsonb)"
                     " ON CONFLICT (instance_id) DO UPDATE SET started_at = excluded.started_at,"
                     " heartbeat_at = excluded.heartbeat_at, counters = excluded.counters",
                     (instance, started, heartbeat, json.dumps(counters)))
        written[instance] = (started, heartbeat)
    conn.commit()
    return written


def write_starts(conn: psycopg.Connection, now: datetime) -> dict[str, list[datetime]]:
    """Write worker_starts (STARTS_AGO); returns instance -> its restarts' times."""
    conn.execute("DELETE FROM worker_starts")
    restarts = {}
    for instance, agos in STARTS_AGO.items():
        starts = sorted(now - ago for ago in agos)
        for at in starts:
            conn.execute("INSERT INTO worker_starts (instance_id, started_at, host, pid)"
                         " VALUES (%s, %s, 'host', 1)", (instance, at))
        restarts[instance] = starts[1:]
    conn.commit()
    return restarts


Letter = tuple[datetime, str, str, str, str | None, int, int, int, str]


def dead_letters(now: datetime) -> list[Letter]:
    """(at, origin, reason, error, key, size, dead-letter partition, offset, origin_key),
    spread over 60 days, more than the recent list shows."""
    rng = random.Random(16)
    origins = {"t.ioc.dossiers": ("invalid_json", "invalid_event", "rejected_by_database"),
               "t.ioc.documents": ("invalid_event",), "dvcqg": ("unmappable",),
               "dvcqg_import": ("unmappable", "some_new_reason")}
    letters = []
    for i in range(90):
        origin = rng.choice(sorted(origins))
        at = now - timedelta(days=rng.choice([0, 0, 1, 5, 12, 20, 45, 60]),
                             minutes=rng.randrange(1440), microseconds=rng.randrange(10**6))
        key = None if i % 7 == 0 else f"000.00.12.H25-{i:04d}"
        letters.append((at, origin, rng.choice(origins[origin]), f"payload.status: lỗi {i}",
                        key, rng.randrange(10, 5000), i % 2, i // 2, f"k{i:03d}"))
    return letters


def write_dead_letters(conn: psycopg.Connection, letters: list[Letter]) -> None:
    conn.execute("DELETE FROM dead_letters")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (at, origin, reason, error, message_key, payload_bytes,"
            " dead_letter_partition, dead_letter_offset, origin_key)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", letters)
    conn.commit()


CONNECTOR_ROWS = [  # name, kind, health, reason, last success / last record / silent since ago
    ("zalo_oa", "field_report", "ok", None, timedelta(minutes=1), timedelta(minutes=2), None),
    ("dvcqg", "dossier", "degraded", "retrying: TransientError: 503", timedelta(minutes=7),
     timedelta(minutes=8), None),
    ("edxml", "document", "silent", "no new record since ...", timedelta(hours=2),
     timedelta(hours=3), timedelta(hours=3)),
    ("a_stopped", "dossier", "stopped", "PermanentError: 401", None, None, None),
    ("open311", "field_report", "ok", None, timedelta(seconds=30), None, None),
]


def write_connectors(conn: psycopg.Connection, now: datetime) -> list[tuple]:
    """Write connector_status; returns the panel's rows as expected (worst health first)."""
    conn.execute("DELETE FROM connector_status")
    rows = []
    for name, kind, health, reason, *times in CONNECTOR_ROWS:
        success, record, silent = (None if t is None else now - t for t in times)
        updated = now - timedelta(seconds=5)
        conn.execute("INSERT INTO connector_status (connector, kind, health, reason,"
                     " first_run_at, last_success_at, last_record_at, silent_since,"
                     " silence_seconds, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
                     " 3600, %s)", (name, kind, health, reason, now - timedelta(days=3),
                                    success, record, silent, updated))
        rows.append((name, KIND_LABELS[kind], HEALTH_LABELS[health], reason, success, record,
                     silent, updated))
    conn.commit()
    worst = ["Đã dừng", "Im lặng", "Đang thử lại", "Bình thường"]
    return sorted(rows, key=lambda r: (worst.index(r[2]), r[0]))


def expected_dead_letters(letters: list[Letter], start: datetime,
                          end: datetime) -> tuple[int, list[tuple], list[tuple]]:
    """Count, per reason and origin (count, last seen), and the recent list, in the range."""
    kept = [x for x in letters if start <= x[0] <= end]
    groups: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for at, origin, reason, *_ in kept:
        groups[reason, origin].append(at)
    by_reason = sorted(((reason, REASON_LABELS.get(reason, reason), origin, len(ats), max(ats))
                        for (reason, origin), ats in groups.items()),
                       key=lambda r: (-r[3], r[0], r[2]))
    recent = [(at, origin, REASON_LABELS.get(reason, reason), error, key, size, f"{p}/{o}")
              for at, origin, reason, error, key, size, p, o, _ in
              sorted(kept, key=lambda x: (-x[0].timestamp(), x[8]))][:pipeline.RECENT_LIMIT]
    return len(kept), by_reason, recent


def check_pipeline(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(pipeline.build())
    panels = {p["title"]: p["targets"][0] for p in board["panels"]}
    assert board.get("templating", {}).get("list", []) == []
    end = sc.now + timedelta(minutes=5)
    ranges = [sc.now - timedelta(days=41, microseconds=250_000),
              sc.now - timedelta(days=10) + timedelta(minutes=17, seconds=3)]
    letters = dead_letters(sc.now)
    with connect(settings) as conn:
        write_dead_letters(conn, letters)
        connectors = write_connectors(conn, sc.now)
        restarts = write_starts(conn, sc.now)
        for start in ranges:
            for interval in (timedelta(minutes=1), timedelta(minutes=30), timedelta(hours=1)):
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
                    in_range = {i: sum(start <= at <= end for at in ats)
                                for i, ats in restarts.items()}
                    _, rows = run(conn, panels["Tiến trình khởi động lại"]["rawSql"], ctx)
                    assert rows == [(sum(in_range.values()),)], where
                    count, by_reason, recent = expected_dead_letters(letters, start, end)
                    assert count > pipeline.RECENT_LIMIT or start == ranges[1]
                    _, rows = run(conn, panels["Thư lỗi trong khoảng thời gian"]["rawSql"], ctx)
                    assert rows == [(count,)], where
                    columns, rows = run(conn, panels["Thư lỗi theo lý do và nguồn"]["rawSql"],
                                        ctx)
                    assert columns == ["Mã lý do", "Lý do", "Nguồn", "Thư lỗi", "Gần nhất"]
                    assert rows == by_reason and len(rows) >= 5, where
                    columns, rows = run(conn, panels["Thư lỗi gần đây"]["rawSql"], ctx)
                    assert columns == ["Thời điểm", "Nguồn", "Lý do", "Lỗi", "Khóa",
                                       "Kích thước (byte)", pipeline.PLACE]
                    assert rows == recent, where
                    columns, rows = run(conn, panels["Trình kết nối"]["rawSql"], ctx)
                    assert columns == ["Trình kết nối", "Loại", "Trạng thái", "Lý do",
                                       "Thành công gần nhất", "Bản ghi gần nhất", "Im lặng từ",
                                       "Cập nhật lúc"]
                    assert rows == connectors, where
                    _, rows = run(conn, panels["Trình kết nối bất thường"]["rawSql"], ctx)
                    assert rows == [(sum(r[2] != "Bình thường" for r in connectors),)] \
                        == [(3,)], where
                    columns, rows = run(conn, panels["Tiến trình xử lý (worker)"]["rawSql"], ctx)
                    assert columns == ["Tiến trình", "Khởi động lúc", "Khởi động lại",
                                       "Nhịp tim gần nhất",
                                       "Tuổi nhịp tim (giây)", "Trạng thái", "Sự kiện đã lưu",
                                       "Thư lỗi"]
                    assert [r[0] for r in rows] == [w[0] for w in WORKERS]
                    for (instance, age, counters), row in zip(WORKERS, rows, strict=True):
                        started, heartbeat = beats[instance]
                        assert row[1:4] == (started, in_range[instance], heartbeat), where
                        assert age <= plain(row[4]) < age + 10, where
                        assert row[5] == (ALIVE if age < pipeline.HEARTBEAT_LIMIT_S else LOST)
                        assert row[6:] == (sum(counters.get("events_stored", {}).values()),
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


def test_restarts_of_a_real_worker(prepared: Settings, tmp_path: Path) -> None:
    """`ioc worker` started, stopped and started again: one row per start in worker_starts
    (its host and pid), and one restart in the tile and the workers' table; a range that
    starts after the restart counts none."""
    board = to_dict(pipeline.build())
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}
    instance = prepared.worker_instance_id
    begun = datetime.now(UTC)
    pids = []
    for n in (1, 2):
        worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
        assert worker.proc is not None
        pids.append(worker.proc.pid)
        try:
            wait_until(lambda n=n: query(prepared, "SELECT count(*) FROM worker_status w JOIN"
                                         " worker_starts s USING (instance_id)")[0][0] == n,
                       60, f"start {n} recorded and a heartbeat", worker.log)
        finally:
            if n == 1:
                worker.stop()  # a clean stop deletes the worker_status row
    try:
        starts = query(prepared, "SELECT started_at, host, pid, previous_heartbeat_at"
                                 " FROM worker_starts WHERE instance_id = %s ORDER BY 1",
                       (instance,))
        assert [(r[1], r[2], r[3]) for r in starts] == [(socket.gethostname(), pid, None)
                                                        for pid in pids]
        first, second = (r[0] for r in starts)
        assert begun <= first < second
        end = datetime.now(UTC) + timedelta(minutes=1)
        with connect(prepared) as conn:
            for start, restarts in ((begun - timedelta(hours=1), 1), (first, 1),
                                    (second + timedelta(microseconds=1), 0)):
                for timescaledb in (True, False):
                    ctx = Context(start, end, timescaledb=timescaledb)
                    _, rows = run(conn, panels["Tiến trình khởi động lại"], ctx)
                    assert rows == [(restarts,)], (start, timescaledb)
                    columns, rows = run(conn, panels["Tiến trình xử lý (worker)"], ctx)
                    assert [(r[0], r[columns.index("Khởi động lại")]) for r in rows] == [
                        (instance, restarts)], (start, timescaledb)
    finally:
        worker.stop()
