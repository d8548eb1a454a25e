"""Current state does not depend on the order events arrive in, in Python or in SQL."""

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ioc.core.db import connect, migrate
from ioc.core.events import DocumentEvent, DossierEvent, EvaluationEvent, Event, Kind
from ioc.core.settings import Settings
from streams.state import STATE_TABLES
from streams.store import Store
from tests.support.services import query

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
UNIT = {"province_code": "25", "commune_code": "07900"}


def document(minutes: int, **payload: Any) -> DocumentEvent:
    return DocumentEvent(event_id=uuid.uuid4(), source="edxml",
                         occurred_at=T0 + timedelta(minutes=minutes), unit=UNIT,
                         agency={"code": "000.79.00.H25"},
                         payload={"document_id": "DOC-1", **payload})


def dossier(minutes: int, status: int, **payload: Any) -> DossierEvent:
    return DossierEvent(event_id=uuid.uuid4(), source="dvcqg",
                        occurred_at=T0 + timedelta(minutes=minutes), unit=UNIT,
                        agency={"code": "000.00.12.H25"},
                        payload={"dossier_code": "HS-1", "procedure_code": "1.1",
                                 "status": status, **payload})


def evaluation(minutes: int, **payload: Any) -> EvaluationEvent:
    return EvaluationEvent(event_id=uuid.uuid4(), source="dvcqg",
                           occurred_at=T0 + timedelta(days=1, minutes=minutes), unit=UNIT,
                           agency={"code": "000.00.12.H25"},
                           payload={"dossier_code": "HS-1", **payload})


# The document arrives after its status messages; a later status message carries no
# metadata, or only its direction (as edXML's do: no attachments, "signed" unknown); a second
# "06" repeats completion; the recall request is the newest status.
SIGNED_AT = T0 - timedelta(hours=2)
DOCUMENT_EVENTS: list[Event] = [
    document(0, direction="incoming", signed=True, signature_intact=True,
             signed_at=SIGNED_AT.isoformat(), deadline=(T0 + timedelta(days=3)).isoformat()),
    document(10, status="03"),
    document(20, status="06", direction="incoming"),
    document(25, status="06"),
    document(30, status="13", direction="incoming"),
]
DOSSIER_EVENTS: list[Event] = [
    dossier(0, 2, received_at=T0.isoformat(), channel=2),
    dossier(60, 4, received_at=T0.isoformat(), due_at=(T0 + timedelta(days=5)).isoformat()),
    dossier(120, 10, received_at=T0.isoformat(), finished_at=(T0 + timedelta(hours=2)).isoformat(),
            satisfaction="satisfied"),
]


# A complaint, then a level, then a newer level without a complaint flag, then a "no complaint"
# that cannot withdraw the one filed: the newest level wins, the complaint stays.
EVALUATION_EVENTS: list[Event] = [
    evaluation(0, complaint=True),
    evaluation(10, level="unsatisfied"),
    evaluation(20, level="satisfied"),
    evaluation(30, complaint=False),
]
KINDS = ((Kind.DOCUMENT, DOCUMENT_EVENTS), (Kind.DOSSIER, DOSSIER_EVENTS),
         (Kind.EVALUATION, EVALUATION_EVENTS))


def test_fold_is_order_independent() -> None:
    for kind, events in KINDS:
        spec = STATE_TABLES[kind]
        rows = [spec.fold(order) for order in itertools.permutations(events)]
        assert all(row == rows[0] for row in rows)
    doc = STATE_TABLES[Kind.DOCUMENT].fold(DOCUMENT_EVENTS)[0]
    assert (doc["status"], doc["direction"], doc["signed"]) == ("13", "incoming", True)
    assert (doc["signature_intact"], doc["signed_at"]) == (True, SIGNED_AT)
    assert doc["completed_at"] == T0 + timedelta(minutes=20)  # the first completion
    assert doc["events"] == 5
    mark = STATE_TABLES[Kind.EVALUATION].fold(EVALUATION_EVENTS)[0]
    assert (mark["level"], mark["complaint"], mark["events"]) == ("satisfied", True, 4)
    assert mark["level_at"] == T0 + timedelta(days=1, minutes=20)


def test_sql_merge_matches_python_fold_in_every_order(settings: Settings) -> None:
    """Each permutation written one event per transaction: the SQL upsert rule is the twin
    of the Python fold, whatever the arrival order."""
    migrate(settings)

    async def write_in_order(events: tuple[Event, ...], kind: Kind) -> None:
        store = Store(settings)
        try:
            for event in events:
                await store.write(kind, [event])
        finally:
            await store.close()

    for kind, events in KINDS:
        spec = STATE_TABLES[kind]
        expected = spec.fold(events)[0]
        for order in itertools.permutations(events):
            clean(settings)
            asyncio.run(write_in_order(order, kind))
            rows = query(settings, f"SELECT {', '.join(spec.columns)} FROM {spec.table}")
            assert len(rows) == 1
            assert dict(zip(spec.columns, rows[0], strict=True)) == expected, order


def clean(settings: Settings) -> None:
    with connect(settings) as conn:
        conn.execute("TRUNCATE events, dossiers, documents, field_reports, evaluations,"
                     " rollup_hour,"
                     " kind_counts_minute, kind_counts_hour")


def test_concurrent_workers_keep_rollups_exact(settings: Settings) -> None:
    """Six writers share entities (as two workers do during a rebalance): every rollup
    row still equals the counts recomputed from the final state, and the state the fold."""
    import random

    from ioc.core.events import parse_event
    from tests.support import scenario

    migrate(settings)
    sc = scenario.build(seed=21, dossiers=150, documents=1, reports=1, malformed=False)
    events = [parse_event(v, Kind.DOSSIER) for t, _, v in sc.messages if t == "dossiers"]
    unique = list({e.event_id: e for e in events}.values())  # the scenario resends some
    rng = random.Random(5)
    streams: list[list[Event]] = [[] for _ in range(6)]
    for event in events:
        streams[rng.randrange(6)].append(event)

    async def writer(stream: list[Event]) -> None:
        store = Store(settings)
        try:
            for i in range(0, len(stream), 8):
                await store.write(Kind.DOSSIER, stream[i:i + 8])
        finally:
            await store.close()

    async def all_writers() -> None:
        await asyncio.gather(*(writer(s) for s in streams))

    asyncio.run(all_writers())
    spec = STATE_TABLES[Kind.DOSSIER]
    state = query(settings, f"SELECT {', '.join(spec.columns)} FROM dossiers ORDER BY 1")
    got = [dict(zip(spec.columns, r, strict=True)) for r in state]
    for g, f in zip(got, spec.fold(unique), strict=True):
        assert g == f, {k: (g[k], f[k]) for k in g if g[k] != f[k]}
    stored = query(settings, "SELECT bucket, province_code, commune_code, agency_code,"
                             " metric, value FROM rollup_hour WHERE kind = 'dossier'"
                             " ORDER BY 1, 2, 3, 4, 5")
    recomputed = query(settings, "SELECT time_bucket('1 hour', anchor_at) AS b,"
                                 " province_code, commune_code, agency_code, metric,"
                                 " sum(value) FROM dossier_metrics GROUP BY 1, 2, 3, 4, 5"
                                 " ORDER BY 1, 2, 3, 4, 5")
    assert stored == recomputed
