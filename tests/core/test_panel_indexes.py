"""Migration 0010: the variable lists found by loose index scans (ioc_communes, ioc_agencies)
give what a scan of the state tables gives, from the scenario's ground truth, on real
PostgreSQL; and the time-series index answers a metric's range from the index alone.
Migration 0025: the worker's counts by kind and source equal the events per bucket; and
dossier_facts reads the due-soon horizon once per query, not once per row."""

from __future__ import annotations

from collections import Counter
from datetime import UTC

from ioc.core.db import connect, migrate
from ioc.core.settings import Settings
from tests.support import scenario
from tests.support.scenario import events
from tests.support.store import load


def test_lists_and_index_match_the_ground_truth(settings: Settings) -> None:
    migrate(settings)
    with connect(settings) as conn:  # nothing stored yet: empty lists, not a NULL row
        assert conn.execute("SELECT * FROM ioc_communes()").fetchall() == []
        assert conn.execute("SELECT * FROM ioc_agencies()").fetchall() == []

    sc = scenario.build(seed=17, dossiers=50, documents=30, reports=25, malformed=False)
    load(settings, sc)
    communes = sorted({d.commune for d in sc.dossiers} | {r.commune for r in sc.reports})
    agencies = sorted({x.agency for x in [*sc.dossiers, *sc.documents, *sc.reports]})
    assert len(communes) > 2 and len(agencies) > 2
    with connect(settings) as conn:
        got = [r[0] for r in conn.execute("SELECT commune_code FROM ioc_communes()")]
        assert got == communes
        got = conn.execute("SELECT agency_code, agency_name FROM ioc_agencies()").fetchall()
        assert got == [(a, f"Cơ quan {a}") for a in agencies]

        received = conn.execute(
            "SELECT sum(value) FROM rollup_hour WHERE kind = 'dossier' AND metric = 'received'"
            " AND bucket >= '-infinity'").fetchone()[0]
        assert received == len(sc.dossiers)
        conn.execute("SET enable_seqscan = off")  # tiny tables: make the planner show its index
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT sum(value) FROM rollup_hour WHERE kind = 'dossier'"
            " AND metric = 'received' AND bucket >= now() - interval '30 days'"))
        assert "rollup_hour_metric" in plan, plan

        # Counts by kind and source (kept by the worker here, plain PostgreSQL), per minute and
        # per hour, from the scenario's own events.
        for unit in ("minute", "hour"):
            expected = scenario.kind_counts(sc, unit)
            got = conn.execute(f"SELECT bucket, kind, source, events FROM kind_counts_{unit}")
            assert Counter({(b.astimezone(UTC), k, s): n for b, k, s, n in got}) == expected
            assert len(expected) > 10 and sum(expected.values()) == len(events(sc))

        # The horizon: read once per query, not once per dossier (this transaction's calls).
        conn.execute("SET track_functions = 'all'")
        rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE due_soon)"
                            " FROM dossier_facts").fetchone()[0]
        calls = conn.execute("SELECT pg_stat_get_xact_function_calls("
                             "'ioc_due_soon_horizon'::regproc)").fetchone()[0]
        assert rows > 10 and calls == 1
