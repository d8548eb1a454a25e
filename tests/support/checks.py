"""Exactness checks shared by the end-to-end tests: the stored events, KPIs and rollups
equal what tests/support/scenario.py computes from its ground truth, each event counted once."""

import asyncio
from collections import Counter
from datetime import UTC
from typing import Any

from ioc.core.db import migrate
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from tests.support import scenario
from tests.support.services import WorkerProcess, query, wait_until

TIME_INVARIANT = {  # rollup metric -> key of the expected KPIs it must equal
    "dossier": {"received": "received", "to_handle": "to_handle", "finished": "finished",
                "finished_on_time": "finished_on_time", "finished_late": "finished_late",
                "in_process": "in_process", "online": "online", "digitized": "digitized",
                "with_fee": "with_fee", "paid_online": "paid_online"},
    "document": {"documents": "documents", "incoming": "incoming", "outgoing": "outgoing",
                 "outgoing_signed": "outgoing_signed", "completed": "completed",
                 "completed_on_time": "completed_on_time", "backlog": "backlog"},
    "field_report": {"reports": "reports", "open": "open", "resolved": "resolved",
                     "duplicate": "duplicate"},
}


def prepare(settings: Settings) -> None:
    migrate(settings)
    asyncio.run(ensure_topics(settings))


def stored_events(settings: Settings) -> int:
    return query(settings, "SELECT count(*) FROM events")[0][0]


def wait_stored(settings: Settings, sc: scenario.Scenario, worker: WorkerProcess,
                timeout: float = 90) -> None:
    wait_until(lambda: stored_events(settings) == len(sc.valid_event_ids), timeout,
               f"{len(sc.valid_event_ids)} events stored", worker.log)


def duplicates(settings: Settings) -> int:
    """Duplicate events the workers skipped, as their heartbeats count them."""
    rows = query(settings, "SELECT counters FROM worker_status")
    return sum(sum((row[0].get("duplicates") or {}).values()) for row in rows)


def handled_by(settings: Settings, instance: str) -> int:
    """Events a worker is done with: stored, duplicate or dead-lettered (its heartbeat says)."""
    rows = query(settings, "SELECT counters FROM worker_status WHERE instance_id = %s", (instance,))
    if not rows:
        return 0
    c = rows[0][0]
    return sum(c["events_stored"].values()) + sum(c["duplicates"].values()) \
        + sum(c["dead_letters"].values())


def assert_kpis(settings: Settings, sc: scenario.Scenario,
                kpis: dict[str, dict[str, Any]] | None = None) -> None:
    kpis = kpis or read_kpis(settings)
    for kind, expected in (("dossiers", sc.expected_dossier_kpis()),
                           ("documents", sc.expected_document_kpis()),
                           ("field_reports", sc.expected_report_kpis())):
        actual = {key: kpis[kind][key] for key in expected}
        assert actual == expected, kind


def assert_rollups(settings: Settings, sc: scenario.Scenario) -> None:
    """The hourly rollups' time-invariant sums and the counts per bucket, kind and source."""
    expected = {"dossier": sc.expected_dossier_kpis(), "document": sc.expected_document_kpis(),
                "field_report": sc.expected_report_kpis()}
    sums = {(kind, metric): value for kind, metric, value in query(
        settings, "SELECT kind, metric, sum(value) FROM rollup_hour GROUP BY 1, 2")}
    for kind, metrics in TIME_INVARIANT.items():
        for metric, key in metrics.items():
            assert sums.get((kind, metric), 0) == expected[kind][key], (kind, metric)
    for unit in ("minute", "hour"):
        got = query(settings, f"SELECT bucket, kind, source, events FROM kind_counts_{unit}")
        counted = Counter({(b.astimezone(UTC), k, s): n for b, k, s, n in got})
        assert counted == scenario.kind_counts(sc, unit), unit


def assert_counted_once(settings: Settings) -> None:
    """Every stored event was folded into exactly one state row, exactly once."""
    folded = query(settings, "SELECT (SELECT sum(events) FROM dossiers)"
                             " + (SELECT sum(events) FROM documents)"
                             " + (SELECT sum(events) FROM field_reports)")[0][0]
    assert folded == stored_events(settings)


def assert_exact(settings: Settings, sc: scenario.Scenario) -> None:
    """Nothing lost, nothing counted twice: events, KPIs, rollups and state rows all exact."""
    assert stored_events(settings) == len(sc.valid_event_ids)
    assert_kpis(settings, sc)
    assert_rollups(settings, sc)
    assert_counted_once(settings)
