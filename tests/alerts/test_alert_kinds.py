"""The built-in alert rule kinds (due_soon, surge, no_signal) on real PostgreSQL (and
TimescaleDB for no_signal, where `events` is a hypertable): events go in through the worker's
write path (streams.store.Store) at a fixed `now`; the expected counts and minutes are computed
here from the generated data, never read back from the SQL."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ioc.alerts import Rule, evaluate, load_rules, measure_all
from ioc.alerts.kinds import SurgeMeasurement
from ioc.cli.alerts import app as alerts_app
from ioc.core.db import connect, migrate
from ioc.core.events import Kind, parse_event
from ioc.core.settings import Settings, get_settings
from ioc.embedded.servers import Postgres
from streams.store import Store
from tests.support import scenario
from tests.support.alerts import DEFAULT_RULES, refused
from tests.support.timescaledb import TimescaleServer

VIETNAM = scenario.VIETNAM
NOW = datetime(2026, 11, 18, 15, 0, tzinfo=VIETNAM)  # a Wednesday afternoon, in the past
A, B, C = scenario.AGENCIES
X, Y, Z, W = scenario.COMMUNES


def fresh(url: str) -> Settings:
    settings = Settings(database_url=url, database_schema=f"t_{uuid.uuid4().hex[:10]}")
    migrate(settings)
    return settings


@pytest.fixture
def db(postgres: Postgres) -> Settings:
    """A migrated schema of its own (no broker: these tests write through the Store)."""
    return fresh(postgres.url)


def rule(**fields: object) -> Rule:
    base: dict[str, object] = {"name": "r", "severity": "warning",
                               "recipients": ["ioc-duty-officer"], "working_hours": False}
    return Rule.model_validate({**base, **fields})


def event(kind: str, source: str, at: datetime, payload: dict[str, Any], *,
          commune: str = X, agency: str = A, ingested: datetime | None = None) -> str:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "kind": kind, "source": source,
        "occurred_at": at.isoformat(), "ingested_at": (ingested or at).isoformat(),
        "unit": {"province_code": scenario.PROVINCE, "commune_code": commune},
        "agency": {"code": agency}, "payload": payload})


def store(settings: Settings, kind: Kind, events: list[str]) -> None:
    """The worker's write path, in batches of 50."""
    async def write() -> None:
        writer = Store(settings)
        try:
            parsed = [parse_event(e, kind) for e in events]
            for i in range(0, len(parsed), 50):
                await writer.write(kind, parsed[i:i + 50])
        finally:
            await writer.close()
    asyncio.run(write())


def alert_rows(settings: Settings) -> list[tuple[Any, ...]]:
    with connect(settings) as conn:
        return conn.execute("SELECT scope, state, value FROM alerts ORDER BY at, seq").fetchall()


# --- rule files ---------------------------------------------------------------------------

def test_the_example_rules_of_each_kind_load() -> None:
    rules = {r.name: r for r in load_rules(DEFAULT_RULES)}
    kinds = {r.kind for r in rules.values()}
    assert kinds == {"threshold", "due_soon", "surge", "no_signal"}
    due = next(r for r in rules.values() if r.kind == "due_soon")
    assert due.recipients_for("agency:000.30.02.H25")[0] == "agency-head:000.30.02.H25"


def test_every_metric_and_scope_has_vietnamese_words() -> None:
    from ioc.alerts.message import METRIC_NAMES, scope_text
    from ioc.alerts.rules import KIND_METRICS, METRICS

    assert set(METRICS) | set(KIND_METRICS.values()) <= set(METRIC_NAMES)
    assert scope_text("source:dvcqg") == "Nguồn dữ liệu dvcqg"


def test_kind_errors_name_file_line_and_field(tmp_path: Path) -> None:
    file = tmp_path / "kinds.yaml"
    file.write_text(
        "rules:\n"                                       # 1
        "  - name: due\n"                                # 2
        "    kind: due_soon\n"                           # 3
        "    scope: each agency\n"                       # 4
        "    window: today\n"                            # 5
        "    within: soon\n"                             # 6
        "    severity: info\n"                           # 7
        "    recipients: ['agency-head:{commune}']\n"    # 8
        "  - name: surge\n"                              # 9
        "    kind: surge\n"                              # 10
        "    scope: each commune\n"                      # 11
        "    factor: 0.5\n"                              # 12
        "    baseline: 36 hours\n"                       # 13
        "    threshold: 4\n"                             # 14
        "    severity: warning\n"                        # 15
        "    recipients: [commune-chairman]\n"           # 16
        "  - name: silent\n"                             # 17
        "    kind: no_signal\n"                          # 18
        "    scope: each agency\n"                       # 19
        "    severity: warning\n"                        # 20
        "    recipients: [ioc-duty-officer]\n"           # 21
        "  - name: mixed\n"                              # 22
        "    kind: sometimes\n"                          # 23
        "    scope: province\n"                          # 24
        "    severity: info\n"                           # 25
        "    recipients: [chairman]\n"                   # 26
        "  - name: classic\n"                            # 27
        "    metric: dossiers.received\n"                # 28
        "    scope: each source\n"                       # 29
        "    comparison: '<'\n"                          # 30
        "    threshold: 1\n"                             # 31
        "    window: today\n"                            # 32
        "    expected: 1 hour\n"                         # 33
        "    severity: info\n"                           # 34
        "    recipients: [chairman]\n",                  # 35
        encoding="utf-8",
    )
    error = refused(file)
    found = {(e.line, e.field): e.message for e in error.errors}
    assert set(found) == {
        (5, "rules[0].window"), (6, "rules[0].within"), (8, "rules[0].recipients"),
        (12, "rules[1].factor"), (13, "rules[1].baseline"), (14, "rules[1].threshold"),
        (19, "rules[2].scope"), (17, "rules[2].expected"),
        (23, "rules[3].kind"),
        (29, "rules[4].scope"), (33, "rules[4].expected")}
    assert found[(5, "rules[0].window")] == "not used by kind: due_soon (set within)"
    assert "not a duration" in found[(6, "rules[0].within")]
    assert "{commune}" in found[(8, "rules[0].recipients")]
    assert found[(14, "rules[1].threshold")].startswith("not used by kind: surge")
    assert found[(17, "rules[2].expected")] == "Field required"
    assert found[(33, "rules[4].expected")] == "only for kind: no_signal"
    assert f"{file}:13: rules[1].baseline: whole days" in str(error)


def test_kind_defaults() -> None:
    due = rule(kind="due_soon", scope="each agency", recipients=["agency-head:{agency}"])
    assert (due.metric, due.comparison, due.threshold) == ("dossiers.due_soon", ">=", 1)
    assert due.window.bounds(NOW, VIETNAM) == (NOW, NOW + timedelta(hours=24))
    assert due.recipients_for("agency:X.1") == ("agency-head:X.1",)
    surge = rule(kind="surge", scope="each commune")
    assert (surge.factor, surge.min_count, surge.baseline, surge.threshold) == (
        3, 5, timedelta(days=28), 5)
    assert surge.window.bounds(NOW, VIETNAM) == (NOW - timedelta(hours=1), NOW)
    silent = rule(kind="no_signal", scope="source: dvcqg", expected="90 minutes")
    assert (silent.metric, silent.comparison, silent.threshold) == (
        "sources.silent_minutes", ">", 90)


# --- due soon -----------------------------------------------------------------------------

@dataclass
class Dossier:
    code: str
    agency: str
    status: int
    due_at: datetime


def dossier_event(d: Dossier, at: datetime) -> str:
    return event("dossier", "dvcqg", at, {
        "dossier_code": d.code, "procedure_code": "1.001234", "status": d.status,
        "received_at": (NOW - timedelta(days=3)).isoformat(), "due_at": d.due_at.isoformat()},
        agency=d.agency)


def due_soon_counts(dossiers: list[Dossier], now: datetime,
                    within: timedelta) -> dict[str, int]:
    """Open dossiers due in [now, now + within), per agency with an open dossier."""
    counts: dict[str, int] = {}
    for d in dossiers:
        if d.status in (1, 2, 4, 5, 6):
            counts[d.agency] = counts.get(d.agency, 0) + (now <= d.due_at < now + within)
    return counts


def test_due_soon_per_agency_pending_firing_resolved(db: Settings) -> None:
    rng = random.Random(61)
    within = timedelta(hours=24)
    dossiers: list[Dossier] = []
    # A: many due soon, B: a few, C: open ones, none due soon. Deadlines keep 2 hours away
    # from the window's edges, so moving `now` by 30 minutes changes nothing.
    plan = {A: (7, 5), B: (2, 6), C: (0, 6)}
    for agency, (soon, other) in plan.items():
        for i in range(soon + other):
            if i < soon:
                due = NOW + timedelta(hours=rng.uniform(2, 22))
            else:
                due = NOW + rng.choice([-1, 1]) * timedelta(hours=rng.uniform(26, 90))
            status = rng.choice([2, 4, 5, 6]) if i < soon or rng.random() < 0.5 else \
                rng.choice([3, 7, 9, 10])
            dossiers.append(Dossier(f"{agency}-{i:03d}", agency, status, due))
    # Finished dossiers with a deadline inside the window do not count.
    dossiers.append(Dossier(f"{B}-900", B, 10, NOW + timedelta(hours=3)))
    store(db, Kind.DOSSIER, [dossier_event(d, NOW - timedelta(hours=1)) for d in dossiers])

    expected = due_soon_counts(dossiers, NOW, within)
    assert expected[A] == 7 and expected[B] == 2 and expected[C] == 0
    rules = [rule(kind="due_soon", scope="each agency", threshold=3, within="24 hours",
                  **{"for": "30 minutes"}, recipients=["agency-head:{agency}"])]
    measured = {m.scope: m.value for m in measure_all(db, rules, NOW)}
    assert measured == {f"agency:{a}": n for a, n in expected.items()}

    first = evaluate(db, rules, NOW)
    assert [(t.scope, t.previous, t.state, t.value) for t in first] == [
        (f"agency:{A}", "ok", "pending", 7)]
    assert evaluate(db, rules, NOW) == []
    later = NOW + timedelta(minutes=30)
    assert due_soon_counts(dossiers, later, within) == expected
    fired = evaluate(db, rules, later)
    assert [(t.scope, t.previous, t.state, t.value) for t in fired] == [
        (f"agency:{A}", "pending", "firing", 7)]
    assert fired[0].recipients == (f"agency-head:{A}",)  # the agency responsible

    # A finishes five of its due-soon dossiers: 2 are left, under the threshold of 3.
    done = [d for d in dossiers if d.agency == A and d.status in (2, 4, 5, 6)
            and NOW <= d.due_at < NOW + within][:5]
    for d in done:
        d.status = 10
    store(db, Kind.DOSSIER, [dossier_event(d, later) for d in done])
    end = later + timedelta(minutes=1)
    left = due_soon_counts(dossiers, end, within)[A]
    assert left == 2
    resolved = evaluate(db, rules, end)
    assert [(t.scope, t.previous, t.state, t.value) for t in resolved] == [
        (f"agency:{A}", "firing", "resolved", left)]
    assert [state for _, state, _ in alert_rows(db)] == ["pending", "firing", "resolved"]

    # Fixed scopes: one agency, the whole province (every agency's count, summed).
    fixed = [rule(name="one", kind="due_soon", scope={"agency": B}),
             rule(name="all", kind="due_soon", scope="province", within="90 hours")]
    values = {(m.rule.name, m.scope): m.value for m in measure_all(db, fixed, end)}
    assert values == {("one", f"agency:{B}"): expected[B],
                      ("all", "province"): sum(due_soon_counts(
                          dossiers, end, timedelta(hours=90)).values())}


# --- surge ----------------------------------------------------------------------------------

def report_event(i: int, commune: str, at: datetime) -> str:
    return event("field_report", "open311", at, {
        "service_request_id": f"PAHT-{i:05d}", "service_code": "ROAD", "status": "open",
        "requested_datetime": at.isoformat(), "expected_datetime":
        (at + timedelta(days=3)).isoformat()}, commune=commune)


def test_surge_against_the_usual_level_of_that_hour(db: Settings) -> None:
    rng = random.Random(7)
    hour = timedelta(hours=1)
    reports: list[tuple[str, datetime]] = []

    def add(commune: str, end: datetime, n: int) -> None:
        """n reports inside the hour before `end` (never on its edges)."""
        reports.extend((commune, end - timedelta(minutes=rng.uniform(1, 59))) for _ in range(n))

    for day in range(1, 29):
        past = NOW - timedelta(days=day)  # no daylight saving in Vietnam
        if day % 2:
            add(X, past, 1)  # X: usually 0.5 an hour at this time...
        add(Y, past, 4)  # Y: usually 4
        add(Z, past - 5 * hour, 6)  # other hours of the day do not count
    add(X, NOW, 7)  # ... 7 now: a surge
    add(Y, NOW, 10)  # 10 now: under 3 x 4
    add(Z, NOW, 4)  # under min_count, whatever the usual level
    add(W, NOW - 3 * hour, 9)  # earlier today: not this hour
    reports.append((X, NOW - hour - timedelta(seconds=30)))  # just before the window
    reports.append((X, NOW - timedelta(days=29, minutes=30)))  # before the baseline
    store(db, Kind.FIELD_REPORT, [report_event(i, c, at) for i, (c, at) in enumerate(reports)])

    def expected(now: datetime) -> dict[str, tuple[int, Decimal]]:
        """Per commune: reports in [now - 1 h, now), and the mean of that hour over 28 days."""
        def count(commune: str, end: datetime) -> int:
            return sum(c == commune and end - hour <= at < end for c, at in reports)
        return {c: (count(c, now), Decimal(sum(count(c, now - timedelta(days=d))
                                                for d in range(1, 29))) / 28)
                for c in scenario.COMMUNES}

    truth = expected(NOW)
    assert truth[X] == (7, Decimal("0.5")) and truth[Y] == (10, 4) and truth[Z][0] == 4
    rules = [rule(kind="surge", scope="each commune", factor=3, min_count=5,
                  baseline="28 days", recipients=["commune-chairman:{commune}"])]
    measured = {m.scope: m for m in measure_all(db, rules, NOW)}
    assert {s: m.value for s, m in measured.items() if m.value} == {
        f"commune:{c}": n for c, (n, _) in truth.items() if n}
    for c, (n, usual) in truth.items():
        m = measured.get(f"commune:{c}")
        if m is None:
            assert n == 0 and usual == 0
            continue
        assert isinstance(m, SurgeMeasurement)
        assert m.usual == usual.quantize(Decimal("0.01"))
        assert m.threshold == max(5, 3 * m.usual)
        assert m.breached == (n >= 5 and n >= 3 * usual)
    fired = evaluate(db, rules, NOW)
    assert [(t.scope, t.state, t.value) for t in fired] == [(f"commune:{X}", "firing", 7)]
    assert fired[0].threshold == max(5, 3 * truth[X][1])  # X's own limit, not min_count
    assert fired[0].recipients == (f"commune-chairman:{X}",)
    assert evaluate(db, rules, NOW) == []

    # Two hours later the hour is quiet again.
    later = NOW + 2 * hour
    assert expected(later)[X][0] == 0
    resolved = evaluate(db, rules, later)
    assert [(t.scope, t.previous, t.state) for t in resolved] == [
        (f"commune:{X}", "firing", "resolved")]

    # One commune, a fixed scope: measured even with nothing this hour.
    one = [rule(name="w", kind="surge", scope={"commune": W}, window="last 4 hours")]
    [m] = measure_all(db, one, NOW)
    assert (m.scope, m.value, m.breached) == (f"commune:{W}", 9, True)


# --- no signal ------------------------------------------------------------------------------

def no_signal_case(settings: Settings) -> None:
    """dvcqg sent 10 min ago; edxml's newest event is 2 h old but its cursor moved 20 min
    ago; open311's newest event is after `now` (not counted: the one before, 50.5 min ago);
    legacy-sync has only a cursor, 3 h old."""
    ago = {"dvcqg": timedelta(minutes=10), "edxml": timedelta(minutes=20),
           "open311": timedelta(minutes=50, seconds=30), "legacy-sync": timedelta(hours=3)}
    events = [
        event("dossier", "dvcqg", NOW - timedelta(hours=5), {
            "dossier_code": "D-1", "procedure_code": "1.2", "status": 4},
            ingested=NOW - ago["dvcqg"]),
        event("dossier", "edxml", NOW - timedelta(hours=2), {
            "dossier_code": "D-2", "procedure_code": "1.2", "status": 2}),
        event("dossier", "open311", NOW - timedelta(hours=1), {
            "dossier_code": "D-3", "procedure_code": "1.2", "status": 2},
            ingested=NOW - ago["open311"]),
        event("dossier", "open311", NOW - timedelta(minutes=30), {
            "dossier_code": "D-4", "procedure_code": "1.2", "status": 2},
            ingested=NOW + timedelta(minutes=5)),
    ]
    store(settings, Kind.DOSSIER, events)
    with connect(settings) as conn:
        conn.execute("INSERT INTO connector_cursors (connector, cursor, updated_at)"
                     " VALUES ('edxml', 'c1', %s), ('legacy-sync', 'c2', %s)",
                     (NOW - ago["edxml"], NOW - ago["legacy-sync"]))
    minutes = {s: Decimal(int(a.total_seconds())) / 60 for s, a in ago.items()}
    rules = [rule(kind="no_signal", scope="each source", expected="30 minutes",
                  **{"for": 0})]
    measured = {m.scope: m.value for m in measure_all(settings, rules, NOW)}
    assert measured == {f"source:{s}": m for s, m in minutes.items()}
    assert measured["source:open311"] == Decimal("50.50")

    fired = evaluate(settings, rules, NOW)
    assert sorted((t.scope, t.state, t.value, t.threshold) for t in fired) == [
        (f"source:{s}", "firing", minutes[s], 30) for s in ("legacy-sync", "open311")]
    assert evaluate(settings, rules, NOW) == []

    # open311 speaks again; legacy-sync stays silent (still firing: nothing new).
    store(settings, Kind.DOSSIER, [event("dossier", "open311", NOW, {
        "dossier_code": "D-5", "procedure_code": "1.2", "status": 2},
        ingested=NOW + timedelta(minutes=1))])
    resolved = evaluate(settings, rules, NOW + timedelta(minutes=2))
    assert [(t.scope, t.previous, t.state, t.value) for t in resolved] == [
        ("source:open311", "firing", "resolved", 1)]

    named = [rule(name="dvcqg", kind="no_signal", scope="source: dvcqg", expected="5 minutes"),
             rule(name="ghost", kind="no_signal", scope="source: ghost", expected="5 minutes")]
    values = [(m.scope, m.value, m.breached) for m in measure_all(settings, named, NOW)]
    assert values == [("source:dvcqg", 10, True), ("source:ghost", None, False)]


def test_no_signal_per_source_and_the_cli(db: Settings, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    no_signal_case(db)
    (tmp_path / "r.yaml").write_text(
        "name: silent\nkind: no_signal\nscope: each source\nexpected: 1 hour\n"
        "severity: critical\nrecipients: [ioc-duty-officer]\n", encoding="utf-8")
    for name, value in db.as_env().items():
        if name.startswith("IOC_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        at = (NOW + timedelta(minutes=2)).isoformat()
        result = CliRunner().invoke(alerts_app, ["test", "silent", "--rules", str(tmp_path),
                                                 "--at", at])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    # 2 minutes later: legacy-sync 182 minutes silent, the others within the hour
    assert "FIRE source:legacy-sync: 182.00" in result.output
    assert "ok   source:dvcqg: 12.00" in result.output
    assert "1 would fire (critical) to ioc-duty-officer" in result.output


def test_no_signal_on_timescaledb(timescale: TimescaleServer) -> None:
    ts = fresh(timescale.url)
    with connect(ts) as conn:
        assert conn.execute("SELECT 1 FROM timescaledb_information.hypertables"
                            " WHERE hypertable_schema = %s AND hypertable_name = 'events'",
                            (ts.database_schema,)).fetchall()
    no_signal_case(ts)
