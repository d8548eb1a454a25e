"""Dashboards as code: structure, Grafana's macro expansion, and every panel and variable query
run on real PostgreSQL and real TimescaleDB, with values checked against the scenario's ground
truth (tests/support/scenario.py), not against the SQL itself."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grafana_foundation_sdk.models import dashboard as model

from dashboards import build as builder
from dashboards import documents, dossiers, field_reports, overview
from dashboards.macros import Context, MacroError, Variable, expand
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import ROOT, scenario
from tests.support.boards import (
    WALL_ROWS,
    Board,
    as_time,
    covered_cells,
    loaded,
    on_timescaledb,
    plain,
    queries,
    time_ranges,
    walk,
)
from tests.support.field_reports import places, points
from tests.support.timescaledb import TimescaleServer

# Which KPI each overview panel shows: (KPI family, key of the scenario's expected KPIs).
OVERVIEW_TILES = {
    "Tỷ lệ hồ sơ đúng hạn": ("dossiers", "on_time_rate"),
    "Tỷ lệ nộp trực tuyến": ("dossiers", "online_rate"),
    "Tỷ lệ số hóa hồ sơ": ("dossiers", "digitized_rate"),
    "Tỷ lệ thanh toán trực tuyến": ("dossiers", "paid_online_rate"),
    "Tỷ lệ hài lòng": ("dossiers", "satisfaction_rate"),
    "Hồ sơ tiếp nhận": ("dossiers", "received"),
    "Tỷ lệ văn bản đi ký số": ("documents", "signed_rate"),
    "Văn bản đi đã ký số": ("documents", "outgoing_signed"),
    "Phản ánh đang xử lý": ("field_reports", "open"),
    "Phản ánh quá hạn": ("field_reports", "overdue"),
}
# Tiles whose value may stand on part of its inputs: their query's second field says which part.
NOTED = {"Tỷ lệ hài lòng", "Tỷ lệ văn bản đi ký số"}
OVERVIEW_SERIES = {"Hồ sơ tiếp nhận theo giờ"}
OVERVIEW_MAP = "Bản đồ phản ánh hiện trường"


@pytest.fixture(scope="module")
def board() -> Board:
    return to_dict(overview.build())


# --- structure ----------------------------------------------------------------------------

def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    assert builder.check() == []
    written = builder.build(tmp_path)
    assert sorted(p.name for p in written) == [
        "documents.json", "dossiers.json", "field_reports.json", "overview.json", "pipeline.json",
        "ranking.json"]
    assert builder.check(tmp_path) == []
    (tmp_path / "overview.json").write_text("{}", encoding="utf-8")
    assert builder.check(tmp_path) == [tmp_path / "overview.json"]


@pytest.mark.parametrize("module", [dossiers, documents, field_reports], ids=lambda m: m.UID)
def test_drill_downs_fill_their_grid_without_holes(module: ModuleType) -> None:
    board = to_dict(module.build())
    cells = covered_cells(board)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    assert len(cells) == 24 * bottom


def test_panel_ids_unique_grid_within_24_columns_without_overlap(board: Board) -> None:
    cells = covered_cells(board, WALL_ROWS)
    assert len(cells) == 24 * WALL_ROWS - 24  # a full wall: only the last row is free


def test_every_datasource_is_the_provisioned_one(board: Board) -> None:
    refs = [n["datasource"] for n in walk(board) if "datasource" in n]
    assert len(refs) >= 2 * len(board["panels"]) + 1
    assert all(r == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID} for r in refs)
    provisioned = (ROOT / "dashboards/provisioning/datasources/ioc.yaml")
    text = provisioned.read_text(encoding="utf-8")
    assert f"uid: {DATASOURCE_UID}" in text and f"type: {DATASOURCE_TYPE}" in text


def test_every_template_variable_is_used(board: Board) -> None:
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["commune", "agency"]
    sql = "\n".join(queries(board))
    for name in names:
        assert re.search(rf"\$\{{{name}(:\w+)?\}}|\${name}\b|\[\[{name}\]\]", sql), name
    for panel in board["panels"]:  # every panel follows the chosen commune/ward and agency
        for name in names:
            assert all(f"${name}::text" in t["rawSql"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("name", sorted(builder.DASHBOARDS))
def test_load_and_resave_through_the_sdk_keeps_every_key(name: str) -> None:
    """No key the SDK does not know (as in the committed form: annotations included)."""
    board = json.loads(builder.generate()[name])
    assert to_dict(model.Dashboard.from_json(board)) == board
    typo = json.loads(json.dumps(board))
    typo["panels"][0]["fieldConfig"]["defaults"]["tresholds"] = {"mode": "absolute"}
    assert to_dict(model.Dashboard.from_json(typo)) != typo  # a typo does not survive


def test_wall_settings_titles_and_no_personal_data(board: Board) -> None:
    assert board["uid"] == "ioc-overview" and board["editable"] is False
    assert board["refresh"] in ("10s", "15s", "20s", "30s")
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board["templating"]["list"]]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    assert {p["title"] for p in board["panels"]} == {*OVERVIEW_TILES, *OVERVIEW_SERIES,
                                                     OVERVIEW_MAP}
    assert "Xã/phường" in titles and "Tỷ lệ hồ sơ đúng hạn" in titles
    # Aggregates only: panels read the KPI functions and the rollups, nothing per person.
    for sql in queries(board):
        sources = set(re.findall(r"\bFROM\s+(\w+)", sql))
        assert sources <= {"kpi_dossiers", "kpi_documents", "kpi_field_reports", "rollup_hour",
                           "field_report_facts_at"}  # the map: codes, category, status, place
    online = next(p for p in board["panels"] if p["title"] == "Tỷ lệ nộp trực tuyến")
    steps = online["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "green", "value": 80}


# --- Grafana's macros (cases from macros.go and its tests) -------------------------------

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
CTX = Context(FROM, FROM + timedelta(minutes=5), timescaledb=False)


@pytest.mark.parametrize(("sql", "expected"), [
    ("WHERE $__timeFilter(time_column)",
     "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
    ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
    ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
    ("select $__time(time_column)", 'select time_column AS "time"'),
    ("select $__timeEpoch(time)", 'select extract(epoch from time) as "time"'),
    ("GROUP BY $__timeGroup(time_column,'5m')",
     "GROUP BY floor(extract(epoch from time_column)/300)*300"),
    ("GROUP BY $__timeGroup(time_column, '5m', NULL)",
     "GROUP BY floor(extract(epoch from time_column)/300)*300"),
    ("select $__timeGroup(time_column,'5m'), value",  # pre-5.3 style: aliased
     "select floor(extract(epoch from time_column)/300)*300 AS \"time\", value"),
    ("select $__timeGroupAlias(time_column,'5m')",
     "select floor(extract(epoch from time_column)/300)*300 AS \"time\""),
    ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
    ("select $__unixEpochNanoFilter(time)",
     "select time >= 1523556000000000000 AND time <= 1523556300000000000"),
    ("select $__unixEpochNanoFrom(), $__unixEpochNanoTo()",
     "select 1523556000000000000, 1523556300000000000"),
    ("select $__unixEpochFrom(), $__unixEpochTo()", "select 1523556000, 1523556300"),
    ("select $__unixEpochGroup(time_column,'5m')", "select floor((time_column)/300)*300"),
    ("select $__unixEpochGroupAlias(time_column,'5m')",
     "select floor((time_column)/300)*300 AS \"time\""),
    ("select $__interval, $__interval_ms", "select 1m, 60000"),
])
def test_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert expand(sql, CTX) == expected


def test_timescaledb_group_fractions_and_time_zones() -> None:
    ctx = Context(datetime(2026, 11, 22, 8, 15, 42, 120000, tzinfo=scenario.VIETNAM),
                  datetime(2026, 11, 22, 9, 0, tzinfo=UTC), interval=timedelta(hours=2),
                  timescaledb=True)
    assert expand("$__timeGroupAlias(bucket, 1h)", ctx) == (
        "time_bucket('3600.000s',bucket) AS \"time\"")
    assert expand("$__timeGroup(t, 90s)", ctx) == "time_bucket('90.000s',t)"
    assert expand("$__timeFilter(t)", ctx) == (  # UTC, trailing zeros of the fraction dropped
        "t BETWEEN '2026-11-22T01:15:42.12Z' AND '2026-11-22T09:00:00Z'")
    assert expand("$__interval $__interval_ms", ctx) == "2h 7200000"
    for interval, text in ((timedelta(days=14), "14d"), (timedelta(days=400), "1y"),
                           (timedelta(milliseconds=1500), "1s"), (timedelta(0), "1ms")):
        assert expand("$__interval", Context(FROM, FROM, interval=interval)) == text
    assert expand("$__timeGroup(t, 1h30m) $__timeGroup(t, '1w')", ctx) == (
        "time_bucket('5400.000s',t) time_bucket('604800.000s',t)")
    for bad in ("$__timeGroup(t)", "$__timeGroup(t, 5x)", "$__timeGroup(t, 1h5)", "$__nope(t)"):
        with pytest.raises(MacroError):
            expand(bad, ctx)


def test_template_variables_formats() -> None:
    one = Variable("commune", "07900", include_all=True, all_value="NULL")
    everything = Variable("commune", None, include_all=True, all_value="NULL")
    plain = Variable("agency", "O'Hara")
    multi = Variable("units", ["a", "b'c"], multi=True)
    all_options = Variable("units", None, options=["x", "y"], multi=True, include_all=True)

    def run(sql: str, *variables: Variable) -> str:
        return expand(sql, Context(FROM, FROM, variables={v.name: v for v in variables}))

    assert run("f($commune::text)", one) == "f('07900'::text)"
    assert run("f($commune::text)", everything) == "f(NULL::text)"
    assert run("f(${commune})", one) == "f('07900')"
    assert run("'$agency' [[agency]]", plain) == "'O''Hara' O''Hara"
    assert run("IN ($units)", multi) == "IN ('a','b''c')"
    assert run("${units:csv} ${units:sqlstring} ${units:raw}", multi) == (
        "a,b'c 'a','b''c' a,b'c")
    assert run("IN ($units)", all_options) == "IN ('x','y')"
    assert run("$__timeFrom() $unknown", one) == "'2018-04-12T18:00:00Z' $unknown"


# --- every query on real servers, values from the ground truth ----------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=70, documents=40, reports=30, malformed=False)


def expected_tiles(sc: scenario.Scenario) -> dict[str, Any]:
    kpis = {"dossiers": sc.expected_dossier_kpis(), "documents": sc.expected_document_kpis(),
            "field_reports": sc.expected_report_kpis()}
    return {title: kpis[family][key] for title, (family, key) in OVERVIEW_TILES.items()}


def expected_notes(sc: scenario.Scenario) -> dict[str, str | None]:
    """The noted tiles' second field: what the value lacks, None when nothing (or no value)."""
    dossiers, documents = sc.expected_dossier_kpis(), sc.expected_document_kpis()
    unknown = documents["outgoing_signed_unknown"]
    return {
        "Tỷ lệ hài lòng": "chưa có dữ liệu đánh giá" if dossiers["evaluated"] == 0
        and dossiers["satisfaction_rate"] is not None else None,
        "Tỷ lệ văn bản đi ký số": f"{unknown} văn bản đi chưa xác định ký số, không có tệp "
        "đính kèm" if unknown and documents["signed_rate"] is not None else None}


def expected_per_hour(sc: scenario.Scenario, start: datetime,
                      end: datetime) -> dict[datetime, int]:
    """Dossiers received per UTC hour, for the hours `$__timeFilter(bucket)` keeps."""
    hours = Counter(d.received_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                    for d in sc.dossiers)
    return {hour: n for hour, n in hours.items() if start <= hour <= end}


def scoped(sc: scenario.Scenario, ward: str | None, agency: str | None,
           since: datetime | None) -> scenario.Scenario:
    """What the wall shows for one commune/ward and one agency (None: all)."""
    sub = sc.subset(commune=ward, since=since)
    return scenario.Scenario(
        now=sc.now, dossiers=[d for d in sub.dossiers if agency in (None, d.agency)],
        documents=[d for d in sub.documents if agency in (None, d.agency)],
        reports=[r for r in sub.reports if agency in (None, r.agency)])


def check_board(settings: Settings, board: Board, sc: scenario.Scenario) -> None:
    """Run every variable and panel query as Grafana would: for "All", one ward, one agency and
    both, over the whole scenario (anchors are 2 to 40 days old) and over its last ten days."""
    end = sc.now + timedelta(minutes=5)
    ranges = time_ranges(sc, days=41, recent=10)
    specs = {v["name"]: v for v in board["templating"]["list"]}
    where_is = places(sc)
    with connect(settings) as conn:
        rows = conn.execute(expand(specs["commune"]["query"], Context(ranges[0], end))).fetchall()
        communes = [r[0] for r in rows]
        assert communes == sorted({d.commune for d in sc.dossiers}
                                  | {r.commune for r in sc.reports})
        rows = conn.execute(expand(specs["agency"]["query"], Context(ranges[0], end))).fetchall()
        assert rows == [(a, f"Cơ quan {a} ({a})") for a in sorted(
            {d.agency for d in sc.dossiers} | {d.agency for d in sc.documents}
            | {r.agency for r in sc.reports})]
        agencies = [r[0] for r in rows]
        options = {"commune": communes, "agency": agencies}
        seen = Counter[str]()
        for start in ranges:
            for ward, agency in ((None, None), (communes[1], None), (None, agencies[1]),
                                 (communes[2], agencies[0])):
                values = {name: Variable(name, value, options=options[name],
                                         multi=specs[name]["multi"],
                                         include_all=specs[name]["includeAll"],
                                         all_value=specs[name]["allValue"])
                          for name, value in (("commune", ward), ("agency", agency))}
                tiles = expected_tiles(scoped(sc, ward, agency, start))
                notes = expected_notes(scoped(sc, ward, agency, start))
                seen.update(f"{title}: {note is not None}" for title, note in notes.items())
                per_hour = expected_per_hour(scoped(sc, ward, agency, None), start, end)
                dots = points(scoped(sc, ward, agency, start), where_is)
                seen.update(hours=sum(per_hour.values()), dots=len(dots))
                for timescaledb in (True, False):
                    ctx = Context(start, end, interval=timedelta(hours=1),
                                  timescaledb=timescaledb, variables=values)
                    for panel in board["panels"]:
                        where = (panel["title"], start, ward, agency, timescaledb)
                        (target,) = panel["targets"]
                        cursor = conn.execute(expand(target["rawSql"], ctx))
                        rows = cursor.fetchall()
                        if panel["title"] in OVERVIEW_SERIES:
                            assert target["format"] == "time_series"
                            assert next(c.name for c in cursor.description or []) == "time"
                            assert {as_time(t): plain(v) for t, v in rows} == per_hour, where
                        elif panel["title"] == OVERVIEW_MAP:
                            assert panel["type"] == "geomap"
                            assert rows == dots, where
                        elif panel["title"] in NOTED:
                            assert [c.name for c in cursor.description or []] == ["value",
                                                                                 "note"]
                            assert len(rows) == 1, where
                            assert plain(rows[0][0]) == tiles[panel["title"]], where
                            assert rows[0][1] == notes[panel["title"]], where
                        else:
                            assert len(rows) == 1 and len(rows[0]) == 1, where
                            assert plain(rows[0][0]) == tiles[panel["title"]], where
    assert seen["hours"] > 0 and seen["dots"] > 0  # the series and the map had something
    # The signed rate's note was both shown and not (test_dashboards_inputs: satisfaction's).
    assert seen["Tỷ lệ văn bản đi ký số: True"] and seen["Tỷ lệ văn bản đi ký số: False"]


def test_every_query_on_plain_postgresql(settings: Settings, board: Board,
                                         sc: scenario.Scenario) -> None:
    check_board(loaded(settings, sc, timescaledb=False), board, sc)


def test_every_query_on_timescaledb(timescale: TimescaleServer, board: Board,
                                    sc: scenario.Scenario) -> None:
    check_board(on_timescaledb(timescale, sc), board, sc)


def test_cli_build_check() -> None:
    from typer.testing import CliRunner

    from ioc.cli.dashboards import app

    result = CliRunner().invoke(app, ["build", "--check"])
    assert result.exit_code == 0, result.output
