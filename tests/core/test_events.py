"""Event contracts: what each kind accepts, what it refuses and why."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ioc.cli.main import app
from ioc.core.events import EVENT_TYPES, Kind, parse_event
from tests.support.scenario import COMMUNES, PROVINCE

NOW = datetime.now(UTC)


def envelope(kind: str, payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "kind": kind,
        "source": "test",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "unit": {"province_code": PROVINCE, "commune_code": COMMUNES[0]},
        "agency": {"code": "000.00.12.H25", "name": "Sở Khoa học và Công nghệ"},
        "payload": payload,
    }
    event.update(changes)
    return event


DOSSIER = {"dossier_code": "000.00.12.H25-261103-0042", "procedure_code": "1.001234",
           "status": 10, "channel": 2, "received_at": "2026-11-03T09:11:40+07:00",
           "due_at": "2026-11-17T17:00:00+07:00", "finished_at": "2026-11-12T15:58:20+07:00",
           "digitized": True, "fee_required": True, "paid_online": True}
DOCUMENT = {"document_id": "000.00.12.H25,2026/11/16,1482/SKHCN-CĐS", "status": "05"}
REPORT = {"service_request_id": "PAHT-1", "service_code": "ROAD", "status": "in_progress",
          "lat": 21.32, "long": 105.40, "requested_datetime": "2026-11-20T08:00:00+07:00"}
VALID = {"dossier": DOSSIER, "document": DOCUMENT, "field_report": REPORT}


def errors(raw: dict[str, Any] | str, kind: Kind | None = None) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    with pytest.raises(ValidationError) as info:
        parse_event(text, kind)
    return str(info.value)


@pytest.mark.parametrize("kind", VALID)
def test_valid_events_of_each_kind(kind: str) -> None:
    event = parse_event(json.dumps(envelope(kind, VALID[kind])), Kind(kind))
    assert event.kind == kind
    assert event.schema_version == 1
    assert event.ingested_at.tzinfo is not None
    assert event.entity_id == next(iter(VALID[kind].values()))


def test_province_level_event_needs_no_commune() -> None:
    raw = envelope("dossier", DOSSIER, unit={"province_code": "25"})
    assert parse_event(json.dumps(raw)).unit.commune_code is None


def test_former_district_code_is_kept_for_old_records() -> None:
    raw = envelope("dossier", DOSSIER, unit={"province_code": "25", "commune_code": "07900",
                                             "former_province_code": "26",
                                             "former_district_code": "243"})
    assert parse_event(json.dumps(raw)).unit.former_district_code == "243"


@pytest.mark.parametrize(("change", "field"), [
    ({"event_id": "42"}, "event_id"),
    ({"occurred_at": "2026-11-20T08:00:00"}, "occurred_at"),  # no time zone
    ({"occurred_at": (NOW + timedelta(days=2)).isoformat()}, "occurred_at"),  # future
    ({"unit": {"province_code": "99"}}, "unit"),  # not one of the 34
    ({"unit": {"province_code": "25", "commune_code": "00070"}}, "unit"),  # Hà Nội's ward
    ({"unit": {"province_code": "25", "former_district_code": "24"}}, "former_district_code"),
    ({"agency": {"code": ""}}, "agency.code"),
    ({"source": " padded "}, "source"),
    ({"schema_version": 2}, "schema_version"),
])
def test_invalid_envelopes_name_the_field(change: dict[str, Any], field: str) -> None:
    assert field in errors(envelope("dossier", DOSSIER, **change))


@pytest.mark.parametrize(("kind", "change", "field"), [
    ("dossier", {"status": 11}, "status"),
    ("dossier", {"channel": 4}, "channel"),
    ("dossier", {"ChuHoSo": "Nguyễn Văn A"}, "ChuHoSo"),  # applicant: personal data
    ("dossier", {"SoGiayToChuHoSo": "0123456789"}, "SoGiayToChuHoSo"),
    ("document", {"status": "99"}, "status"),
    ("document", {"attachment_count": -1}, "attachment_count"),
    ("document", {"AttachmentEncoded": "JVBERi0="}, "AttachmentEncoded"),  # never content
    ("field_report", {"status": "reopened"}, "status"),
    ("field_report", {"lat": 91}, "lat"),
    ("field_report", {"long": None}, "lat and long"),
    ("field_report", {"email": "a@example.org"}, "email"),  # reporter identity
    ("field_report", {"first_name": "An"}, "first_name"),
    ("field_report", {"phone": "0900000000"}, "phone"),
])
def test_invalid_payloads_name_the_field(kind: str, change: dict[str, Any], field: str) -> None:
    assert field in errors(envelope(kind, {**VALID[kind], **change}))


def test_topic_kind_is_enforced() -> None:
    assert "kind" in errors(envelope("document", DOCUMENT), Kind.DOSSIER)


def test_not_json() -> None:
    assert "Invalid JSON" in errors("{oops", Kind.DOSSIER)


def test_schema_export_writes_a_schema_per_kind(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for kind in EVENT_TYPES:
        schema = json.loads((tmp_path / f"{kind.value}.schema.json").read_text())
        assert schema["properties"]["kind"]["const"] == kind.value
        assert set(schema["required"]) >= {"event_id", "source", "occurred_at", "unit",
                                           "agency", "payload"}
        assert schema["additionalProperties"] is False
    status = json.loads((tmp_path / "connector_status.schema.json").read_text())
    assert set(status["$defs"]["StatusChange"]["enum"]) == {"connector_silent", "connector_resumed"}
    assert status["additionalProperties"] is False
