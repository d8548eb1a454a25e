"""Migration 0017: the grouped KPIs (`kpi_dossiers_by`, `kpi_documents_by`) give, for every
agency and commune/ward of a selection, the scalar KPI function restricted to that group and
the scenario's own ground truth; `group_by` NULL is the scalar's single row (zeros and no
rates for an empty selection); and `event_counts` (whole hours from the hourly counts) counts
the same events as the minutes. On real PostgreSQL and real TimescaleDB."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.boards import loaded, on_timescaledb, plain
from tests.support.scenario import events_in
from tests.support.timescaledb import TimescaleServer

Entity = scenario.Dossier | scenario.Document
KINDS = {  # function stem -> (entities, anchor time, expected KPIs of a list of them)
    "dossiers": (lambda sc: sc.dossiers, lambda d: d.received_at,
                 lambda sc, ds: scenario.Scenario(now=sc.now, dossiers=ds)
                 .expected_dossier_kpis()),
    "documents": (lambda sc: sc.documents, lambda d: d.created_at,
                  lambda sc, ds: scenario.Scenario(now=sc.now, documents=ds)
                  .expected_document_kpis()),
}


@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=29, dossiers=80, documents=50, reports=20, malformed=False)


def selections(sc: scenario.Scenario) -> list[tuple[datetime, str | None, str | None,
                                                   str | None]]:
    """(since, unit, agency, former district): all, and each filter alone and together."""
    recent = sc.now - timedelta(days=10) + timedelta(minutes=17)
    everything = sc.now - timedelta(days=400)
    return [(everything, None, None, None), (recent, None, None, None),
            (everything, scenario.COMMUNES[1], None, None),
            (everything, None, scenario.AGENCIES[0], None),
            (everything, None, None, scenario.FORMER_DISTRICTS[0]),
            (everything, scenario.COMMUNES[0], scenario.AGENCIES[1], scenario.FORMER_DISTRICTS[1])]


def chosen(entities: Sequence[Entity], anchor: Callable[[Any], datetime], since: datetime,
           until: datetime, unit: str | None, agency: str | None,
           district: str | None) -> list[Entity]:
    return [e for e in entities if since <= anchor(e) < until
            and unit in (None, scenario.PROVINCE, e.commune)
            and agency in (None, e.agency) and district in (None, e.former_district)]


def kpis(conn: psycopg.Connection, sql: str, *args: object) -> list[dict[str, Any]]:
    """Rows as dicts; the arguments bound client-side as Grafana's literals are (one message
    per query: a TCP round trip, not the ~40 ms delayed ACK of the extended protocol)."""
    cursor = psycopg.ClientCursor(conn, row_factory=dict_row)
    return [{k: plain(v) for k, v in row.items()} for row in cursor.execute(sql, args)]


def truth_of(row: dict[str, Any]) -> dict[str, Any]:
    """The columns the scenario computes itself (all but dissatisfied_or_late, group names)."""
    return {k: v for k, v in row.items()
            if k not in ("group_code", "group_name", "dissatisfied_or_late")}


def check(settings: Settings, sc: scenario.Scenario) -> None:
    until = sc.now + timedelta(minutes=5)
    seen: defaultdict[str, int] = defaultdict(int)
    with connect(settings) as conn:
        for stem, (entities, anchor, expected) in KINDS.items():
            scalar = f"SELECT * FROM kpi_{stem}(%s, %s, %s, %s, %s)"
            grouped = f"SELECT * FROM kpi_{stem}_by(%s, %s, %s, %s, %s, %s)"
            for since, unit, agency, district in selections(sc):
                picked = chosen(entities(sc), anchor, since, until, unit, agency, district)
                where = (stem, since, unit, agency, district)
                # No grouping: one row, the scalar's, the ground truth's.
                assert picked, where  # every selection has something to compare
                total = kpis(conn, grouped, since, until, None, unit, agency, district)
                assert len(total) == 1 and total[0]["group_code"] is None, where
                assert truth_of(total[0]) == expected(sc, picked), where
                assert kpis(conn, scalar, since, until, unit, agency, district) == [
                    {k: v for k, v in total[0].items() if k not in ("group_code", "group_name")}]
                for group_by in ("agency", "commune"):
                    truth: defaultdict[str, list[Entity]] = defaultdict(list)
                    for e in picked:
                        truth[getattr(e, group_by)].append(e)
                    rows = kpis(conn, grouped + " ORDER BY group_code", since, until, group_by,
                                unit, agency, district)
                    assert [r["group_code"] for r in rows] == sorted(truth), (*where, group_by)
                    for row in rows:
                        code = row.pop("group_code")
                        name = row.pop("group_name")
                        assert name == (f"Cơ quan {code}" if group_by == "agency" else None)
                        assert truth_of(row) == expected(sc, truth[code]), (*where, group_by,
                                                                            code)
                        # The scalar function restricted to this group.
                        args = ((unit, code) if group_by == "agency" else (code, agency))
                        assert kpis(conn, scalar, since, until, *args, district) == [row], (
                            *where, group_by, code)
                        seen[f"{stem} {group_by}"] += 1
            # An empty selection: no group, and the scalar's one row of zeros and no rates.
            later = sc.now + timedelta(days=1)
            for group_by in ("agency", "commune", None):
                assert kpis(conn, grouped, later, until, group_by, None, None, None) == []
            empty = kpis(conn, scalar, later, until, None, None, None)
            assert len(empty) == 1 and set(empty[0].values()) == {0, None}
            assert empty[0] == {k: None if "rate" in k else 0 for k in empty[0]}

        with pytest.raises(psycopg.errors.InvalidParameterValue, match="group_by"):
            conn.execute("SELECT * FROM kpi_dossiers_by('-infinity', 'infinity', 'province')")
        conn.rollback()

        # Event counts: the same events with whole hours read from the hourly counts, for
        # ranges cut inside hours, shorter than an hour, and on hour boundaries.
        hour = sc.now.replace(minute=0, second=0, microsecond=0)
        ranges = [(sc.now - timedelta(days=41, microseconds=250_000), until),
                  (sc.now - timedelta(days=3, minutes=-17, seconds=3), sc.now - timedelta(
                      days=1, minutes=23)),
                  (hour - timedelta(days=2, minutes=-10), hour - timedelta(days=2, minutes=-50)),
                  (hour - timedelta(days=5), hour - timedelta(days=1))]
        for start, end in ranges:
            want = events_in(sc, start, end)
            for hourly in (True, False):
                got = conn.execute("SELECT coalesce(sum(events), 0) FROM event_counts(%s, %s, %s)",
                                   (start, end, hourly)).fetchone()
                assert got == (want,), (start, end, hourly)
            seen["events"] += want
    assert min(seen.values()) > 0 and len(seen) == 5, seen


def test_groups_equal_the_scalar_on_plain_postgresql(settings: Settings,
                                                      sc: scenario.Scenario) -> None:
    check(loaded(settings, sc, timescaledb=False), sc)


def test_groups_equal_the_scalar_on_timescaledb(timescale: TimescaleServer,
                                                sc: scenario.Scenario) -> None:
    check(on_timescaledb(timescale, sc), sc)
