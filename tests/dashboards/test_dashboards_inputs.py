"""A wall tile whose KPI stands on part of its inputs says which part (issue 14): the overview's
satisfaction tile, run on real PostgreSQL as Grafana would, gives the note "chưa có dữ liệu đánh
giá" beside its value while no evaluation of a dossier received in the range has arrived, and
none once one has; so does the league table's satisfaction column, per agency. Values are
computed here from the scenario's dossiers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from dashboards import overview, ranking
from dashboards.macros import Context, Variable, expand
from dashboards.sdk import to_dict
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import loaded, plain, time_ranges

TITLE, MISSING = "Tỷ lệ hài lòng", "chưa có dữ liệu đánh giá"


def test_the_satisfaction_tile_says_when_no_evaluation_was_received(settings: Settings) -> None:
    sc = scenario.build(seed=5, dossiers=40, documents=2, reports=2, malformed=False)
    board = to_dict(overview.build())
    (target,) = next(p for p in board["panels"] if p["title"] == TITLE)["targets"]
    specs = {v["name"]: v for v in board["templating"]["list"]}
    variables = {name: Variable(name, None, options=[], multi=spec["multi"],
                                include_all=spec["includeAll"], all_value=spec["allValue"])
                 for name, spec in specs.items() if name in ("commune", "agency")}
    start = time_ranges(sc, days=41, recent=10)[1]  # the last ten days
    ctx = Context(start, sc.now + timedelta(minutes=5), variables=variables)
    recent = [d for d in sc.subset(since=start).dossiers if d.to_handle]
    older = [d for d in sc.dossiers if d.to_handle and d.received_at < start - timedelta(hours=1)]
    assert recent and older  # the scenario has dossiers on both sides of the range's start
    # Without evaluations the rate counts lateness alone (the KPI's value stands).
    unevaluated = replace(sc.subset(since=start), dossiers=[
        replace(d, satisfaction=None, complaint=False) for d in sc.subset(since=start).dossiers])
    rate = unevaluated.expected_dossier_kpis()["satisfaction_rate"]
    assert rate is not None
    (league, _) = to_dict(ranking.build())["panels"]
    league_ctx = Context(start, sc.now + timedelta(minutes=5), variables={"commune": Variable(
        "commune", None, options=[], multi=False, include_all=True, all_value="NULL")})
    with connect(loaded(settings, sc, timescaledb=False)) as conn:
        def tile() -> tuple[object, object]:
            (row,) = conn.execute(expand(target["rawSql"], ctx)).fetchall()
            return plain(row[0]), row[1]

        def league_notes() -> dict[str, object]:
            cursor = conn.execute(expand(league["targets"][0]["rawSql"], league_ctx))
            names = [c.name for c in cursor.description or []]
            note = names.index(f"{TITLE}: phần thiếu")
            return {r[names.index("Mã cơ quan")]: r[note] for r in cursor.fetchall()}

        conn.execute("UPDATE dossiers SET satisfaction = NULL, complaint = NULL")
        conn.execute("DELETE FROM evaluations")
        assert tile() == (rate, MISSING)
        agencies = {d.agency for d in recent}
        assert league_notes() == dict.fromkeys(agencies, MISSING)
        # An evaluation of a dossier received before the range does not count for it.
        conn.execute("UPDATE dossiers SET satisfaction = 'satisfied' WHERE dossier_code = %s",
                     (older[0].code,))
        assert tile() == (rate, MISSING)
        # One evaluation in the range: the value stands on every input, no note.
        conn.execute("UPDATE dossiers SET satisfaction = 'satisfied' WHERE dossier_code = %s",
                     (recent[0].code,))
        assert tile() == (rate, None)
        assert league_notes() == {a: None if a == recent[0].agency else MISSING for a in agencies}
