"""Push receivers (POST /ingest/dossiers, /ingest/edxml) served by uvicorn on a real port,
against the real broker, PostgreSQL and (for the KPIs) a real `ioc worker`."""

import copy
import json
from pathlib import Path

import httpx
import pytest

from connectors.dvcqg import DvcqgConnector
from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.core.db import migrate
from ioc.core.events import parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.api import bearer
from tests.support.checks import duplicates
from tests.support.edxml import DATA, DOC_ID, DOCUMENT, PERSONAL, RECEIVER, SENDER, STATUS
from tests.support.portal import PERSONAL_VALUES, dossier, expected_kpis, province
from tests.support.services import ServedApps, WorkerProcess, query, wait_until
from tests.support.topics import end_offsets, read_topic

OWN = json.dumps([SENDER, RECEIVER])
XML = {"content-type": "application/xml"}


@pytest.fixture
def prepared(prepared: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The edXML receiver needs the agencies it monitors."""
    monkeypatch.setenv("IOC_EDXML_PUSH_OWN_ORGAN_IDS", OWN)
    return prepared


def serve(serve_app: ServedApps, settings: Settings, **update: object) -> httpx.Client:
    return serve_app(create_app(settings.model_copy(update={"api_rate_per_minute": 600,
                                                            **update})))


def test_pushed_dossiers_and_documents_reach_the_kpis_once(
        prepared: Settings, serve_app: ServedApps, tmp_path: Path) -> None:
    _, key = create_key(prepared, "dvc-portal", ["ingest:dossiers", "ingest:edxml"])
    api = serve(serve_app, prepared)
    records = province()
    poller = DvcqgConnector(prepared, {"base_url": "http://unused"})
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        # Four records as a list, one alone: the portal's own format, personal data included.
        listed = api.post("/ingest/dossiers", json=records[:4], headers=bearer(key))
        single = api.post("/ingest/dossiers", json=records[4], headers=bearer(key))
        assert (listed.status_code, single.status_code) == (202, 202), listed.text
        ids = listed.json()["event_ids"] + single.json()["event_ids"]
        # The poller's mapping and ids: a record polled and pushed counts once.
        assert ids == [str(poller.map(r).event_id) for r in records]

        document = (DATA / DOCUMENT).read_bytes()
        sent = api.post("/ingest/edxml", content=document, headers={**XML, **bearer(key)})
        status = api.post("/ingest/edxml", content=(DATA / STATUS).read_bytes(),
                          headers={"content-type": "text/xml; charset=utf-8", **bearer(key)})
        assert (sent.status_code, status.status_code) == (202, 202), sent.text
        assert len(sent.json()["event_ids"]) == 2  # both agencies ours: two copies
        assert len(status.json()["event_ids"]) == 1

        messages = read_topic(prepared, "dossiers") + read_topic(prepared, "documents")
        assert not any(v in m.value for m in messages for v in (*PERSONAL_VALUES, *PERSONAL))
        assert {parse_event(m.value).source for m in messages} == {"dvcqg_push", "edxml_push"}
        wait_until(lambda: query(prepared, "SELECT count(*) FROM events")[0][0] == 8, 90,
                   "8 events stored", worker.log)

        # The same again (a sender retrying after a timeout): the same ids, nothing counted.
        again = api.post("/ingest/dossiers", json=records, headers=bearer(key))
        resent = api.post("/ingest/edxml", content=document, headers={**XML, **bearer(key)})
        assert again.json()["event_ids"] == ids
        assert resent.json()["event_ids"] == sent.json()["event_ids"]
        wait_until(lambda: duplicates(prepared) == 7, 60, "7 duplicates dropped", worker.log)
        assert query(prepared, "SELECT count(*) FROM events")[0][0] == 8
        assert kpis_match(prepared, records)

        # A newer state of one dossier is a new event and moves the KPIs.
        done = copy.deepcopy(records[4])  # status 2 (new) -> 10 (done), on time
        done.update(TrangThaiHoSo=10, NgayKetThucXuLy="20261114100000")
        done["tienTrinhDongBo"].append({"ThoiDiemXuLy": "20261114100000", "TrangThai": 10})
        assert api.post("/ingest/dossiers", json=done, headers=bearer(key)).status_code == 202
        wait_until(lambda: query(prepared, "SELECT status FROM dossiers WHERE dossier_code = %s",
                                 (done["MaHoSo"],)) == [(10,)], 60, "the update", worker.log)
    finally:
        worker.stop()
    assert kpis_match(prepared, [*records[:4], done])
    documents = read_kpis(prepared)["documents"]
    assert (documents["documents"], documents["incoming"], documents["outgoing"],
            documents["outgoing_signed"]) == (2, 1, 1, 0)  # the sample's PDF is unsigned
    assert query(prepared, "SELECT document_id, status FROM documents ORDER BY 1") == [
        (DOC_ID, None), (f"{DOC_ID}@{RECEIVER}", "05")]


def kpis_match(settings: Settings, records: list[dict[str, object]]) -> bool:
    """The dossier KPIs are those docs/domain.md defines, computed from the records themselves."""
    expected, actual = expected_kpis(records), read_kpis(settings)["dossiers"]  # type: ignore[arg-type]
    assert {k: actual[k] for k in expected} == expected
    return True


def test_refusals_are_4xx_naming_the_field_and_publish_nothing(
        prepared: Settings, serve_app: ServedApps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_EDXML_PUSH_MAX_FILE_BYTES", "3000")
    api = serve(serve_app, prepared, api_max_body_bytes=16384)
    _, both = create_key(prepared, "axis", ["ingest:dossiers", "ingest:edxml"])
    _, other = create_key(prepared, "so-tnmt", ["reports:update"])
    good = dossier(1)

    def post(path: str, key: str | None = both, headers: dict[str, str] | None = None,
             **kwargs: object) -> httpx.Response:
        headers = {**(headers or {}), **(bearer(key) if key else {})}
        return api.post(path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def refused(response: httpx.Response, status: int, *words: str) -> None:
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        text = "\n".join(detail) if isinstance(detail, list) else detail
        assert all(w in text for w in words), text

    for path in ("/ingest/dossiers", "/ingest/edxml"):
        refused(post(path, key=None, json=good), 401, "API key is required")
        refused(post(path, key="ioc_000000000000_" + "x" * 43, json=good), 401, "not valid")
        refused(post(path, key=other, json=good), 403, "lacks the scope 'ingest:")

    refused(post("/ingest/dossiers", json=[good] * 10), 413, "larger than 16384 bytes")
    # edXML has its own limit (attachments travel inside), here under the API-wide one.
    refused(post("/ingest/edxml", content=(DATA / DOCUMENT).read_bytes(), headers=XML), 413,
            "larger than 3000 bytes")

    bad_status, no_code, bad_date = dossier(2), dossier(3), dossier(4)
    bad_status["TrangThaiHoSo"] = 42
    del no_code["MaHoSo"]
    bad_date["NgayHenTra"] = "2026-11-17"
    refused(post("/ingest/dossiers", json=[good, bad_status, no_code, bad_date]), 422,
            "body[1]: TrangThaiHoSo: 42 is not a dossier status", "body[2]: MaHoSo: missing",
            "body[3]: NgayHenTra: yyyyMMddHHmmss expected")
    assert "body[0]" not in json.dumps(
        post("/ingest/dossiers", json=[good, bad_status]).json())  # only the refused ones
    refused(post("/ingest/dossiers", json={**good, "KenhThucHien": 7}), 422,
            "body: KenhThucHien: 7 is not a channel")
    for body in (b"{not json", b"[" * 5000, b"\xff\xfe", b'"text"', b"[]", b"[1, 2]", b""):
        refused(post("/ingest/dossiers", content=body,
                     headers={"content-type": "application/json"}), 422, "body:")
    refused(post("/ingest/dossiers", content=b"MaHoSo=1",
                 headers={"content-type": "text/plain"}), 415, "content-type")

    refused(post("/ingest/edxml", json=good), 415, "application/xml")
    for name in ("billion-laughs.xml", "external-entity.xml"):
        refused(post("/ingest/edxml", content=(DATA / name).read_bytes(), headers=XML), 422,
                "body: refused XML (DTDForbidden)")
    status = (DATA / STATUS).read_text("utf-8")
    broken = {
        status.replace("<edXML:StatusCode>05", "<edXML:StatusCode>42"): "StatusCode: '42'",
        status.replace("<edXML:Timestamp>18/11/2026 14:05:32", "<edXML:Timestamp>yesterday"):
            "Timestamp: 'yesterday' is not a date",
        status.replace("</SOAP-ENV:Envelope>", ""): "body: not well-formed XML",
        "<memo/>": "<memo> is neither an edXML document message nor a SOAP status",
        status.replace(RECEIVER, "000.00.98.H25").replace(SENDER, "000.00.99.H25"):
            "neither is one of own_organ_ids",
    }
    for body, words in broken.items():
        assert body != status
        refused(post("/ingest/edxml", content=body.encode(), headers=XML), 422, words)

    # Nothing refused reached the broker, not even the dead-letter topic.
    assert [end_offsets(prepared, t) for t in ("dossiers", "documents", "dead_letters")] == \
        [0, 0, 0]


def test_edxml_push_unconfigured_answers_503(settings: Settings, serve_app: ServedApps) -> None:
    migrate(settings)
    _, key = create_key(settings, "axis", ["ingest:edxml"])
    api = serve(serve_app, settings)  # no IOC_EDXML_PUSH_OWN_ORGAN_IDS
    response = api.post("/ingest/edxml", content=(DATA / STATUS).read_bytes(),
                        headers={**XML, **bearer(key)})
    assert response.status_code == 503
    assert "IOC_EDXML_PUSH_OWN_ORGAN_IDS" in response.json()["detail"][0]
