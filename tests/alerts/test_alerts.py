"""Alert rules (YAML, validated with file/line/field errors) and their evaluation on real
PostgreSQL and TimescaleDB: which scopes fire is checked against values computed from the
scenario's ground truth (tests/support/scenario.py), never against the SQL itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ioc.alerts import Rule, RuleFileError, evaluate, load_rules
from ioc.cli.alerts import app as alerts_app
from ioc.core.db import connect, migrate
from ioc.core.settings import Settings, get_settings
from tests.support import scenario
from tests.support.alerts import DEFAULT_RULES, refused
from tests.support.store import load
from tests.support.timescaledb import TimescaleServer

VIETNAM = scenario.VIETNAM


def rule(**fields: object) -> Rule:
    base: dict[str, object] = {
        "name": "on-time-by-agency", "metric": "dossiers.on_time_rate", "scope": "each agency",
        "comparison": "<", "threshold": 90, "window": "last 60 days", "for": "10 minutes",
        "severity": "warning", "recipients": ["agency-head", "ioc-duty-officer"],
        "working_hours": False,
    }
    base.update(fields)
    return Rule.model_validate(base)


def rows(settings: Settings) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(
            "SELECT at, rule, scope, state, value, threshold, severity FROM alerts"
            " ORDER BY at, seq").fetchall()


# --- rule files ---------------------------------------------------------------------------

def test_the_province_rules_load() -> None:
    rules = load_rules(DEFAULT_RULES)
    names = {r.name: r for r in rules}
    assert names["dossiers-on-time-by-agency"].threshold == 99
    assert str(names["dossiers-online-rate-month"].window) == "this_month"
    assert names["field-reports-overdue-by-commune"].severity == "critical"


def test_a_bad_rule_names_file_line_and_field(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        "rules:\n"                                   # 1
        "  - name: fine\n"                           # 2
        "    metric: dossiers.on_time_rate\n"        # 3
        "    scope: province\n"                      # 4
        "    comparison: '<'\n"                      # 5
        "    threshold: 99\n"                        # 6
        "    window: today\n"                        # 7
        "    severity: warning\n"                    # 8
        "    recipients: [chairman]\n"               # 9
        "  - name: broken\n"                         # 10
        "    metric: dossiers.nope\n"                # 11
        "    scope: {agency: 000.00.12.H25}\n"       # 12
        "    comparison: '<'\n"                      # 13
        "    threshold: ninety\n"                    # 14
        "    window: last 2 hours\n"                 # 15
        "    for: soon\n"                            # 16
        "    severity: warning\n",                   # 17
        encoding="utf-8",
    )
    error = refused(file)
    found = {(e.line, e.field) for e in error.errors}
    assert found == {(11, "rules[1].metric"), (14, "rules[1].threshold"),
                     (16, "rules[1].for"), (10, "rules[1].recipients")}
    assert f"{file}:14: rules[1].threshold:" in str(error)

    # through the CLI: every error with file:line: field, exit 1
    result = CliRunner().invoke(alerts_app, ["validate", "--rules", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{file}:16: rules[1].for:" in result.output
    validated = CliRunner().invoke(alerts_app, ["validate", "--rules", str(DEFAULT_RULES)])
    assert validated.exit_code == 0


def test_single_rule_file_and_duplicate_names(tmp_path: Path) -> None:
    one = tmp_path / "a.yaml"
    one.write_text("name: x\nmetric: field_reports.overdue\nscope: 'commune: 07900'\n"
                   "comparison: '>'\nthreshold: 5\nwindow: this_month\nseverity: critical\n"
                   "recipients: [chairman]\nworking_hours: tru\n", encoding="utf-8")
    assert [str(e) for e in refused(one).errors] == [
        f"{one}:9: working_hours: Input should be a valid boolean, unable to interpret input"]
    one.write_text(one.read_text(encoding="utf-8").replace("tru\n", "true\n"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(one.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"b\.yaml:1: name: 'x' is already defined"):
        load_rules(tmp_path)


def test_working_hours_routing() -> None:
    night = datetime(2026, 11, 20, 22, 0, tzinfo=VIETNAM)  # a Friday evening
    warning = rule(working_hours=True)
    assert warning.notify_after(night, VIETNAM) == datetime(2026, 11, 23, 7, 30, tzinfo=VIETNAM)
    early = datetime(2026, 11, 19, 6, 0, tzinfo=VIETNAM)
    assert warning.notify_after(early, VIETNAM) == datetime(2026, 11, 19, 7, 30, tzinfo=VIETNAM)
    office = datetime(2026, 11, 19, 10, 0, tzinfo=VIETNAM)
    assert warning.notify_after(office, VIETNAM) == office
    assert rule(working_hours=True, severity="critical").notify_after(night, VIETNAM) == night
    assert rule(working_hours=False).notify_after(night, VIETNAM) == night


def test_windows_are_calendar_periods_in_vietnam() -> None:
    now = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)  # 1 December 01:30 in Vietnam
    today = rule(window="today").window.bounds(now, VIETNAM)
    assert today == (datetime(2026, 12, 1, tzinfo=VIETNAM), datetime(2026, 12, 2, tzinfo=VIETNAM))
    month = rule(window="this_month").window.bounds(now, VIETNAM)
    assert month == (datetime(2026, 12, 1, tzinfo=VIETNAM), datetime(2027, 1, 1, tzinfo=VIETNAM))
    assert rule(window="last 90 minutes").window.bounds(now, VIETNAM) == (
        now - timedelta(minutes=90), now)


# --- evaluation on the scenario -----------------------------------------------------------

@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=90, documents=20, reports=30, malformed=False)


def agency_rates(sc: scenario.Scenario) -> dict[str, float]:
    """On-time rate per agency from the ground truth (docs/domain.md), never from the SQL."""
    rates = {}
    for agency in scenario.AGENCIES:
        part = scenario.Scenario(now=sc.now, dossiers=[d for d in sc.dossiers
                                                       if d.agency == agency])
        rate = part.expected_dossier_kpis()["on_time_rate"]
        if rate is not None:
            rates[agency] = rate
    return rates


def test_on_time_rule_pending_firing_resolved(settings: Settings,
                                              sc: scenario.Scenario) -> None:
    migrate(settings)
    load(settings, sc)
    rates = agency_rates(sc)
    assert len(set(rates.values())) > 1, "the scenario needs agencies with different rates"
    ordered = sorted(rates.values())
    threshold = Decimal(str(round((ordered[0] + ordered[-1]) / 2, 2)))
    below = {f"agency:{a}" for a, r in rates.items() if r < threshold}
    assert below and len(below) < len(rates)

    rules = [rule(threshold=threshold)]
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = evaluate(settings, rules, t0)
    assert {t.scope for t in first} == below
    assert {(t.previous, t.state) for t in first} == {("ok", "pending")}
    assert all(float(t.value) == rates[t.scope.split(":", 1)[1]] for t in first)
    assert evaluate(settings, rules, t0) == []  # same now: nothing new
    assert evaluate(settings, rules, t0 + timedelta(minutes=5)) == []  # `for` not elapsed
    assert len(rows(settings)) == len(below)

    fired = evaluate(settings, rules, t0 + timedelta(minutes=10))
    assert {t.scope for t in fired} == below
    assert {(t.previous, t.state) for t in fired} == {("pending", "firing")}
    assert all(t.notify_after == t0 + timedelta(minutes=10) for t in fired)
    assert evaluate(settings, rules, t0 + timedelta(minutes=10)) == []
    assert evaluate(settings, rules, t0 + timedelta(minutes=11)) == []

    # The threshold drops below every rate: the condition no longer holds anywhere.
    lowered = [rule(threshold=Decimal(str(ordered[0])) - 1)]
    resolved = evaluate(settings, lowered, t0 + timedelta(minutes=12))
    assert {t.scope for t in resolved} == below
    assert {(t.previous, t.state) for t in resolved} == {("firing", "resolved")}
    assert evaluate(settings, lowered, t0 + timedelta(minutes=12)) == []

    written = rows(settings)
    assert len(written) == 3 * len(below)
    states = {(scope, state) for _, _, scope, state, _, _, _ in written}
    assert states == {(s, st) for s in below for st in ("pending", "firing", "resolved")}
    assert {threshold_ for *_, threshold_, _ in written} == {threshold, lowered[0].threshold}
    assert {severity for *_, severity in written} == {"warning"}


def test_for_zero_fires_at_once_and_fixed_scopes(settings: Settings,
                                                 sc: scenario.Scenario) -> None:
    migrate(settings)
    load(settings, sc)
    overdue = sc.expected_report_kpis()["overdue"]
    commune = scenario.COMMUNES[0]
    in_commune = sc.subset(commune=commune).expected_report_kpis()["overdue"]
    rules = [rule(name="overdue-province", metric="field_reports.overdue", scope="province",
                  comparison=">=", threshold=overdue, window="last 60 days", **{"for": 0},
                  severity="critical"),
             rule(name="overdue-commune", metric="field_reports.overdue",
                  scope={"commune": commune}, comparison=">", threshold=in_commune,
                  window="last 60 days", severity="critical"),
             rule(name="overdue-each-commune", metric="field_reports.overdue",
                  scope="each commune", comparison=">", threshold=1, window="last 60 days",
                  **{"for": "0 minutes"}, severity="critical")]
    per_commune = {c: sc.subset(commune=c).expected_report_kpis()["overdue"]
                   for c in scenario.COMMUNES}
    assert any(n > 1 for n in per_commune.values())
    now = datetime.now(UTC)
    transitions = evaluate(settings, rules, now)
    assert sorted((t.rule, t.scope, t.state, t.value) for t in transitions) == sorted(
        [("overdue-province", "province", "firing", overdue)]
        + [("overdue-each-commune", f"commune:{c}", "firing", n)
           for c, n in per_commune.items() if n > 1])
    assert evaluate(settings, rules, now) == []


def test_cli_test_prints_firing_scopes_and_writes_nothing(
    settings: Settings, sc: scenario.Scenario, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    migrate(settings)
    load(settings, sc)
    rates = agency_rates(sc)
    threshold = round(sorted(rates.values())[-1] + 0.5, 2)  # every agency is below
    (tmp_path / "r.yaml").write_text(
        "name: on-time\nmetric: dossiers.on_time_rate\nscope: each agency\ncomparison: '<'\n"
        f"threshold: {threshold}\nwindow: last 60 days\nfor: 5 minutes\nseverity: warning\n"
        "recipients: [agency-head, chairman]\nworking_hours: false\n", encoding="utf-8")
    for name, value in settings.as_env().items():
        if name.startswith("IOC_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(alerts_app, ["test", "on-time", "--rules", str(tmp_path)])
        assert rows(settings) == []  # `test` writes nothing
        evaluate(settings, load_rules(tmp_path), datetime.now(UTC))
        listed = CliRunner().invoke(alerts_app, ["list", "--rules", str(tmp_path)])
        missing = CliRunner().invoke(alerts_app, ["test", "nope", "--rules", str(tmp_path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    for agency, rate in rates.items():
        assert f"FIRE agency:{agency}: {rate:.2f}" in result.output
    assert f"{len(rates)} would fire (warning) to agency-head, chairman" in result.output
    assert listed.exit_code == 0, listed.output
    assert "on-time: dossiers.on_time_rate <" in listed.output
    for agency in rates:
        assert f"  pending agency:{agency} since" in listed.output
    assert missing.exit_code == 1


# --- TimescaleDB ----------------------------------------------------------------------------

def columns_of_alerts(settings: Settings) -> list[tuple[str, str]]:
    with connect(settings) as conn:
        return conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'alerts' ORDER BY ordinal_position",
            (settings.database_schema,)).fetchall()


def test_alerts_is_a_hypertable_on_timescaledb(timescale: TimescaleServer,
                                               settings: Settings) -> None:
    ts = Settings(database_url=timescale.url, database_schema=f"t_{uuid.uuid4().hex[:10]}")
    migrate(ts)
    with connect(ts) as conn:
        hypertables = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = %s", (ts.database_schema,)).fetchall()
    columns = columns_of_alerts(ts)
    migrate(settings)
    assert columns == columns_of_alerts(settings)  # the plain variant: the same table
    assert ("alerts",) in hypertables
    assert [c for c, _ in columns] == ["at", "rule", "scope", "state", "value", "threshold",
                                       "comparison", "severity", "recipients", "notify_after",
                                       "seq", "actor", "note", "silenced_until", "missing"]
    rules = [rule(name="backlog", metric="documents.backlog_overdue", scope="province",
                  comparison=">=", threshold=0, **{"for": "0s"}, severity="info")]
    now = datetime.now(UTC)
    first = evaluate(ts, rules, now)
    assert [(t.state, t.value) for t in first] == [("firing", 0)]
    assert evaluate(ts, rules, now) == []
    assert [r[3] for r in rows(ts)] == ["firing"]
