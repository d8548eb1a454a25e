"""The mappings (connectors/mappings/) are pure, and they are what the push receivers publish.

Expected events are written out by hand from the shared samples (tests/data holds copies of
/work/shared/samples): dates read off the payload in local time (UTC+7), sizes decoded with
base64, the redaction placeholders of ioc/core/redact.py. Nothing expected is computed with the
code under test.
"""

import asyncio
import base64
import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from connectors.mappings.common import AgencyPlaces
from connectors.mappings.edxml import document_event, message_records
from connectors.mappings.open311 import NewRequest, new_report_event
from connectors.mappings.portal import dossier_event
from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.core.events import Event, parse_event
from ioc.core.report_services import SERVICES
from ioc.core.settings import Settings
from tests.support import DATA, ROOT
from tests.support.services import ServedApps

DOSSIER: dict[str, Any] = json.loads((DATA / "dvcqg-sync.json").read_text(encoding="utf-8"))
DOCUMENT = (DATA / "edxml" / "document-incoming.xml").read_bytes()
STATUS = (DATA / "edxml" / "status-05-in-progress.xml").read_bytes()
SENDER, RECEIVER = "000.00.12.H25", "000.79.00.H25"
DOC_ID = "000.00.12.H25,2026/11/16,1482/SKHCN-CĐS"
PLACES = AgencyPlaces("25")  # no `agencies` option: every agency a province-level one
VN = timezone(timedelta(hours=7))


def local(*parts: int) -> str:
    return datetime(*parts, tzinfo=VN).isoformat()  # type: ignore[misc]


def unit() -> dict[str, Any]:
    return {"province_code": "25", "commune_code": None, "former_province_code": None,
            "former_district_code": None, "former_commune_code": None}


def attachment_bytes() -> int:
    """The sample's attachment, decoded: the mapping only counts base64 characters."""
    encoded = [e.text or "" for e in ET.fromstring(DOCUMENT).iter()
               if e.tag.endswith("ContentTransferEncoded")]
    return sum(len(base64.b64decode("".join(text.split()))) for text in encoded)


def expected_dossier(source: str) -> dict[str, Any]:
    return {
        "kind": "dossier", "source": source, "schema_version": 1,
        "occurred_at": local(2026, 11, 13, 9, 0, 0),  # the latest tienTrinhDongBo step
        "unit": unit(), "agency": {"code": SENDER, "name": None},
        "payload": {
            "dossier_code": "000.00.12.H25-261103-0042", "procedure_code": "1.001234",
            "procedure_name": "Cấp Giấy chứng nhận đăng ký hoạt động khoa học và công nghệ",
            "field_code": "KHCN01", "status": 10, "channel": 2,
            "submitted_at": local(2026, 11, 3, 8, 15, 2),
            "received_at": local(2026, 11, 3, 9, 11, 40),
            "due_at": local(2026, 11, 17, 17, 0, 0),
            "finished_at": local(2026, 11, 12, 15, 58, 20),
            "returned_at": local(2026, 11, 13, 9, 0, 0), "refused_at": None,
            "digitized": True, "fee_required": True, "paid_online": True,
            "satisfaction": None, "complaint": None}}


def expected_documents(source: str) -> list[dict[str, Any]]:
    """The sample document (a department to a ward, both ours): two copies; then the ward's
    status 05 about its incoming copy."""
    # Named "….signed.pdf", described "Văn bản ký số", but its bytes carry no signature.
    document = {"signed": False, "signature_intact": None, "signed_at": None,
                "deadline": local(2026, 11, 25, 23, 59, 59),
                "document_type": "1", "code_notation": "1482/SKHCN-CĐS",
                "from_organ_id": SENDER, "to_organ_id": RECEIVER, "attachment_count": 1,
                "attachment_bytes": attachment_bytes(), "status": None}
    sent_at = local(2026, 11, 16, 9, 41, 7)  # TraceHeader/Timestamp
    ward = {"code": RECEIVER, "name": "Ủy ban nhân dân phường Nông Trang"}
    return [
        {"kind": "document", "source": source, "schema_version": 1, "occurred_at": sent_at,
         "unit": unit(), "agency": {"code": SENDER,
                                    "name": "Sở Khoa học và Công nghệ tỉnh Phú Thọ"},
         "payload": {**document, "document_id": DOC_ID, "direction": "outgoing"}},
        {"kind": "document", "source": source, "schema_version": 1, "occurred_at": sent_at,
         "unit": unit(), "agency": ward,
         "payload": {**document, "document_id": f"{DOC_ID}@{RECEIVER}",
                     "direction": "incoming"}},
        {"kind": "document", "source": source, "schema_version": 1,
         "occurred_at": local(2026, 11, 18, 14, 5, 32), "unit": unit(), "agency": ward,
         "payload": {**{k: None for k in document}, "document_id": f"{DOC_ID}@{RECEIVER}",
                     "direction": "incoming", "status": "05"}},
    ]


def content(event: Event) -> dict[str, Any]:
    """An event as JSON, without what depends on when it was mapped or which id it got."""
    return event.model_dump(mode="json", exclude={"event_id", "ingested_at"})


def mapped_documents(source: str) -> list[Event]:
    return [document_event(r, PLACES, source) for data in (DOCUMENT, STATUS)
            for r in message_records(data, {"file": "body"}, [SENDER, RECEIVER])]


# --- pure: no broker, no database, no settings ------------------------------------------------

def test_the_mappings_load_no_transport() -> None:
    """Importing them pulls in no broker, database, HTTP or settings module."""
    code = ("import sys, connectors.mappings.portal, connectors.mappings.edxml,"
            " connectors.mappings.open311; print(sorted(m for m in sys.modules if m.split('.')[0]"
            " in ('aiokafka', 'psycopg', 'fastapi', 'aiohttp', 'pydantic_settings')"
            " or m.startswith(('connectors.base', 'ioc.core.settings', 'ioc.core.db'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_samples_map_to_the_events_read_off_them() -> None:
    record = copy.deepcopy(DOSSIER)
    event = dossier_event(record, PLACES, "sample")
    assert record == DOSSIER  # the input is left as it was
    assert content(event) == expected_dossier("sample")
    assert event.event_id.version == 5
    # The same record state, in any key order: the same event, the same id (only the
    # envelope's ingested_at, the contract's clock, tells two mappings apart).
    again = dossier_event(dict(reversed(list(DOSSIER.items()))), PLACES, "sample")
    assert (again.event_id, content(again)) == (event.event_id, content(event))
    # Another state of the dossier: another id.
    assert dossier_event({**DOSSIER, "TrangThaiHoSo": 9}, PLACES, "sample").event_id \
        != event.event_id

    documents = mapped_documents("sample")
    assert [content(e) for e in documents] == expected_documents("sample")
    assert [(e.event_id, content(e)) for e in mapped_documents("sample")] == \
        [(e.event_id, content(e)) for e in documents]  # same bytes, same events and ids
    assert len({e.event_id for e in documents}) == 3


def test_a_new_report_keeps_no_personal_data() -> None:
    service = next(s for s in SERVICES if s.code == "GT-01")
    at = datetime(2026, 11, 20, 8, 30, tzinfo=VN)
    new = NewRequest.model_validate(
        {"service_code": "GT-01", "lat": "21.3227", "long": "105.4019",
         "address_string": "Ngõ 5 phố Hòa Phong, gọi 0912345678",
         "description": "Đèn đường hỏng trước số nhà 12, email dan@example.vn",
         "email": "dan@example.vn", "first_name": "An", "phone": "0912345678"})
    event = new_report_event(new, service, province_code="25", commune="07900",
                             agency=("000.30.00.H25", "UBND phường Việt Trì"),
                             request_id="PAHT-25-ABC", at=at, event_id=UUID(int=1),
                             source="sample")
    assert event.model_dump(mode="json") == {
        "event_id": str(UUID(int=1)), "kind": "field_report", "source": "sample",
        "occurred_at": at.isoformat(), "ingested_at": at.isoformat(), "schema_version": 1,
        "unit": {**unit(), "commune_code": "07900"},
        "agency": {"code": "000.30.00.H25", "name": "UBND phường Việt Trì"},
        "payload": {
            "service_request_id": "PAHT-25-ABC", "service_code": "GT-01",
            "service_name": service.name, "group": service.group, "status": "open",
            "lat": 21.3227, "long": 105.4019, "requested_datetime": at.isoformat(),
            "updated_datetime": at.isoformat(),
            "expected_datetime": (at + timedelta(hours=service.hours)).isoformat(),
            "description": "Đèn đường hỏng trước số nhà 12, email <e-mail>",
            "address_string": "Ngõ 5 phố Hòa Phong, gọi <phone>", "status_notes": None}}


# --- the push receivers publish what the mappings give ----------------------------------------

def published(settings: Settings, name: str, count: int) -> list[Event]:
    """The first `count` events on the topic, in the order of its partitions."""
    async def read() -> list[Event]:
        consumer = AIOKafkaConsumer(settings.topic(name), auto_offset_reset="earliest",
                                    bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                return [parse_event((await consumer.getone()).value) for _ in range(count)]
        finally:
            await consumer.stop()
    return asyncio.run(read())


def test_the_push_receivers_publish_what_the_mappings_give(
        prepared: Settings, serve_app: ServedApps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_EDXML_PUSH_OWN_ORGAN_IDS", json.dumps([SENDER, RECEIVER]))
    api: httpx.Client = serve_app(create_app(prepared))
    _, key = create_key(prepared, "axis", ["ingest:dossiers", "ingest:edxml", "reports:create"])
    auth = {"authorization": f"Bearer {key}"}

    answers = [api.post("/ingest/dossiers", json=DOSSIER, headers=auth)]
    for body in (DOCUMENT, STATUS):
        answers.append(api.post("/ingest/edxml", content=body,
                                headers={**auth, "content-type": "application/xml"}))
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]

    [dossier] = published(prepared, "dossiers", 1)
    assert content(dossier) == expected_dossier("dvcqg_push")
    assert dossier == dossier_event(DOSSIER, PLACES, "dvcqg_push").model_copy(
        update={"ingested_at": dossier.ingested_at})  # the same id too
    documents = published(prepared, "documents", 3)
    assert sorted(map(content, documents), key=json.dumps) == \
        sorted(expected_documents("edxml_push"), key=json.dumps)
    assert {e.event_id for e in documents} == \
        {e.event_id for e in mapped_documents("edxml_push")}
    assert [UUID(i) for a in answers for i in a.json()["event_ids"]] == \
        [dossier.event_id, *(e.event_id for e in mapped_documents("edxml_push"))]

    form = {"service_code": "GT-01", "lat": "21.3227", "long": "105.4019",
            "address_string": "Ngõ 5 phố Hòa Phong, gọi 0912345678",
            "description": "Đèn đường hỏng, email dan@example.vn", "phone": "0912345678"}
    filed = api.post("/open311/v2/requests.json", data=form, headers=auth)
    assert filed.status_code == 200, filed.text
    [report] = published(prepared, "field_reports", 1)
    assert report.payload.service_request_id == filed.json()[0]["service_request_id"]
    at = report.occurred_at
    assert (report.ingested_at, report.payload.requested_datetime,
            report.payload.updated_datetime) == (at, at, at)
    assert (report.payload.description, report.payload.address_string) == (
        "Đèn đường hỏng, email <e-mail>", "Ngõ 5 phố Hòa Phong, gọi <phone>")
    # With the ids, the clock and the place the receiver chose, the mapping gives its event.
    assert report == new_report_event(
        NewRequest.model_validate(form), next(s for s in SERVICES if s.code == "GT-01"),
        province_code="25", commune=report.unit.commune_code,
        agency=(report.agency.code, report.agency.name),
        request_id=report.payload.service_request_id, at=at, event_id=report.event_id,
        source="open311-api")
