"""Grafana alert-rule provisioning (dashboards/alerting.py) and the alert annotations of every
dashboard (dashboards/annotations.py).

The export is checked against the fields Grafana 11.6's file provisioning requires
(pkg/services/provisioning/alerting/rules_types.go), and every rule's SQL is expanded with
Grafana's macros (dashboards/macros.py) and run on real PostgreSQL and real TimescaleDB with
the scenario's data: the values per series must equal the KPIs computed here from the
scenario's ground truth (windows computed here in Vietnam's calendar) and what
ioc.alerts.evaluate.measure returns at the same moment. The annotation queries run on known
`alerts` rows and must return exactly the rows, texts and tags written here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as model

from dashboards import alerting
from dashboards import build as builder
from dashboards.macros import Context, Variable, expand
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, to_dict
from ioc.alerts.evaluate import measure
from ioc.alerts.rules import Rule, load_rules
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import loaded, on_timescaledb, plain
from tests.support.timescaledb import TimescaleServer

VIETNAM = scenario.VIETNAM
# Prometheus model.ParseDuration, as Grafana reads `for` and `interval`.
PROM_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
NO_DATA_STATES = {"Alerting", "NoData", "OK", "KeepLast"}
ERROR_STATES = {"Alerting", "Error", "OK", "KeepLast"}


def rule(**fields: object) -> Rule:
    base: dict[str, object] = {
        "name": "test-rule", "metric": "dossiers.on_time_rate", "scope": "each agency",
        "comparison": "<", "threshold": 90, "window": "last 60 days", "for": "10 minutes",
        "severity": "warning", "recipients": ["ioc-duty-officer"],
    }
    base.update(fields)
    return Rule.model_validate(base)


# --- the export's structure ---------------------------------------------------------------

def test_committed_rules_file_is_what_the_rules_generate(tmp_path: Path) -> None:
    assert alerting.check() == []
    assert alerting.RULES_FILE not in builder.check_all()  # `ioc dashboards build --check`
    copy = tmp_path / "rules.yaml"
    assert alerting.check(copy) == [copy]  # missing
    alerting.build(copy)
    assert alerting.check(copy) == []
    copy.write_text(copy.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert alerting.check(copy) == [copy]


def check_query(query: dict[str, Any]) -> None:
    assert set(query) <= {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"}
    assert query["model"]["refId"] == query["refId"]
    if query["datasourceUid"] == "__expr__":
        assert query["model"]["datasource"] == {"type": "__expr__", "uid": "__expr__"}
        assert query["model"]["type"] in {"reduce", "threshold", "math"}
        return
    assert query["datasourceUid"] == DATASOURCE_UID
    model_ = query["model"]
    assert model_["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
    assert model_["format"] == "table" and model_["rawQuery"] is True and model_["rawSql"]
    span = query["relativeTimeRange"]
    assert isinstance(span["from"], int) and span["from"] > span["to"] == 0


def test_the_file_has_what_grafana_requires() -> None:
    """AlertRuleGroupV1 / AlertRuleV1 / QueryV1 of Grafana's file provisioning."""
    document = yaml.safe_load(alerting.RULES_FILE.read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1 and set(document) == {"apiVersion", "groups"}
    exportable = [r for r in load_rules(alerting.RULES_DIR)
                  if getattr(r, "kind", "threshold") in alerting.EXPORTED_KINDS]
    rules = [r for g in document["groups"] for r in g["rules"]]
    assert len(rules) == len(exportable) >= 3
    uids, titles = [r["uid"] for r in rules], [r["title"] for r in rules]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for group in document["groups"]:
        assert set(group) == {"orgId", "name", "folder", "interval", "rules"}
        assert group["orgId"] == 1 and group["name"].strip() and group["folder"].strip()
        assert PROM_DURATION.match(group["interval"]) and group["interval"] != ""
        for grafana in group["rules"]:
            assert UID.match(grafana["uid"]), grafana["uid"]
            assert 0 < len(grafana["title"].encode()) <= 190 and "$" not in grafana["title"]
            assert PROM_DURATION.match(grafana["for"]), grafana["for"]
            assert grafana["noDataState"] in NO_DATA_STATES
            assert grafana["execErrState"] in ERROR_STATES
            assert grafana["isPaused"] is False
            refs = [q["refId"] for q in grafana["data"]]
            assert refs == ["A", "B", "C"] and grafana["condition"] == "C"
            for query in grafana["data"]:
                check_query(query)
            b, c = (q["model"] for q in grafana["data"][1:])
            assert b["type"] == "reduce" and b["expression"] == "A"
            assert (c["expression"] == "B") if c["type"] == "threshold" else "$B" in c["expression"]
            labels = grafana["labels"]
            assert labels["severity"] in {"info", "warning", "critical"}
            assert all(isinstance(v, str) and "$" not in v for v in labels.values())
            assert set(grafana["annotations"]) == {"summary", "description"}
            assert "${" not in json.dumps(grafana["annotations"])  # braced: Grafana expands
    on_time = next(r for r in rules if r["labels"]["ioc_rule"] == "dossiers-on-time-by-agency")
    assert on_time["for"] == "15m" and on_time["labels"]["severity"] == "warning"
    assert "{{ $labels.agency }}" in on_time["annotations"]["summary"]
    assert on_time["data"][2]["model"]["conditions"][0]["evaluator"] == {
        "params": [99.0], "type": "lt"}


def test_durations_uids_comparisons_and_skipped_kinds() -> None:
    assert alerting.prometheus_duration(timedelta(0)) == "0s"
    assert alerting.prometheus_duration(timedelta(minutes=90)) == "1h30m"
    assert alerting.prometheus_duration(timedelta(days=1, seconds=1.5)) == "1d1s500ms"
    assert alerting.rule_uid("on-time") == "ioc-on-time"
    long = alerting.rule_uid("a" * 60)
    dotted = alerting.rule_uid("x.y")
    assert UID.match(long) and UID.match(dotted) and dotted != alerting.rule_uid("x-y")
    surge = Rule.model_validate({"name": "surge", "kind": "surge", "scope": "each commune",
                                 "severity": "warning", "recipients": ["ioc-duty-officer"]})
    document, skipped = alerting.export([
        rule(name="le", comparison="<=", threshold="99.50"),
        rule(name="ge", comparison=">=", threshold=3, scope="commune: 07900"),
        surge,
    ])
    assert [(name, reason.split(":")[0]) for name, reason in skipped] == [
        ("surge", "kind surge")]
    le, ge = document["groups"][0]["rules"]
    assert le["data"][2]["model"]["expression"] == "$B <= 99.5"
    assert ge["data"][2]["model"]["expression"] == "$B >= 3"
    assert ge["labels"] == {"severity": "warning", "ioc_rule": "ge", "commune": "07900"}
    assert "# Not exported: surge (kind surge" in alerting.render([surge])


# --- the SQL on real servers, against the ground truth and measure() ----------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=70, documents=40, reports=30, malformed=False)


def cases(at: datetime) -> list[Rule]:
    """Every scope kind and window kind; `at` is the evaluation moment."""
    return [
        rule(name="on-time-agencies", window="last 60 days"),
        rule(name="overdue-communes", metric="field_reports.overdue", scope="each commune",
             comparison=">", threshold=1, window="last 30 days"),
        rule(name="satisfaction-communes-month", metric="dossiers.satisfaction_rate",
             scope="each commune", comparison="<=", threshold=50, window="this_month"),
        rule(name="online-province", metric="dossiers.online_rate", scope="province",
             comparison="<", threshold=70, window="last 20 days"),
        rule(name="received-agency-today", metric="dossiers.received",
             scope=f"agency: {scenario.AGENCIES[0]}", comparison=">=", threshold=1,
             window="today"),
        rule(name="received-province-today", metric="dossiers.received", scope="province",
             comparison=">", threshold=1, window="today"),
        rule(name="online-agencies-today", metric="dossiers.online_rate", scope="each agency",
             comparison="<", threshold=50, window="today"),
        rule(name="backlog-commune", metric="documents.backlog",
             scope=f"commune: {scenario.COMMUNES[1]}", comparison=">", threshold=2,
             window="last 15 days"),
        *load_rules(alerting.RULES_DIR),
    ]


def window(r: Rule, at: datetime) -> tuple[datetime, datetime]:
    """The rule's period at `at`, computed here in Vietnam's calendar (not Window.bounds)."""
    if r.window.kind == "last":
        assert r.window.length is not None
        return at - r.window.length, at
    local = at.astimezone(VIETNAM)
    if r.window.kind == "today":
        start = datetime(local.year, local.month, local.day, tzinfo=VIETNAM)
        return start, datetime.combine(start.date() + timedelta(days=1), start.time(), VIETNAM)
    start = datetime(local.year, local.month, 1, tzinfo=VIETNAM)
    following = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=VIETNAM)
    return start, following


def truth(sc: scenario.Scenario, r: Rule, at: datetime) -> dict[str | None, float | int]:
    """Scope key (None for one value) -> the KPI from the ground truth as of `at`, None values
    left out."""
    family, key = r.metric.split(".")
    since, until = window(r, at)
    then = sc.as_of(at)

    def part(commune: str | None = None, agency: str | None = None) -> scenario.Scenario:
        def keep(item: Any, anchor: datetime) -> bool:
            return (since <= anchor < until and (commune is None or item.commune == commune)
                    and (agency is None or item.agency == agency))
        return scenario.Scenario(
            now=at, dossiers=[d for d in then.dossiers if keep(d, d.received_at)],
            documents=[d for d in then.documents if keep(d, d.created_at)],
            reports=[x for x in then.reports if keep(x, x.requested_at)])

    def kpi(s: scenario.Scenario) -> Any:
        return {"dossiers": s.expected_dossier_kpis, "documents": s.expected_document_kpis,
                "field_reports": s.expected_report_kpis}[family]()[key]

    items = {"dossiers": part().dossiers, "documents": part().documents,
             "field_reports": part().reports}[family]
    scope = r.scope
    if scope.kind == "each_agency":
        values = {a: kpi(part(agency=a)) for a in {i.agency for i in items}}
    elif scope.kind == "each_commune":
        values = {c: kpi(part(commune=c)) for c in {i.commune for i in items}}
    else:
        values = {None: kpi(part(commune=scope.code if scope.kind == "commune" else None,
                                 agency=scope.code if scope.kind == "agency" else None))}
    return {k: v for k, v in values.items() if v is not None}


def fires(grafana: dict[str, Any], value: float) -> bool:
    """Expressions B (reduce last of one number: itself) and C of the exported rule."""
    c = grafana["data"][2]["model"]
    if c["type"] == "threshold":
        evaluator = c["conditions"][0]["evaluator"]
        limit = evaluator["params"][0]
        return value < limit if evaluator["type"] == "lt" else value > limit
    found = re.fullmatch(r"\$B (<=|>=) (\S+)", c["expression"])
    assert found, c["expression"]
    limit = float(found[2])
    return value <= limit if found[1] == "<=" else value >= limit


def received_that_day(sc: scenario.Scenario, at: datetime, tz: ZoneInfo) -> int:
    local = at.astimezone(tz)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    end = datetime.combine(start.date() + timedelta(days=1), start.time(), tz)
    return sum(start <= d.received_at < end for d in sc.dossiers)


def moments(sc: scenario.Scenario) -> list[datetime]:
    """Evaluation moments: one in the middle of the data; one where a calendar day cut in
    another time zone (UTC, Tokyo) holds another number of dossiers than Vietnam's day; one
    near the end (the KPIs are as of each moment)."""
    others = (ZoneInfo("UTC"), ZoneInfo("Asia/Tokyo"))
    telling = next(at for at in sorted(d.received_at + timedelta(seconds=30) for d in sc.dossiers)
                   if all(received_that_day(sc, at, tz) != received_that_day(sc, at, VIETNAM)
                          for tz in others))
    return [sc.now - timedelta(days=9, hours=3, minutes=7, seconds=11, microseconds=250_000),
            telling, sc.now - timedelta(hours=1, minutes=3, seconds=5)]


def run_rules(settings: Settings, sc: scenario.Scenario) -> None:
    many = 0
    for at in moments(sc):
        many += run_rules_at(settings, sc, at)
    assert many >= 6  # several rules have several series: the test can tell them apart


def run_rules_at(settings: Settings, sc: scenario.Scenario, at: datetime) -> int:
    """Every threshold rule's series at `at`; returns how many had two series or more."""
    rules = [r for r in cases(at) if getattr(r, "kind", "threshold") == "threshold"]
    with connect(settings) as conn:
        return sum(len(check_rule(conn, r, at, truth(sc, r, at))) >= 2 for r in rules)


def check_rule(conn: psycopg.Connection, r: Rule, at: datetime,
               expected: dict[str | None, Any]) -> dict[str | None, Any]:
    """The exported rule's query A, expanded as Grafana would at `at` and run: its series
    equal `expected` and measure(); its expressions B and C fire where the rule is breached."""
    document, skipped = alerting.export([r])
    assert skipped == []
    (grafana,) = document["groups"][0]["rules"]
    query = grafana["data"][0]
    assert query["model"]["rawSql"] == alerting.sql(r)
    span = timedelta(seconds=query["relativeTimeRange"]["from"])
    measured = {m.scope.split(":", 1)[1] if r.scope.kind.startswith("each") else None:
                plain(m.value) for m in measure(conn, r, at, VIETNAM) if m.value is not None}
    for timescaledb in (True, False):
        ctx = Context(at - span, at, interval=timedelta(minutes=1), timescaledb=timescaledb)
        cursor = conn.execute(expand(query["model"]["rawSql"], ctx))
        columns = [c.name for c in cursor.description or []]
        rows = cursor.fetchall()
        label = alerting.SCOPE_LABEL.get(r.scope.kind)
        assert columns == ([label, "value"] if label else ["value"]), r.name
        assert label or len(rows) <= 1, r.name
        keyed = rows if label else [(None, *row) for row in rows]
        got = {k: plain(v) for k, v in keyed}
        assert got == expected == measured, (r.name, timescaledb)
        breached = {k for k, m in measured.items() if r.breached(Decimal(str(m)))}
        assert {k for k, v in got.items() if fires(grafana, float(v))} == breached
    return expected


CURSORS = {"dvcqg": -timedelta(minutes=42), "edxml": -timedelta(days=3, seconds=30),
           "open311": timedelta(hours=1)}  # connector -> cursor move, from the moment


def run_kinds(settings: Settings, sc: scenario.Scenario) -> None:
    """due_soon and no_signal a day before the data was written (so no event was ingested
    yet: only the connectors' cursors, written here, tell when sources last sent)."""
    at = sc.now - timedelta(days=1, minutes=13, seconds=7)
    with connect(settings) as conn:
        conn.execute("DELETE FROM connector_cursors")
        for connector, offset in CURSORS.items():
            conn.execute("INSERT INTO connector_cursors VALUES (%s, 'x', %s)",
                         (connector, at + offset))
        conn.commit()
        silent = {"dvcqg": 42.0, "edxml": 4320.5}  # minutes; open311's move is after `at`
        signal = {"kind": "no_signal", "recipients": ["ioc-duty-officer"], "severity": "warning"}
        for name, scope, expected in (
                ("silent-any", "each source", silent),
                ("silent-dvcqg", "source: dvcqg", {None: 42.0}),
                ("silent-open311", "source: open311", {})):
            r = Rule.model_validate({**signal, "name": name, "scope": scope,
                                     "expected": "2 hours"})
            check_rule(conn, r, at, expected)
        due = {"kind": "due_soon", "recipients": ["agency-head"], "severity": "info"}
        many = 0
        for name, scope, within, threshold in (
                ("due-agencies", "each agency", timedelta(hours=24), 1),
                ("due-communes", "each commune", timedelta(days=5), 2),
                ("due-province", "province", timedelta(days=3), 4),
                ("due-agency", f"agency: {A1}", timedelta(days=4), 1)):
            r = Rule.model_validate({**due, "name": name, "scope": scope, "within": within,
                                     "threshold": threshold})
            many += len(check_rule(conn, r, at, due_soon(sc, r, at, within))) >= 2
        assert many >= 2


def due_soon(sc: scenario.Scenario, r: Rule, at: datetime,
             within: timedelta) -> dict[str | None, int]:
    """Dossiers open at `at` due in [at, at + within), per key of every open dossier (ground
    truth)."""
    open_ = [d for d in sc.as_of(at).dossiers if d.in_process]
    assert open_

    def count(ds: list[scenario.Dossier]) -> int:
        return sum(at <= d.due_at < at + within for d in ds)
    scope = r.scope
    if scope.kind in ("each_agency", "each_commune"):
        key = scope.kind.removeprefix("each_")
        codes = {getattr(d, key) for d in open_}
        return {c: count([d for d in open_ if getattr(d, key) == c]) for c in codes}
    if scope.kind == "province":
        return {None: count(open_)}
    return {None: count([d for d in open_ if getattr(d, scope.kind) == scope.code])}


def test_rule_sql_on_plain_postgresql(settings: Settings, sc: scenario.Scenario) -> None:
    run_rules(loaded(settings, sc, timescaledb=False), sc)
    run_kinds(settings, sc)
    run_annotations(settings)


def test_rule_sql_on_timescaledb(timescale: TimescaleServer, sc: scenario.Scenario) -> None:
    settings = on_timescaledb(timescale, sc)
    run_rules(settings, sc)
    run_kinds(settings, sc)
    run_annotations(settings)


# --- annotations --------------------------------------------------------------------------

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
A1, A2 = scenario.AGENCIES[:2]
C1, C2 = scenario.COMMUNES[:2]
# at, rule, scope, state, value, threshold, comparison, severity, silenced_until
ALERTS = [
    (T0 - timedelta(days=2), "r-old", f"commune:{C1}", "firing", 9, 5, ">", "critical", None),
    (T0, "overdue", f"commune:{C1}", "firing", 7, 5, ">", "critical", None),
    (T0 + timedelta(minutes=1), "overdue", f"commune:{C2}", "pending", Decimal("6.50"), 5, ">",
     "critical", None),
    (T0 + timedelta(minutes=2), "on-time", f"agency:{A1}", "pending", Decimal("95.50"),
     Decimal("99.00"), "<", "warning", None),
    (T0 + timedelta(minutes=3), "on-time", f"agency:{A1}", "silenced", None, 99, "<", "warning",
     T0 + timedelta(hours=2)),
    (T0 + timedelta(minutes=4), "online", "province", "resolved", 81, 80, "<", "info", None),
    (T0 + timedelta(minutes=5), "overdue", f"commune:{C1}", "acknowledged", 8, 5, ">",
     "critical", None),
    (T0 + timedelta(minutes=6), "on-time", f"agency:{A2}", "firing", 90, 99, "<", "warning",
     None),
]
# What each row of ALERTS must read as (ground truth, written out by hand).
TEXTS = [
    f"Đang cảnh báo — r-old — Xã/phường {C1} — giá trị 9 > ngưỡng 5",
    f"Đang cảnh báo — overdue — Xã/phường {C1} — giá trị 7 > ngưỡng 5",
    f"Chờ kích hoạt — overdue — Xã/phường {C2} — giá trị 6.5 > ngưỡng 5",
    f"Chờ kích hoạt — on-time — Cơ quan {A1} — giá trị 95.5 < ngưỡng 99",
    f"Tạm tắt thông báo — on-time — Cơ quan {A1} — giá trị không có dữ liệu < ngưỡng 99",
    "Đã trở lại bình thường — online — Toàn tỉnh — giá trị 81 < ngưỡng 80",
    f"Đã tiếp nhận — overdue — Xã/phường {C1} — giá trị 8 > ngưỡng 5",
    f"Đang cảnh báo — on-time — Cơ quan {A2} — giá trị 90 < ngưỡng 99",
]
COLOURS = {"critical": "red", "warning": "orange", "info": "blue"}


def insert_alerts(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM alerts")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alerts (at, rule, scope, state, value, threshold, comparison, severity,"
            " silenced_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", ALERTS)
    conn.commit()


def expected_annotations(severity: str, chosen: dict[str, str | None], start: datetime,
                         end: datetime) -> list[tuple[datetime, datetime | None, str, list[str]]]:
    wanted = {f"{name}:{code}" for name, code in chosen.items() if code is not None}
    out = []
    for row, text in zip(ALERTS, TEXTS, strict=True):
        at, name, scope, state, *_, level, until = row
        if level != severity or not start <= at <= end:
            continue
        if wanted and scope != "province" and scope not in wanted:
            continue
        out.append((at, until, text, [level, state, name, scope]))
    return out


def run_annotations(settings: Settings) -> None:
    start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    with connect(settings) as conn:
        insert_alerts(conn)
        seen = 0
        for name, text in builder.generate().items():
            board = json.loads(text)
            names = [v["name"] for v in board.get("templating", {}).get("list", [])]
            scoped = [n for n in ("commune", "agency") if n in names]
            choices: list[dict[str, str | None]] = [dict.fromkeys(scoped)]
            if "commune" in scoped:
                choices.append({**dict.fromkeys(scoped), "commune": C1})
            if "agency" in scoped:
                choices.append({**dict.fromkeys(scoped), "agency": A1})
            for annotation in board["annotations"]["list"]:
                severity = next(s for s, c in COLOURS.items() if c == annotation["iconColor"])
                for chosen in choices:
                    variables = {n: Variable(n, v, include_all=True, all_value="NULL")
                                 for n, v in chosen.items()}
                    ctx = Context(start, end, variables=variables)
                    cursor = conn.execute(expand(annotation["target"]["rawSql"], ctx))
                    assert [c.name for c in cursor.description or []] == [
                        "time", "timeend", "text", "tags"]
                    rows = [(t, e, x, tags.split(",")) for t, e, x, tags in cursor.fetchall()]
                    assert rows == expected_annotations(severity, chosen, start, end), (
                        name, severity, chosen)
                    seen += len(rows)
        assert seen > 0


def test_every_dashboard_has_the_alert_annotations() -> None:
    generated = builder.generate()
    assert len(generated) >= 4
    for name, text in generated.items():
        board = json.loads(text)
        annotations = board["annotations"]["list"]
        assert [a["iconColor"] for a in annotations[-3:]] == ["red", "orange", "blue"], name
        for annotation in annotations[-3:]:
            assert annotation["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            assert annotation["enable"] is True and annotation["name"]
            target = annotation["target"]
            assert target["datasource"] == annotation["datasource"]
            assert "$__timeFilter(at)" in target["rawSql"] and "FROM alerts" in target["rawSql"]
            variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
            for scope in ("commune", "agency"):
                assert (f"${scope}::text" in target["rawSql"]) == (scope in variables), name
        # the SQL targets survive a load and re-save through the SDK (annotations.register)
        assert to_dict(model.Dashboard.from_json(board))["annotations"] == board["annotations"]
