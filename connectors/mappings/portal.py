"""The national public-service portal's dossier sync payload (DVCQG) -> `DossierEvent`.

A record is one dossier as the portal syncs it: `MaHoSo`, `MaTTHC`, `DonViXuLy`,
`TrangThaiHoSo`, dates `yyyyMMddHHmmss` in local time (UTC+7)... Its *change time* is its
latest step's `tienTrinhDongBo[].ThoiDiemXuLy`, else `NgayTiepNhan`, else `NgayNopHoSo`.
The event id is a UUIDv5 of the mapped content, so the same record state gives the same id
whether it was polled, pushed or imported (the worker drops repeats). The applicant's
identity (`PERSONAL`) is never read.

A citizen's evaluation (`EVALUATION_FIELDS`: `MucDoHaiLong` 1 very satisfied, 2 satisfied,
3 unsatisfied; `KhieuNai` 0/1 a complaint; `NgayDanhGia` when, else the record's change
time) -> `EvaluationEvent`: a record of its own (`MaHoSo`, `DonViXuLy` and those), or a sync
record that carries them.
"""

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid5

from pydantic import BaseModel

from connectors.mappings.common import AgencyPlaces
from ioc.core.events import (
    Channel,
    DossierEvent,
    DossierPayload,
    DossierStatus,
    EvaluationEvent,
    EvaluationPayload,
    Satisfaction,
    implausible,
)

VIETNAM = timezone(timedelta(hours=7))  # the payload's dates: local time, no offset
DATE = re.compile(r"^\d{14}$")
EVENT_IDS = UUID("4f7d1c1e-8a0b-5d8e-9c39-6b2f0f1d2a77")  # UUIDv5 namespace of dossier events
PERSONAL = frozenset({"ChuHoSo", "SoGiayToChuHoSo", "LoaiDoiTuong"})
EVALUATION_IDS = UUID("0b1e6c52-3f0a-5c55-8d43-2a9e7e51c0d4")  # ... of evaluation events
EVALUATION_FIELDS = ("MucDoHaiLong", "KhieuNai", "NgayDanhGia")
LEVELS = {1: Satisfaction.VERY_SATISFIED, 2: Satisfaction.SATISFIED, 3: Satisfaction.UNSATISFIED}
STATUSES = {s.value: s for s in DossierStatus}
CHANNELS = {c.value for c in Channel}


def dossier_event(record: Any, places: AgencyPlaces, source: str) -> DossierEvent:
    """One sync payload record -> its event; ValueError naming the field when it cannot be."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    agency_code = _text(record, "DonViXuLy", required=True)
    assert agency_code is not None
    unit, agency = places.place(agency_code)
    status = _int(record, "TrangThaiHoSo", required=True)
    if status not in STATUSES:
        raise ValueError(f"TrangThaiHoSo: {status} is not a dossier status (1-10)")
    channel = _int(record, "KenhThucHien")
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"KenhThucHien: {channel} is not a channel (1, 2 or 3)")
    fees = record.get("DanhSachLePhi")
    if fees is not None and not isinstance(fees, list):
        raise ValueError("DanhSachLePhi: a list was expected")
    payload = DossierPayload(
        dossier_code=_text(record, "MaHoSo", required=True),  # type: ignore[arg-type]
        procedure_code=_text(record, "MaTTHC", required=True),  # type: ignore[arg-type]
        procedure_name=_text(record, "TenTTHC"),
        field_code=_text(record, "MaLinhVuc"),
        status=STATUSES[status],
        channel=Channel(channel) if channel is not None else None,
        submitted_at=_date(record, "NgayNopHoSo"),
        received_at=_date(record, "NgayTiepNhan"),
        due_at=_date(record, "NgayHenTra"),
        finished_at=_date(record, "NgayKetThucXuLy"),
        returned_at=_date(record, "NgayTra"),
        refused_at=_date(record, "NgayTuChoi"),
        digitized=_flag(record, "HoSoCoThanhPhanSoHoa"),
        fee_required=bool(fees) if fees is not None else None,
        paid_online=_flag(record, "DuocThanhToanTrucTuyen"),
    )
    when = change_time(record)
    if when is None:
        raise ValueError("no valid tienTrinhDongBo[].ThoiDiemXuLy, NgayTiepNhan or"
                         " NgayNopHoSo: the time of the record is unknown")
    occurred_at = parse_time(when, "change time")
    return DossierEvent(event_id=_content_id(EVENT_IDS, unit, agency, occurred_at, payload),
                        source=source, occurred_at=occurred_at, unit=unit, agency=agency,
                        payload=payload)


def _content_id(namespace: UUID, unit: BaseModel, agency: BaseModel, occurred_at: datetime,
                payload: BaseModel) -> UUID:
    """A UUIDv5 of the mapped content: the same record gives the same event id, whether it
    is polled, pushed or imported, so the worker stores it once."""
    content = json.dumps({"unit": unit.model_dump(mode="json"),
                          "agency": agency.model_dump(mode="json"),
                          "occurred_at": occurred_at.isoformat(),
                          "payload": payload.model_dump(mode="json")}, sort_keys=True)
    return uuid5(namespace, content)


def carries_evaluation(record: Any) -> bool:
    """Whether a record carries a citizen's evaluation (a level or a complaint flag)."""
    return isinstance(record, dict) and any(
        record.get(name) not in (None, "") for name in ("MucDoHaiLong", "KhieuNai"))


def evaluation_event(record: Any, places: AgencyPlaces, source: str) -> EvaluationEvent:
    """One evaluation record (or a sync record carrying one) -> its event; ValueError naming
    the field when it cannot be. Its id is a UUIDv5 of the mapped content, as a dossier's."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    agency_code = _text(record, "DonViXuLy", required=True)
    assert agency_code is not None
    unit, agency = places.place(agency_code)
    level = _int(record, "MucDoHaiLong")
    if level is not None and level not in LEVELS:
        raise ValueError(f"MucDoHaiLong: {level} is not a level (1 very satisfied, 2 satisfied,"
                         " 3 unsatisfied)")
    complaint = _flag(record, "KhieuNai")
    if level is None and complaint is None:
        raise ValueError("MucDoHaiLong, KhieuNai: missing; an evaluation gives a level, a"
                         " complaint flag or both")
    payload = EvaluationPayload(
        dossier_code=_text(record, "MaHoSo", required=True),  # type: ignore[arg-type]
        level=LEVELS[level] if level is not None else None, complaint=complaint)
    given = record.get("NgayDanhGia")
    if given not in (None, ""):
        occurred_at = parse_time(given, "NgayDanhGia")
    else:
        when = change_time(record)
        if when is None:
            raise ValueError("NgayDanhGia: missing, and the record has no change time")
        occurred_at = parse_time(when, "change time")
    return EvaluationEvent(
        event_id=_content_id(EVALUATION_IDS, unit, agency, occurred_at, payload), source=source,
        occurred_at=occurred_at, unit=unit, agency=agency, payload=payload)


def change_time(record: Any) -> str | None:
    """The latest step's ThoiDiemXuLy, else NgayTiepNhan, else NgayNopHoSo (yyyyMMddHHmmss)."""
    if not isinstance(record, dict):
        return None
    steps = record.get("tienTrinhDongBo")
    times = [s.get("ThoiDiemXuLy") for s in steps if isinstance(s, dict)] \
        if isinstance(steps, list) else []
    valid = [t for t in times if isinstance(t, str) and DATE.match(t)]
    if valid:
        return max(valid)
    for name in ("NgayTiepNhan", "NgayNopHoSo"):
        value = record.get(name)
        if isinstance(value, str) and DATE.match(value):
            return value
    return None


def parse_time(value: Any, name: str) -> datetime:
    """A payload time (`yyyyMMddHHmmss`, local time), plausible, or ValueError naming `name`."""
    if not isinstance(value, str) or not DATE.match(value):
        raise ValueError(f"{name}: yyyyMMddHHmmss expected, not {value!r}")
    try:
        parsed = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=VIETNAM)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a valid date") from None
    reason = implausible(parsed)
    if reason:
        raise ValueError(f"{name}: {value!r} is {reason}")
    return parsed


def _text(record: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: text expected, not {value!r}")
    return value.strip()


def _int(record: dict[str, Any], name: str, required: bool = False) -> int | None:
    """A whole number >= 0, as JSON (2) or as text ("2"); never JSON true, a float or a list."""
    value = record.get(name)
    if value is None or value == "":
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if isinstance(value, bool):  # an int to Python, but no code of the portal
        raise ValueError(f"{name}: a whole number expected, not {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"{name}: a whole number expected, not {value!r}")


def _flag(record: dict[str, Any], name: str) -> bool | None:
    value = _int(record, name)
    if value not in (None, 0, 1):
        raise ValueError(f"{name}: 0 or 1 expected, not {value!r}")
    return None if value is None else value == 1


def _date(record: dict[str, Any], name: str) -> datetime | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    return parse_time(value, name)
