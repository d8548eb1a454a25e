"""Citizens' evaluations (POST /ingest/evaluations, and carried by a dossier's sync record)
through uvicorn, the real broker and a real `ioc worker`: Decision 766's satisfaction per
agency, commune and period equals what tests/support/evaluations.py computes from the
published records; where no evaluation was received, `ioc kpis` says so next to the rate."""

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.core.db import connect
from ioc.core.events import parse_event
from ioc.core.settings import Settings
from tests.support.api import bearer
from tests.support.evaluations import EVALUATED_BEFORE, PLACES, Lives, lives, stamp
from tests.support.services import ServedApps, WorkerProcess, query, wait_until
from tests.support.topics import read_topic

MISSING = "chưa có dữ liệu đánh giá"


@pytest.fixture
def prepared(prepared: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Both receivers place the agencies in their communes."""
    for source in ("DVCQG_PUSH", "EVALUATION_PUSH"):
        monkeypatch.setenv(f"IOC_{source}_AGENCIES", json.dumps(PLACES))
    return prepared


def serve(serve_app: ServedApps, settings: Settings) -> httpx.Client:
    return serve_app(create_app(settings.model_copy(update={"api_rate_per_minute": 6000})))


def push(api: httpx.Client, key: str, path: str, records: list[dict[str, Any]]) -> list[str]:
    ids = []
    for start in range(0, len(records), 150):
        answer = api.post(path, json=records[start:start + 150], headers=bearer(key))
        assert answer.status_code == 202, answer.text
        ids += answer.json()["event_ids"]
    return ids


def grouped(settings: Settings, group_by: str | None, since: datetime | None = None
            ) -> dict[str | None, dict[str, Any]]:
    """kpi_dossiers_by's satisfaction columns per group."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT group_code, to_handle, evaluated, dissatisfied_or_late, satisfaction_rate"
            " FROM kpi_dossiers_by(%s, 'infinity', %s) WHERE to_handle > 0",
            (since or "-infinity", group_by)).fetchall()
    return {g: {"to_handle": t, "evaluated": e, "bad": b, "rate": float(r)}
            for g, t, e, b, r in rows}


def ioc_kpis(settings: Settings, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "ioc", "kpis", *args],
                            env={**settings.as_env(), "COLUMNS": "200"},
                            capture_output=True, text=True, check=True)
    return result.stdout


def satisfaction_line(table: str) -> str:
    return next(line for line in table.splitlines() if "satisfaction_rate" in line)


def test_satisfaction_follows_766_with_evaluations_and_says_when_there_are_none(
        prepared: Settings, serve_app: ServedApps, tmp_path: Path) -> None:
    truth: Lives = lives(seed=14, count=600, now=datetime.now(UTC))
    rng = random.Random(14)
    _, key = create_key(prepared, "one-stop", ["ingest:dossiers", "ingest:evaluations"])
    api = serve(serve_app, prepared)
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        # The dossiers alone, out of order: no evaluation anywhere yet.
        dossiers = list(truth.dossiers)
        rng.shuffle(dossiers)
        sent = len(set(push(api, key, "/ingest/dossiers", dossiers)))
        wait_until(lambda: query(prepared, "SELECT count(*) FROM events")[0][0] == sent, 120,
                   f"{sent} dossier events stored", worker.log)
        late_only = grouped(prepared, None)[None]
        assert late_only["evaluated"] == 0
        table = ioc_kpis(prepared)
        assert f"{late_only['rate']:.2f} % ({MISSING})" in satisfaction_line(table), table
        assert json.loads(ioc_kpis(prepared, "--json"))["missing"] == {
            "dossiers.dissatisfied_or_late": [MISSING], "dossiers.satisfaction_rate": [MISSING]}

        # Then the evaluations, some before the dossier they are about (an evaluation of a
        # dossier never sent counts nowhere), some sent twice, some on the final sync record.
        orphan = {"MaHoSo": "000.00.12.H25-EV-NONE", "DonViXuLy": "000.79.01.H25",
                  "MucDoHaiLong": 3, "NgayDanhGia": stamp(truth.now - timedelta(days=2))}
        evaluations = [*truth.evaluations, orphan, *rng.sample(truth.evaluations, 20)]
        rng.shuffle(evaluations)
        ids = push(api, key, "/ingest/evaluations", evaluations)
        ids += push(api, key, "/ingest/dossiers", truth.carried)
        assert len(ids) == len(evaluations) + 2 * len(truth.carried)
        published = read_topic(prepared, "evaluations")
        assert not any("Nguyễn".encode() in m.value for m in published)  # ChuHoSo dropped
        assert {parse_event(m.value).source for m in published} == {"evaluation_push",
                                                                     "dvcqg_push"}
        total = sent + len(set(ids))
        wait_until(lambda: query(prepared, "SELECT count(*) FROM events")[0][0] == total, 120,
                   f"{total} events stored", worker.log)
    finally:
        worker.stop()

    expected = truth.satisfaction()
    assert grouped(prepared, None) == expected
    assert expected[None]["rate"] < late_only["rate"]  # the marks count
    for group_by in ("agency", "commune"):
        assert grouped(prepared, group_by) == truth.satisfaction(group_by=group_by), group_by
    since = truth.now - timedelta(days=25)
    assert grouped(prepared, "agency", since) == truth.satisfaction(since, group_by="agency")
    table = ioc_kpis(prepared)
    assert f"{expected[None]['rate']:.2f} %" in satisfaction_line(table)
    assert MISSING not in table, table
    # The last days' dossiers are not evaluated yet: their rate stands on lateness alone.
    recent = truth.now - EVALUATED_BEFORE + timedelta(hours=1)
    local = recent.astimezone(UTC).isoformat()
    assert truth.satisfaction(recent)[None]["evaluated"] == 0
    rate = truth.satisfaction(recent)[None]["rate"]
    assert f"{rate:.2f} % ({MISSING})" in satisfaction_line(ioc_kpis(prepared, "--since", local))


def test_evaluations_need_their_scope_and_a_valid_record(
        prepared: Settings, serve_app: ServedApps) -> None:
    api = serve(serve_app, prepared)
    _, dossiers_only = create_key(prepared, "portal", ["ingest:dossiers"])
    _, key = create_key(prepared, "one-stop", ["ingest:evaluations"])
    good = {"MaHoSo": "000.00.12.H25-EV-1", "DonViXuLy": "000.79.01.H25", "MucDoHaiLong": 2,
            "NgayDanhGia": stamp(datetime.now(UTC) - timedelta(hours=1))}

    answer = api.post("/ingest/evaluations", json=good, headers=bearer(dossiers_only))
    assert answer.status_code == 403 and "ingest:evaluations" in answer.text, answer.text
    assert api.post("/ingest/evaluations", json=good).status_code == 401
    future = stamp(datetime.now(UTC) + timedelta(days=3))
    for record, words in (
            ({**good, "MucDoHaiLong": 7}, "MucDoHaiLong: 7 is not a level"),
            ({k: v for k, v in good.items() if k != "MaHoSo"}, "MaHoSo: missing"),
            ({k: v for k, v in good.items() if k != "MucDoHaiLong"}, "MucDoHaiLong, KhieuNai"),
            ({**good, "KhieuNai": 2}, "KhieuNai: 0 or 1"),
            ({**good, "NgayDanhGia": "2026-11-01"}, "NgayDanhGia: yyyyMMddHHmmss"),
            ({**good, "NgayDanhGia": future}, "in the future")):
        answer = api.post("/ingest/evaluations", json=[good, record], headers=bearer(key))
        assert answer.status_code == 422, answer.text
        assert any(d.startswith("body[1]: ") and words in d
                   for d in answer.json()["detail"]), (words, answer.text)
    assert read_topic(prepared, "evaluations") == []  # all or nothing: none was published
    answer = api.post("/ingest/evaluations", json=good, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    [message] = read_topic(prepared, "evaluations")
    event = parse_event(message.value)
    assert (event.entity_id, event.payload.level, event.unit.commune_code) == (  # type: ignore[union-attr]
        good["MaHoSo"], "satisfied", "07900")
