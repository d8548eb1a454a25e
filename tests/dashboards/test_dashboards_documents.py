"""The documents drill-down (dashboards/documents.py): structure, and every panel and variable
query expanded as Grafana would and run on real PostgreSQL and real TimescaleDB for "All", one
commune/ward, one agency, both, and every trend period, with values computed here from the
scenario's documents (never from the SQL under test)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboards import documents
from dashboards.macros import Context
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import (
    HOURS,
    PERIODS,
    Board,
    assert_each_query_filters,
    assert_hours_left_coloured,
    loaded,
    on_timescaledb,
    options,
    period_start,
    plain,
    queries,
    run,
    time_ranges,
    trended,
    variable,
    walk,
)
from tests.support.timescaledb import TimescaleServer

TILES = {  # panel title -> key of the scenario's expected document KPIs
    "Văn bản đến": "incoming",
    "Văn bản đi": "outgoing",
    "Tỷ lệ văn bản đi ký số": "signed_rate",
    "Tỷ lệ văn bản xử lý đúng hạn": "on_time_rate",
    "Văn bản đến tồn đọng": "backlog",
    "Văn bản đến tồn đọng quá hạn": "backlog_overdue",
}
TREND, DURATIONS = "Văn bản đến và đi theo chu kỳ", "Thời gian xử lý văn bản"
AGENCY_TABLE, LATE_LIST = "Theo cơ quan", "Văn bản đến quá hạn và sắp đến hạn"
TABLE_KEYS = ["incoming", "outgoing", "signed_rate", "signed_note", "completed", "on_time_rate",
              "backlog", "backlog_overdue"]
TABLE_COLUMNS = ["Mã cơ quan", "Cơ quan", "Văn bản đến", "Văn bản đi", "Tỷ lệ văn bản đi ký số",
                 "Tỷ lệ văn bản đi ký số: phần thiếu",
                 "Văn bản đã hoàn thành", "Tỷ lệ văn bản xử lý đúng hạn", "Văn bản đến tồn đọng",
                 "Văn bản đến tồn đọng quá hạn"]
LIST_COLUMNS = ["Mã văn bản", "Số, ký hiệu", "Mã cơ quan", "Cơ quan", "Hạn xử lý",
                "Trạng thái", "Số giờ còn lại (âm: quá hạn)"]
STATUS = {"01": "Đã đến", "03": "Đã tiếp nhận", "04": "Đã phân công", "05": "Đang xử lý",
          "13": "Đề nghị thu hồi", "16": "Từ chối thu hồi"}  # QCVN 102:2016 codes
# Processing-time buckets, hours [low, high).


@pytest.fixture(scope="module")
def board() -> Board:
    return to_dict(documents.build())


# --- structure ----------------------------------------------------------------------------

def test_every_datasource_is_the_provisioned_one(board: Board) -> None:
    refs = [n["datasource"] for n in walk(board) if "datasource" in n]
    assert len(refs) >= 2 * len(board["panels"]) + 2  # + the two query variables
    assert all(r == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID} for r in refs)


def test_every_template_variable_is_used(board: Board) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    chosen = ["commune", "agency", "former_district"]
    assert list(variables) == [*chosen, "trend"]
    for name in chosen:  # "All" is SQL NULL, one choice at a time
        v = variables[name]
        assert (v["includeAll"], v["allValue"], v["multi"]) == (True, "NULL", False)
    trend = variables["trend"]
    assert trend["type"] == "custom" and trend["current"]["value"] == "day"
    assert [o["value"] for o in trend["options"]] == PERIODS
    assert (trend["includeAll"], trend["multi"], trend["allowCustomValue"]) == (
        False, False, False)  # the value goes into the SQL unquoted: only the listed ones
    assert_each_query_filters(board, chosen)
    assert trended(board) == [TREND]


def test_settings_titles_and_metadata_only(board: Board) -> None:
    assert board["uid"] == documents.UID and board["editable"] is False
    assert board["title"].endswith("Văn bản") and board["timezone"] == "Asia/Ho_Chi_Minh"
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board["templating"]["list"]]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    assert {p["title"] for p in board["panels"]} == {*TILES, TREND, DURATIONS, AGENCY_TABLE,
                                                     LATE_LIST}
    for sql in queries(board):
        sources = set(re.findall(r"(?<!epoch )\bFROM\s+(\w+)", sql))
        assert sources <= {"kpi_documents", "kpi_documents_by", "document_facts", "rollup_hour",
                           "document_facts_at", "b"}, sql
    panels = {p["title"]: p for p in board["panels"]}
    assert panels[DURATIONS]["type"] == "barchart"
    assert panels[DURATIONS]["options"]["xField"] == "Thời gian"
    sql = panels[LATE_LIST]["targets"][0]["rawSql"]
    # Identifiers, agency, dates and status only: the select list reads no other column.
    listed = re.sub(r"'[^']*'|\"[^\"]*\"", "", sql.split("FROM document_facts")[0])
    assert set(re.findall(r"\b[a-z_]+\b", listed)) == {
        "document_id", "code_notation", "agency_code", "agency_name", "deadline", "status",
        "coalesce", "round", "extract", "epoch", "now", "numeric", "least", "timestamptz"}
    assert re.search(r"ORDER BY deadline, document_id\nLIMIT 50$", sql)
    assert_hours_left_coloured(panels[LATE_LIST], LIST_COLUMNS[-1])


# --- ground truth -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    # seed 50: some backlog documents are due soon; none is near now() or now() + the horizon
    return scenario.build(seed=50, dossiers=30, documents=90, reports=30, malformed=False)


def in_and_out(sel: scenario.Scenario, start: datetime, end: datetime,
               unit: str) -> dict[datetime, tuple[int, int]]:
    """Incoming and outgoing per period, over the UTC hours `$__timeFilter(bucket)` keeps."""
    counts: dict[datetime, Counter[str]] = defaultdict(Counter)
    for d in sel.documents:
        hour = d.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if start <= hour <= end:
            counts[period_start(hour, unit)][d.direction] += 1
    return {t: (c["incoming"], c["outgoing"]) for t, c in counts.items()}


def durations(sel: scenario.Scenario) -> list[tuple[str, int]]:
    hours = [(d.completed_at - d.created_at).total_seconds() / 3600
             for d in sel.documents if d.status == "06"]
    return [(label, sum(low <= h < high for h in hours)) for label, low, high in HOURS]


def agency_rows(sel: scenario.Scenario) -> list[tuple[Any, ...]]:
    groups: dict[str, list[scenario.Document]] = defaultdict(list)
    for d in sel.documents:
        groups[d.agency].append(d)
    rows = []
    for code, docs in sorted(groups.items()):
        k = scenario.Scenario(now=sel.now, documents=docs).expected_document_kpis()
        k["signed_note"] = unsigned_note(k)
        rows.append((code, f"Cơ quan {code}", *(k[key] for key in TABLE_KEYS)))
    return rows


def with_deadline(sel: scenario.Scenario) -> list[scenario.Document]:
    """Incoming documents in the backlog (not rejected, completed or recalled) with a deadline."""
    return [d for d in sel.documents if d.direction == "incoming"
            and d.status not in ("02", "06", "15") and d.deadline is not None]


def late_list(sc: scenario.Scenario, sel: scenario.Scenario) -> list[tuple[Any, ...]]:
    """Backlog documents past their deadline or due within the horizon, by deadline."""
    now = sel.now
    late = [d for d in with_deadline(sel) if d.deadline < now + scenario.DUE_SOON]
    late.sort(key=lambda d: (d.deadline, d.document_id))
    return [(d.document_id, f"{sc.documents.index(d)}/SKHCN-CĐS", d.agency,
             f"Cơ quan {d.agency}", d.deadline, STATUS[d.status],
             (d.deadline - now).total_seconds() / 3600) for d in late[:documents.LIST_LIMIT]]


def test_no_deadline_near_a_boundary(sc: scenario.Scenario) -> None:
    """The database's now() runs a little after the scenario's: keep the lists exact."""
    for d in with_deadline(sc):
        for boundary in (sc.now, sc.now + scenario.DUE_SOON):
            assert abs(d.deadline - boundary) > timedelta(hours=1), d.document_id


# --- every query on real servers ----------------------------------------------------------

def unsigned_note(kpis: dict[str, Any]) -> str | None:
    """The signed rate tile's note: the outgoing copies whose signature is unknown, if any."""
    unknown = kpis["outgoing_signed_unknown"]
    if not unknown or kpis["signed_rate"] is None:
        return None
    return f"{unknown} văn bản đi chưa xác định ký số, không có tệp đính kèm"


def check_board(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(documents.build())
    panels = {p["title"]: p["targets"][0] for p in board["panels"]}
    end = sc.now + timedelta(minutes=5)
    ranges = time_ranges(sc, days=41, recent=10)
    specs = {v["name"]: v for v in board["templating"]["list"]}
    with connect(settings) as conn:
        communes, agencies, districts = options(conn, board, sc, {d.agency for d in sc.documents},
                                                Context(ranges[0], end))
        selections = [(None, None, None), (communes[1], None, None), (None, agencies[0], None),
                      (communes[1], agencies[1], None), (None, None, districts[0]),
                      (None, agencies[1], districts[2])]
        seen = Counter[str]()
        for start in ranges:
            for ward, agency, district in selections:
                sel = sc.subset(commune=ward, agency=agency, since=start, former_district=district)
                kpis = sel.expected_document_kpis()
                by_agency, late = agency_rows(sel), late_list(sc, sel)
                spread = durations(sel)
                pending = [d.deadline - sel.now for d in with_deadline(sel)]
                seen.update(agencies=len(by_agency), late=sum(e[6] < 0 for e in late),
                            soon=sum(e[6] >= 0 for e in late),
                            not_yet_due=sum(p >= scenario.DUE_SOON for p in pending),
                            completed=sum(n for _, n in spread),
                            district=len(sel.documents) if district else 0)
                for timescaledb in (True, False):
                    # every period for "All", days for the narrower choices (time)
                    for unit in PERIODS if (ward, agency, district) == (None,) * 3 else ["day"]:
                        values = {"commune": variable(specs["commune"], ward, communes),
                                  "agency": variable(specs["agency"], agency, agencies),
                                  "former_district": variable(specs["former_district"],
                                                              district, districts),
                                  "trend": variable(specs["trend"], unit, PERIODS)}
                        ctx = Context(start, end, interval=timedelta(hours=1),
                                      timescaledb=timescaledb, variables=values)
                        where = (start, ward, agency, district, timescaledb, unit)
                        everything = sc.subset(commune=ward, agency=agency,
                                               former_district=district)
                        expected = in_and_out(everything, start, end, unit)
                        seen.update(periods=len(expected))
                        assert panels[TREND]["format"] == "time_series"
                        columns, rows = run(conn, panels[TREND]["rawSql"], ctx)
                        assert columns == ["time", "Văn bản đến", "Văn bản đi"]
                        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
                        got = {t.astimezone(UTC): (plain(i), plain(o)) for t, i, o in rows}
                        assert got == expected, where
                    for title, key in TILES.items():
                        _, rows = run(conn, panels[title]["rawSql"], ctx)
                        assert len(rows) == 1, (title, *where)
                        assert plain(rows[0][0]) == kpis[key], (title, *where)
                        # the signed rate says how many outgoing copies it could not see
                        assert rows[0][1:] == ((unsigned_note(kpis),) if key == "signed_rate"
                                               else ()), (title, *where)
                    columns, rows = run(conn, panels[AGENCY_TABLE]["rawSql"], ctx)
                    assert columns == TABLE_COLUMNS
                    assert [tuple(map(plain, r)) for r in rows] == by_agency, where
                    columns, rows = run(conn, panels[DURATIONS]["rawSql"], ctx)
                    assert columns == ["Thời gian", "Văn bản"]
                    assert rows == spread, where
                    columns, rows = run(conn, panels[LATE_LIST]["rawSql"], ctx)
                    assert columns == LIST_COLUMNS
                    assert [r[:6] for r in rows] == [e[:6] for e in late], where
                    # the database's now() is a little after the scenario's now
                    drift = (datetime.now(UTC) - sc.now).total_seconds() / 3600
                    for row, want in zip(rows, late, strict=True):
                        assert want[6] - drift - 0.05 <= plain(row[6]) <= want[6] + 0.05, where
    # the selections are not empty: every panel had something to compare
    assert all(seen[k] > 0 for k in ("agencies", "late", "soon", "not_yet_due", "completed",
                                     "periods", "district")), seen


def test_every_query_on_plain_postgresql(settings: Settings, sc: scenario.Scenario) -> None:
    check_board(loaded(settings, sc, timescaledb=False), sc)


def test_every_query_on_timescaledb(timescale: TimescaleServer, sc: scenario.Scenario) -> None:
    check_board(on_timescaledb(timescale, sc), sc)
