"""The field-report drill-down (dashboards/field_reports.py): structure, no personal data, and
every panel and variable query expanded as Grafana would and run on real PostgreSQL and real
TimescaleDB for several commune/ward, agency and category choices and every trend period, with
values computed here from the scenario's reports and events (never from the SQL under test)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboards import field_reports
from dashboards.macros import Context, expand
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
    by_attribute,
    loaded,
    on_timescaledb,
    period_start,
    plain,
    queries,
    run,
    time_ranges,
    trended,
    variable,
    walk,
)
from tests.support.field_reports import (
    GROUP,
    LABELS,
    OPEN,
    RESOLVED,
    SERVICE_NAME,
    label,
    places,
    points,
)
from tests.support.timescaledb import TimescaleServer

TILES = {  # panel title -> key of the scenario's expected report KPIs
    "Phản ánh tiếp nhận": "reports",
    "Phản ánh đang xử lý": "open",
    "Phản ánh quá hạn": "overdue",
    "Phản ánh đã giải quyết": "resolved",
    "Thời gian giải quyết phản ánh, trung vị": "median_hours_to_resolve",
    "Phản ánh trùng lặp": "duplicate",
}
KEYS = ["reports", "open", "overdue", "resolved", "duplicate", "median_hours_to_resolve"]
BY_CATEGORY, BY_COMMUNE = "Theo lĩnh vực", "Theo xã/phường"
TREND, DURATIONS = "Phản ánh mới và đã giải quyết theo chu kỳ", "Thời gian giải quyết"
LATE_LIST, MAP = "Phản ánh quá hạn và sắp đến hạn", "Bản đồ phản ánh"
UNASSIGNED = "Chưa xác định"  # the commune/ward of a report not placed yet
UNASSIGNED_TILE, UNASSIGNED_LIST = f"{UNASSIGNED} xã/phường", "Phản ánh chưa xác định xã/phường"
UNASSIGNED_COLUMNS = ["Mã phản ánh", "Lĩnh vực", "Tiếp nhận", "Mã cơ quan", "Tình trạng", "Vĩ độ",
                      "Kinh độ"]
COUNT_COLUMNS = ["Phản ánh tiếp nhận", "Phản ánh đang xử lý", "Phản ánh quá hạn",
                 "Phản ánh đã giải quyết", "Phản ánh trùng lặp",
                 "Thời gian giải quyết phản ánh, trung vị"]
LIST_COLUMNS = ["Mã phản ánh", "Lĩnh vực", "Mã xã/phường", "Mã cơ quan", "Hạn xử lý",
                "Tình trạng", "Số giờ còn lại (âm: quá hạn)"]
# Open311 fields that identify the reporter or describe their words: never read by a panel.
PERSONAL = {"email", "phone", "first_name", "last_name", "name", "full_name", "device_id",
            "account_id", "description", "media_url", "address", "address_string",
            "address_id", "status_notes", "reporter", "chuhoso"}
# Stored (redacted, for GET /open311/v2/requests), never read by a panel.
REDACTED_TEXT = {"description", "address_string", "status_notes"}


@pytest.fixture(scope="module")
def board() -> Board:
    return to_dict(field_reports.build())


def identifiers(sql: str) -> set[str]:
    """The SQL's words outside string literals and quoted aliases, lower case."""
    return {w.lower() for w in re.findall(r"\b[A-Za-z_]\w*\b",
                                          re.sub(r"'[^']*'|\"[^\"]*\"", "", sql))}


# --- structure ----------------------------------------------------------------------------

def test_every_datasource_is_the_provisioned_one(board: Board) -> None:
    refs = [n["datasource"] for n in walk(board) if "datasource" in n]
    assert len(refs) >= 2 * len(board["panels"]) + 3  # + the three query variables
    assert all(r == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID} for r in refs)


def test_every_template_variable_is_used(board: Board) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    names = ["commune", "agency", "category", "former_district"]
    assert list(variables) == [*names, "trend"]
    for name in names:  # "All" is SQL NULL, one at a time
        v = variables[name]
        assert (v["includeAll"], v["allValue"], v["multi"]) == (True, "NULL", False)
    assert [o["value"] for o in variables["trend"]["options"]] == PERIODS
    assert variables["trend"]["allowCustomValue"] is False
    assert_each_query_filters(board, names)
    assert trended(board) == [TREND]


def test_settings_titles_and_no_personal_data(board: Board) -> None:
    assert board["uid"] == field_reports.UID and board["editable"] is False
    assert board["title"].endswith("Phản ánh hiện trường")
    titles = [board["title"], *(p["title"] for p in board["panels"])]
    titles += [v["label"] for v in board["templating"]["list"]]
    for title in titles:
        assert unicodedata.is_normalized("NFC", title), title
    assert {p["title"] for p in board["panels"]} == {*TILES, BY_CATEGORY, BY_COMMUNE, TREND,
                                                     DURATIONS, LATE_LIST, MAP, UNASSIGNED_TILE,
                                                     UNASSIGNED_LIST}
    sqls = queries(board) + [v["query"] for v in board["templating"]["list"]
                             if v["type"] == "query"]
    for sql in sqls:
        sources = set(re.findall(r"(?<!epoch )\bFROM\s+(\w+)", sql))
        assert sources <= {"field_report_facts", "field_report_facts_at", "field_reports",
                           "dossiers", "b", "x",
                           "ioc_communes", "ioc_agencies", "ioc_categories"}, sql
        assert not identifiers(sql) & PERSONAL, sql
    assert identifiers("SELECT email, \"a\" FROM t WHERE x = 'phone'") & PERSONAL == {"email"}
    panels = {p["title"]: p for p in board["panels"]}
    assert panels[DURATIONS]["type"] == "barchart" and panels[MAP]["type"] == "geomap"
    layer = panels[MAP]["options"]["layers"][0]
    assert layer["type"] == "markers"
    assert layer["location"] == {"mode": "coords", "latitude": "latitude",
                                 "longitude": "longitude"}
    assert layer["config"]["style"]["color"]["field"] == "Tình trạng"
    (override,) = panels[MAP]["fieldConfig"]["overrides"]
    colours = override["properties"][0]["value"][0]["options"]
    assert set(colours) == {*LABELS.values(), "Quá hạn"} and colours["Quá hạn"]["color"] == "red"
    assert_hours_left_coloured(panels[LATE_LIST], LIST_COLUMNS[-1])
    for title in (LATE_LIST, MAP, UNASSIGNED_LIST):  # codes, category, place, dates, status
        sql = panels[title]["targets"][0]["rawSql"]
        listed = identifiers(sql.split("FROM field_report_facts")[0])
        assert listed <= {"select", "as", "case", "when", "then", "else", "end", "status",
                          "overdue", "service_request_id", "service_name", "service_code",
                          "commune_code", "agency_code", "expected_datetime", "lat", "long",
                          "requested_datetime",
                          "latitude", "longitude", "coalesce", "round", "extract", "epoch",
                          "from", "now", "numeric", "least", "__timeto", "timestamptz"}, title


# --- ground truth -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    # seed 47: open reports overdue, due soon and not yet due; none near now() or now() + 24 h;
    # every 7th report not placed in a commune
    return scenario.build(seed=47, dossiers=20, documents=10, reports=90, malformed=False,
                          unassigned_every=7)


def shown(commune: str) -> str:
    return commune or UNASSIGNED


def chosen(sc: scenario.Scenario, ward: str | None, agency: str | None, category: str | None,
           district: str | None, since: datetime | None) -> scenario.Scenario:
    sub = sc.subset(commune=ward, since=since, former_district=district)
    return scenario.Scenario(now=sc.now, reports=[
        r for r in sub.reports
        if agency in (None, r.agency) and category in (None, r.service_code)])


def counts(sc: scenario.Scenario, reports: list[scenario.Report]) -> list[Any]:
    k = scenario.Scenario(now=sc.now, reports=reports).expected_report_kpis()
    return [k[key] for key in KEYS]


def grouped(sel: scenario.Scenario, key: str) -> dict[str, list[scenario.Report]]:
    return by_attribute(sel.reports, key)


def trend(sel: scenario.Scenario, start: datetime, end: datetime,
          unit: str) -> dict[datetime, tuple[int, int]]:
    """New reports by request time, resolved ones by resolution time, each within the range."""
    new, done = Counter[datetime](), Counter[datetime]()
    for r in sel.reports:
        if start <= r.requested_at <= end:
            new[period_start(r.requested_at, unit)] += 1
        if r.status in RESOLVED and start <= r.updated_at <= end:
            done[period_start(r.updated_at, unit)] += 1
    return {t: (new[t], done[t]) for t in new | done}


def durations(sel: scenario.Scenario) -> list[tuple[str, int]]:
    hours = [(r.updated_at - r.requested_at).total_seconds() / 3600
             for r in sel.reports if r.status in RESOLVED]
    return [(label, sum(low <= h < high for h in hours)) for label, low, high in HOURS]


def late_list(sel: scenario.Scenario) -> list[tuple[Any, ...]]:
    """Open reports past their expected date or due within the horizon, by expected date."""
    late = sorted((r for r in sel.reports
                   if r.status in OPEN and r.expected_at < sel.now + scenario.DUE_SOON),
                  key=lambda r: (r.expected_at, r.request_id))
    return [(r.request_id, SERVICE_NAME, shown(r.commune), r.agency, r.expected_at,
             LABELS[r.status],
             (r.expected_at - sel.now).total_seconds() / 3600)
            for r in late[:field_reports.LIST_LIMIT]]


def test_no_expected_date_near_a_boundary(sc: scenario.Scenario) -> None:
    """The database's now() runs a little after the scenario's: keep the lists exact."""
    for r in sc.reports:
        for boundary in (sc.now, sc.now + scenario.DUE_SOON):
            assert r.status not in OPEN or abs(r.expected_at - boundary) > timedelta(hours=1), \
                r.request_id


def unassigned(sel: scenario.Scenario, where: dict[str, tuple[float, float]]) -> list[tuple]:
    """Reports without a commune, oldest request first: the duty officer's queue."""
    queue = sorted((r for r in sel.reports if r.commune == ""),
                   key=lambda r: (r.requested_at, r.request_id))
    return [(r.request_id, SERVICE_NAME, r.requested_at, r.agency, label(sel, r),
             *where[r.request_id]) for r in queue[:field_reports.LIST_LIMIT]]


# --- every query on real servers ----------------------------------------------------------

def check_board(settings: Settings, sc: scenario.Scenario) -> None:
    board = to_dict(field_reports.build())
    panels = {p["title"]: p["targets"][0] for p in board["panels"]}
    end = sc.now + timedelta(minutes=5)
    ranges = time_ranges(sc, days=21, recent=6)
    specs = {v["name"]: v for v in board["templating"]["list"]}
    where_is = places(sc)
    with connect(settings) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'field_reports' AND table_schema = current_schema()")}
        assert "service_request_id" in columns and columns & PERSONAL == REDACTED_TEXT
        options: dict[str, list[str]] = {}
        for name, truth in (("agency", {r.agency: f"Cơ quan {r.agency}" for r in sc.reports}),
                            ("category", {r.service_code: SERVICE_NAME for r in sc.reports})):
            cols, rows = run(conn, specs[name]["query"], Context(ranges[0], end))
            assert cols == ["__value", "__text"]
            assert rows == [(code, f"{text} ({code})") for code, text in sorted(truth.items())]
            options[name] = [r[0] for r in rows]
        rows = conn.execute(expand(specs["commune"]["query"], Context(ranges[0], end))).fetchall()
        options["commune"] = [r[0] for r in rows]
        cols, rows = run(conn, specs["former_district"]["query"], Context(ranges[0], end))
        assert cols == ["__value", "__text"]
        assert rows == [(c, f"Huyện cũ {c}") for c in scenario.FORMER_DISTRICTS]
        options["former_district"] = districts = [r[0] for r in rows]
        assert options["commune"] == sorted({d.commune for d in sc.dossiers}
                                            | {r.commune for r in sc.reports} - {""})
        ward, agency, category = options["commune"][1], options["agency"][0], options["category"][2]
        selections = [(None, None, None, None), (ward, None, None, None),
                      (None, agency, None, None), (None, None, category, None),
                      (ward, agency, category, None), (None, None, None, districts[0]),
                      (None, None, category, districts[1])]
        seen = Counter[str]()
        for start in ranges:
            for choice in selections:
                sel = chosen(sc, *choice, since=start)
                kpis = sel.expected_report_kpis()
                by_category = [(code, SERVICE_NAME, GROUP, *counts(sc, rs))
                               for code, rs in grouped(sel, "service_code").items()]
                by_commune = [(shown(code), *counts(sc, rs))
                              for code, rs in grouped(sel, "commune").items()]
                queue = unassigned(sel, where_is)
                spread, late, dots = durations(sel), late_list(sel), points(sel, where_is)
                seen.update(categories=len(by_category), late=sum(e[6] < 0 for e in late),
                            soon=sum(e[6] >= 0 for e in late), dots=len(dots),
                            not_yet_due=sum(r.status in OPEN
                                            and r.expected_at >= sel.now + scenario.DUE_SOON
                                            for r in sel.reports),
                            resolved=sum(n for _, n in spread),
                            district=len(sel.reports) if choice[3] else 0,
                            unassigned=len(queue))
                for timescaledb in (True, False):
                    # every period for "All", days for the narrower choices (time)
                    for unit in PERIODS if choice == (None,) * 4 else ["day"]:
                        values = {name: variable(specs[name], value, options[name])
                                  for name, value in zip(("commune", "agency", "category",
                                                          "former_district"),
                                                         choice, strict=True)}
                        values["trend"] = variable(specs["trend"], unit, PERIODS)
                        ctx = Context(start, end, interval=timedelta(hours=1),
                                      timescaledb=timescaledb, variables=values)
                        where = (start, *choice, timescaledb, unit)
                        expected = trend(chosen(sc, *choice, since=None), start, end, unit)
                        seen.update(periods=len(expected))
                        assert panels[TREND]["format"] == "time_series"
                        cols, rows = run(conn, panels[TREND]["rawSql"], ctx)
                        assert cols == ["time", "Phản ánh mới", "Đã giải quyết"]
                        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
                        assert {t.astimezone(UTC): (n, d) for t, n, d in rows} == expected, where
                    for title, key in TILES.items():
                        _, rows = run(conn, panels[title]["rawSql"], ctx)
                        assert len(rows) == 1 and len(rows[0]) == 1, (title, *where)
                        assert plain(rows[0][0]) == kpis[key], (title, *where)
                    cols, rows = run(conn, panels[BY_CATEGORY]["rawSql"], ctx)
                    assert cols == ["Mã lĩnh vực", "Lĩnh vực", "Nhóm", *COUNT_COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == by_category, where
                    cols, rows = run(conn, panels[BY_COMMUNE]["rawSql"], ctx)
                    assert cols == ["Mã xã/phường", *COUNT_COLUMNS]
                    assert [tuple(map(plain, r)) for r in rows] == by_commune, where
                    cols, rows = run(conn, panels[DURATIONS]["rawSql"], ctx)
                    assert cols == ["Thời gian", "Phản ánh"] and rows == spread, where
                    cols, rows = run(conn, panels[LATE_LIST]["rawSql"], ctx)
                    assert cols == LIST_COLUMNS
                    assert [r[:6] for r in rows] == [e[:6] for e in late], where
                    drift = (datetime.now(UTC) - sc.now).total_seconds() / 3600
                    for row, want in zip(rows, late, strict=True):
                        assert want[6] - drift - 0.05 <= plain(row[6]) <= want[6] + 0.05, where
                    cols, rows = run(conn, panels[MAP]["rawSql"], ctx)
                    assert cols == ["latitude", "longitude", "Tình trạng", "Lĩnh vực",
                                    "Mã phản ánh"]
                    assert rows == dots, where
                    _, rows = run(conn, panels[UNASSIGNED_TILE]["rawSql"], ctx)
                    assert rows == [(sum(r.commune == "" for r in sel.reports),)], where
                    cols, rows = run(conn, panels[UNASSIGNED_LIST]["rawSql"], ctx)
                    assert cols == UNASSIGNED_COLUMNS and rows == queue, where
    assert all(seen[k] > 0 for k in ("categories", "late", "soon", "not_yet_due", "dots",
                                     "resolved", "periods", "district", "unassigned")), seen


def test_every_query_on_plain_postgresql(settings: Settings, sc: scenario.Scenario) -> None:
    check_board(loaded(settings, sc, timescaledb=False), sc)


def test_every_query_on_timescaledb(timescale: TimescaleServer, sc: scenario.Scenario) -> None:
    check_board(on_timescaledb(timescale, sc), sc)

