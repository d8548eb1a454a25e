"""Migration 0022 on a database that stored "signed" from attachment names: those guesses become
unknown, the hourly rollups stay the sums of document_metrics, the signed rate says so."""

from datetime import UTC, datetime, timedelta

import pytest

from ioc.core import db
from ioc.core.db import connect, migrate
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.services import query

BEFORE = 21  # the newest migration before 0022


def test_guessed_signatures_become_unknown(settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    current = db.migrations
    with monkeypatch.context() as patch:
        patch.setattr(db, "migrations", lambda timescale: [
            m for m in current(timescale) if m[0] <= BEFORE])
        patch.setattr(db, "kpi_definitions", lambda: "")
        migrate(settings)
    first = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    with connect(settings) as conn:
        # Two outgoing copies as the name rule stored them (one "signed"), and their rollups.
        for document_id, signed in (("DOC-1", True), ("DOC-2", False)):
            conn.execute(
                "INSERT INTO documents (document_id, province_code, agency_code, direction,"
                " signed, meta_at, first_occurred_at, last_occurred_at, events)"
                " VALUES (%s, '25', '000.00.12.H25', 'outgoing', %s, %s, %s, %s, 1)",
                (document_id, signed, first, first, first))
        for metric, value in (("documents", 2), ("outgoing", 2), ("outgoing_signed", 1)):
            conn.execute(
                "INSERT INTO rollup_hour (bucket, kind, province_code, commune_code,"
                " agency_code, metric, value) VALUES (%s, 'document', '25', '',"
                " '000.00.12.H25', %s, %s)", (first, metric, value))

    assert migrate(settings)[0] == BEFORE + 1

    assert query(settings, "SELECT document_id, signed, signature_intact, signed_at"
                           " FROM documents ORDER BY 1") == [
        ("DOC-1", None, None, None), ("DOC-2", None, None, None)]
    stored = query(settings, "SELECT bucket, metric, value FROM rollup_hour"
                             " WHERE kind = 'document' ORDER BY 1, 2")
    recomputed = query(settings, "SELECT time_bucket('1 hour', anchor_at), metric, sum(value)"
                                 " FROM document_metrics GROUP BY 1, 2 ORDER BY 1, 2")
    assert stored == recomputed == [(first, "documents", 2), (first, "outgoing", 2)]
    documents = read_kpis(settings)["documents"]
    assert {k: documents[k] for k in ("outgoing", "outgoing_signed", "outgoing_signed_unknown",
                                      "signed_rate")} == {
        "outgoing": 2, "outgoing_signed": 0, "outgoing_signed_unknown": 2, "signed_rate": None}
