"""The dossier drill-down (dashboards/dossiers.py): structure, and every panel and variable query
expanded as Grafana would and run on real PostgreSQL and real TimescaleDB for "All" and for one
commune/ward, one agency and one former district, with values computed here from the scenario's
dossiers (never from the SQL under test)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboards import dossiers
from dashboards.macros import Context, Variable
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import (
    Board,
    as_time,
    by_attribute,
    loaded,
    on_timescaledb,
    options,
    plain,
    queries,
    run,
    time_ranges,
    walk,
)
from tests.support.timescaledb import TimescaleServer

TILES = {  # panel title -> key of the scenario's expected dossier KPIs
    "Hồ sơ tiếp nhận": "received",
    "Hồ sơ phải giải quyết": "to_handle",
    "Tỷ lệ hồ sơ đúng hạn": "on_time_rate",
    "Hồ sơ đang giải quyết quá hạn": "late_in_process",
    "Hồ sơ sắp đến hạn": "due_soon",
    "Hồ sơ chưa đến hạn": "not_yet_due",
}
AGENCY_TABLE, COMMUNE_TABLE, PROCEDURE_TABLE = "Theo cơ quan", "Theo xã/phường", "Theo thủ tục"
PER_DAY, LATE_LIST = "Hồ sơ tiếp nhận theo ngày", "Hồ sơ quá hạn và sắp đến hạn"
KPI_COLUMNS = ["Hồ sơ tiếp nhận", "Tỷ lệ hồ sơ đúng hạn", "Tỷ lệ nộp trực tuyến",
               "Hồ sơ đang giải quyết quá hạn", "Hồ sơ sắp đến hạn"]
KPI_KEYS = ["received", "on_time_rate", "online_rate", "late_in_process", "due_soon"]
LIST_COLUMNS = ["Mã hồ sơ", "Mã thủ tục", "Mã cơ quan", "Cơ quan", "Hạn giải quyết",
                "Tình trạng", "Số giờ còn lại (âm: quá hạn)"]
PROCEDURE = "1.001234"  # the procedure code of every scenario dossier
PROCEDURE_NAME = "Cấp giấy phép xây dựng"


@pytest.fixture(scope="module")
def board() -> Board:
    return to_dict(dossiers.build())


# --- structure ----------------------------------------------------------------------------

def test_every_datasource_is_the_provisioned_one(board: Board) -> None:
    refs = [n["datasource"] for n in walk(board) if "datasource" in n]
    assert len(refs) >= 2 * len(board["panels"]) + len(board["templating"]["list"])
    assert all(r == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID} for r in refs)


def test_every_template_variable_is_used_by_every_panel(board: Board) -> None:
    variables = board["templating"]["list"]
    names = ["commune", "agency", "former_district"]
    assert [v["name"] for v in variables] == names
    for v in variables:  # "All" is SQL NULL, one choice at a time
        assert (v["includeAll"], v["allValue"], v["multi"]) == (True, "NULL", False)
    for panel in board["panels"]:
        for name in names:
            assert all(re.search(rf"\${name}::text\b", t["rawSql"]) for t in panel["targets"]), (
                panel["title"], name)


def test_settings_titles_and_no_personal_data(board: Board) -> None:
    assert board["uid"] == dossiers.UID and board["editable"] is False
    assert board["title"].endswith("Hồ sơ TTHC") and board["timezone"] == "Asia/Ho_Chi_Minh"
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board["templating"]["list"]]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    assert {p["title"] for p in board["panels"]} == {*TILES, AGENCY_TABLE, COMMUNE_TABLE,
                                                     PROCEDURE_TABLE, PER_DAY, LATE_LIST}
    for sql in queries(board):
        sources = set(re.findall(r"(?<!epoch )\bFROM\s+(\w+)", sql))
        assert sources <= {"kpi_dossiers", "kpi_dossiers_by", "dossier_facts", "dossier_facts_at",
                           "rollup_hour"}, sql
    late = next(p for p in board["panels"] if p["title"] == LATE_LIST)
    sql = late["targets"][0]["rawSql"]
    # Codes, agency and dates only: the select list reads no other column.
    listed = re.sub(r"'[^']*'|\"[^\"]*\"", "", sql.split("FROM dossier_facts")[0])
    assert set(re.findall(r"\b[a-z_]+\b", listed)) == {
        "dossier_code", "procedure_code", "agency_code", "agency_name", "due_at",
        "late_in_process", "round", "extract", "epoch", "now", "numeric", "least", "timestamptz"}
    assert re.search(r"ORDER BY due_at\b.*\nLIMIT 50$", sql)
    assert late["type"] == "table"


# --- ground truth -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=70, documents=40, reports=30, malformed=False)


def kpi_row(sc: scenario.Scenario, ds: list[scenario.Dossier]) -> list[Any]:
    k = scenario.Scenario(now=sc.now, dossiers=ds).expected_dossier_kpis()
    return [k[key] for key in KPI_KEYS]


def by(sel: scenario.Scenario, key: str) -> dict[str, list[scenario.Dossier]]:
    return by_attribute(sel.dossiers, key)


def per_day(sel: scenario.Scenario, start: datetime, end: datetime) -> dict[datetime, int]:
    """Received per Vietnamese calendar day, over the UTC hours `$__timeFilter(bucket)` keeps."""
    days: Counter[datetime] = Counter()
    for d in sel.dossiers:
        hour = d.received_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if start <= hour <= end:
            local = hour.astimezone(scenario.VIETNAM)
            days[local.replace(hour=0).astimezone(UTC)] += 1
    return dict(days)


def late_list(sel: scenario.Scenario) -> list[tuple[str, str, str, str, datetime, str, float]]:
    now = sel.now
    rows = [d for d in sel.dossiers if d.in_process and d.due_at < now + scenario.DUE_SOON]
    rows.sort(key=lambda d: (d.due_at, d.code))
    return [(d.code, PROCEDURE, d.agency, f"Cơ quan {d.agency}", d.due_at,
             "Quá hạn" if d.due_at < now else "Sắp đến hạn",
             (d.due_at - now).total_seconds() / 3600) for d in rows[:dossiers.LIST_LIMIT]]


# --- every query on real servers ----------------------------------------------------------

def check_board(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(dossiers.build())
    panels = {p["title"]: p for p in board["panels"]}
    end = sc.now + timedelta(minutes=5)
    ranges = time_ranges(sc, days=41, recent=10)
    specs = {v["name"]: v for v in board["templating"]["list"]}
    with connect(settings) as conn:
        communes, agencies, districts = options(conn, board, sc, {d.agency for d in sc.dossiers},
                                                Context(ranges[0], end))
        selections = [(None, None, None), (communes[1], None, None), (None, agencies[0], None),
                      (communes[1], agencies[1], None), (None, None, districts[0]),
                      (communes[1], None, districts[1])]
        seen = Counter[str]()
        for start in ranges:
            for ward, agency, district in selections:
                sel = sc.subset(commune=ward, agency=agency, since=start, former_district=district)
                expected_kpis = sel.expected_dossier_kpis()
                agency_rows = [(code, f"Cơ quan {code}", *kpi_row(sc, ds))
                               for code, ds in by(sel, "agency").items()]
                commune_rows = [(code, *kpi_row(sc, ds)) for code, ds in by(sel, "commune").items()]
                procedure_rows = ([(PROCEDURE, PROCEDURE_NAME, *kpi_row(sc, sel.dossiers))]
                                  if sel.dossiers else [])
                days = per_day(sc.subset(commune=ward, agency=agency, former_district=district),
                               start, end)
                late = late_list(sel)
                seen.update(agency_rows=len(agency_rows), days=len(days), late=len(late),
                            district=len(sel.dossiers) if district else 0)
                variables = {"commune": (ward, communes), "agency": (agency, agencies),
                             "former_district": (district, districts)}
                values = {name: Variable(name, value, options=options, multi=specs[name]["multi"],
                                         include_all=specs[name]["includeAll"],
                                         all_value=specs[name]["allValue"])
                          for name, (value, options) in variables.items()}
                for timescaledb in (True, False):
                    ctx = Context(start, end, interval=timedelta(hours=1),
                                  timescaledb=timescaledb, variables=values)
                    where = (start, ward, agency, district, timescaledb)
                    for title, key in TILES.items():
                        _, rows = run(conn, panels[title]["targets"][0]["rawSql"], ctx)
                        assert len(rows) == 1 and len(rows[0]) == 1, (title, *where)
                        assert plain(rows[0][0]) == expected_kpis[key], (title, *where)
                    columns, rows = run(conn, panels[AGENCY_TABLE]["targets"][0]["rawSql"], ctx)
                    assert columns == ["Mã cơ quan", "Cơ quan", *KPI_COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == agency_rows, where
                    columns, rows = run(conn, panels[COMMUNE_TABLE]["targets"][0]["rawSql"], ctx)
                    assert columns == ["Mã xã/phường", *KPI_COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == commune_rows, where
                    columns, rows = run(conn, panels[PROCEDURE_TABLE]["targets"][0]["rawSql"], ctx)
                    assert columns == ["Mã thủ tục", "Thủ tục", *KPI_COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == procedure_rows, where
                    target = panels[PER_DAY]["targets"][0]
                    assert target["format"] == "time_series"
                    columns, rows = run(conn, target["rawSql"], ctx)
                    assert columns[0] == "time"
                    assert [as_time(r[0]) for r in rows] == sorted(as_time(r[0]) for r in rows)
                    assert {as_time(t): plain(v) for t, v in rows} == days, where
                    columns, rows = run(conn, panels[LATE_LIST]["targets"][0]["rawSql"], ctx)
                    assert columns == LIST_COLUMNS
                    # the database's now() is a little after the scenario's now
                    drift = (datetime.now(UTC) - sc.now).total_seconds() / 3600
                    assert [r[:6] for r in rows] == [e[:6] for e in late], where
                    for row, want in zip(rows, late, strict=True):
                        assert want[6] - drift - 0.05 <= plain(row[6]) <= want[6] + 0.05, where
    # the selections are not empty: every panel had something to compare
    assert all(seen[k] > 0 for k in ("agency_rows", "days", "late", "district")), seen


def test_every_query_on_plain_postgresql(settings: Settings, sc: scenario.Scenario) -> None:
    check_board(loaded(settings, sc, timescaledb=False), sc)


def test_every_query_on_timescaledb(timescale: TimescaleServer, sc: scenario.Scenario) -> None:
    check_board(on_timescaledb(timescale, sc), sc)
