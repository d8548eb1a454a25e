"""A KPI standing on part of its inputs says which part, on every reader: the catalogue names
the inputs (`Kpi.inputs`), and `ioc kpis`, the wall and alert messages put the note next to
the value; with no input at all the value is None and shown as no data, without a note.
An input is missing when its count is 0 (evaluations) or, for a count of what the value could
not see, when it is > 0 (outgoing documents whose signature is unknown)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from ioc.alerts import Rule, measure_all
from ioc.alerts.message import Notice, compose
from ioc.cli.main import console, show_kpis
from ioc.core.kpis import CATALOGUE, FUNCTIONS, KPIS, find, missing_inputs, read_kpis
from ioc.core.settings import Settings
from ioc.embedded.wall import WallData, render
from tests.support import scenario
from tests.support.boards import loaded

MISSING = "chưa có dữ liệu đánh giá"


def unsigned(n: int) -> str:
    return f"{n} văn bản đi chưa xác định ký số, không có tệp đính kèm"


def values(evaluated: int, satisfaction: float | None = 94.96, unknown: int = 0,
           signed: float | None = 88.5) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {family: {} for family in FUNCTIONS}
    for number, kpi in enumerate(CATALOGUE, start=1):
        result[kpi.family][kpi.column] = number + 0.5 if kpi.unit else number
    result["dossiers"].update(evaluated=evaluated, satisfaction_rate=satisfaction)
    result["documents"].update(outgoing_signed_unknown=unknown, signed_rate=signed)
    return result


def test_each_input_is_a_count_column_of_its_kpis_function() -> None:
    with_inputs = [kpi for kpi in CATALOGUE if kpi.inputs]
    assert {k.name for k in with_inputs} >= {"dossiers.satisfaction_rate",
                                             "documents.signed_rate"}
    for kpi in with_inputs:
        for needed in kpi.inputs:
            counted = find(kpi.function, needed.column)  # StopIteration when not a column
            assert counted.unit == "" and needed.missing, kpi.name


def test_ioc_kpis_shows_the_missing_part_next_to_the_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 200)  # one line per KPI (at 80 the note wraps)
    for evaluated, noted in ((0, True), (12, False)):
        with console.capture() as captured:
            show_kpis(values(evaluated), as_json=False)
        row = next(line for line in captured.get().splitlines() if "satisfaction_rate" in line)
        assert ("94.96 %" + f" ({MISSING})" * noted) in row and (MISSING in row) is noted, row
    assert missing_inputs(values(0)) == {"dossiers.dissatisfied_or_late": [MISSING],
                                         "dossiers.satisfaction_rate": [MISSING]}
    assert missing_inputs(values(3)) == {}
    assert missing_inputs(values(3, unknown=4)) == {"documents.signed_rate": [unsigned(4)]}
    assert missing_inputs(values(0, unknown=1)) == {
        "dossiers.dissatisfied_or_late": [MISSING], "dossiers.satisfaction_rate": [MISSING],
        "documents.signed_rate": [unsigned(1)]}
    # Every outgoing copy unknown: no rate at all, and no note beside the dash.
    assert missing_inputs(values(3, unknown=4, signed=None)) == {}
    # No dossier at all: no rate, and nothing to say about its evaluations either.
    assert KPIS["dossiers.satisfaction_rate"].shown_in(values(0, None)["dossiers"]) == "—"


def test_ioc_kpis_counts_the_outgoing_documents_the_signed_rate_could_not_see(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 200)
    for unknown in (0, 7):
        with console.capture() as captured:
            show_kpis(values(5, unknown=unknown), as_json=False)
        row = next(line for line in captured.get().splitlines() if " signed_rate" in line)
        noted = f"88.50 % ({unsigned(7)})"
        assert (noted in row) is bool(unknown) and "88.50 %" in row, row


def test_the_wall_shows_it_on_the_satisfaction_tile() -> None:
    for evaluated, noted in ((0, True), (5, False)):
        wall = Console(width=400, record=True)
        wall.print(render(WallData(at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                                   kpis=values(evaluated), agencies=[], reports=[], stored=0,
                                   lag=None)))
        text = wall.export_text()
        assert "94.96 %" in text
        assert (f"94.96 % ({MISSING})" in text) is noted, text


def test_the_wall_shows_it_on_the_signed_rate_tile() -> None:
    for unknown in (0, 2):
        wall = Console(width=400, record=True)
        wall.print(render(WallData(at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                                   kpis=values(5, unknown=unknown), agencies=[], reports=[],
                                   stored=0, lag=None)))
        text = wall.export_text()
        assert "88.50 %" in text
        assert (f"88.50 % ({unsigned(2)})" in text) is bool(unknown), text


def test_an_alert_message_says_it_next_to_the_value() -> None:
    notice = Notice(rule="hai-long", metric="dossiers.satisfaction_rate", scope="commune:07900",
                    state="firing", severity="warning", value=Decimal("94.96"),
                    threshold=Decimal("95"), comparison="<",
                    at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                    since=datetime(2026, 11, 20, 8, tzinfo=UTC), missing=(MISSING,))
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    line = next(x for x in compose(notice, "", tz).lines if x.startswith("Giá trị hiện tại"))
    assert line.startswith(f"Giá trị hiện tại: 94,96 ({MISSING}) – "), line
    plain = Notice(**{**notice.__dict__, "missing": ()})
    assert MISSING not in compose(plain, "", tz).body


def test_read_from_the_database_the_notes_follow_the_received_data(settings: Settings) -> None:
    """The KPI functions' counts on real PostgreSQL, the notes expected from the scenario's
    documents and dossiers themselves."""
    sc = scenario.build(seed=11, dossiers=30, documents=40, reports=5, malformed=False)
    unknown = sum(d.direction == "outgoing" and d.signed is None for d in sc.documents)
    known = sum(d.direction == "outgoing" and d.signed is not None for d in sc.documents)
    handled = sum(d.to_handle for d in sc.dossiers)
    assert unknown > 0 and known > 0 and handled > 0  # the scenario has each case
    result = read_kpis(loaded(settings, sc, timescaledb=False))
    # Every dossier's final record carries its evaluation fields: evaluations were received.
    assert missing_inputs(result) == {"documents.signed_rate": [unsigned(unknown)]}
    # An alert rule on the signed rate measures the same note through the catalogue.
    rule = Rule.model_validate({
        "name": "ky-so", "metric": "documents.signed_rate", "scope": "province",
        "comparison": "<", "threshold": 101, "window": "last 45 days", "severity": "warning",
        "recipients": ["ioc-duty-officer"], "working_hours": False})
    (measured,) = measure_all(settings, [rule], sc.now + timedelta(minutes=1))
    assert measured.missing == (unsigned(unknown),)
