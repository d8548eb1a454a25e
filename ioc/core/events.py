"""Event contracts: one envelope for every event, one payload per kind (see docs/domain.md).

Every model forbids unknown fields, so personal data of applicants and reporters
(`ChuHoSo`, `email`, `phone`...) cannot ride along by accident: a connector must drop it.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from ioc.core.redact import redact
from ioc.core.units import check_unit

SCHEMA_VERSION = 1
MAX_CLOCK_SKEW = timedelta(hours=1)
# Plausible dates, the one rule of every contract, mapping and API date: nothing before 2000
# (no record of this IOC is older; year 1 or 1 BC is a placeholder, not a date) and nothing
# more than 10 years ahead (a deadline, an expected date). PostgreSQL stores more than Python
# reads back, and one stored 9999-12-31 breaks every reader: refuse at the edge instead.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
HORIZON = timedelta(days=3653)


def implausible(value: datetime, now: datetime | None = None) -> str | None:
    """Why an aware `value` is no plausible date, or None when it is one."""
    latest = (now or datetime.now(UTC)) + HORIZON
    try:
        if value < EARLIEST:
            return "before 2000-01-01: not a plausible date"
        if value > latest:
            return "more than 10 years ahead: not a plausible date"
    except OverflowError:
        return "out of range"
    return None


_EARLIEST_S, _HORIZON_S = EARLIEST.timestamp(), HORIZON.total_seconds()


def check_plausible(value: datetime) -> datetime:
    """`value`, or ValueError saying why it is no plausible date (see EARLIEST, HORIZON)."""
    if _EARLIEST_S <= value.timestamp() <= time.time() + _HORIZON_S:
        return value  # the common case, in two float comparisons (a dozen dates an event)
    reason = implausible(value)
    if reason:
        raise ValueError(reason)
    return value


When = Annotated[AwareDatetime, AfterValidator(check_plausible)]

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]


def _redacted(limit: int) -> Callable[[str], str]:
    """Free text with phone numbers, e-mails and ID numbers masked by the contract itself, so
    no publisher can put them in an event (cut to `limit`: a placeholder can be longer)."""
    return lambda text: redact(text)[:limit]


LongText = Annotated[str, Field(max_length=4000), AfterValidator(_redacted(4000))]
Address = Annotated[str, Field(max_length=1024), AfterValidator(_redacted(1024))]


class Kind(StrEnum):
    DOSSIER = "dossier"
    DOCUMENT = "document"
    FIELD_REPORT = "field_report"
    EVALUATION = "evaluation"


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class AdminUnit(Contract):
    """Where it happened, in the two-tier map in force since 1 July 2025."""

    province_code: str = Field(pattern=r"^\d{2}$", examples=["25"])
    # None for province-level agencies (departments, the provincial People's Committee).
    commune_code: str | None = Field(None, pattern=r"^\d{5}$", examples=["07900"])
    # Codes of the former map, kept for records from before the merger.
    former_province_code: str | None = Field(None, pattern=r"^\d{2}$")
    former_district_code: str | None = Field(None, pattern=r"^\d{3}$")
    former_commune_code: str | None = Field(None, pattern=r"^\d{5}$")

    @model_validator(mode="after")
    def _current_codes(self) -> "AdminUnit":
        check_unit(self.province_code, self.commune_code)
        return self


class Agency(Contract):
    """The agency responsible (sở, UBND xã/phường...), by its document-interchange code."""

    code: Code = Field(examples=["000.00.12.H25"])
    name: str | None = Field(None, max_length=256)


class Envelope(Contract):
    event_id: UUID = Field(description="Idempotency key: the same event sent twice counts once.")
    source: Code = Field(description="Name of the connector that produced the event.")
    occurred_at: When = Field(description="When it happened in the source system.")
    ingested_at: When = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: Literal[1] = SCHEMA_VERSION
    unit: AdminUnit
    agency: Agency

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"occurred_at {value.isoformat()} is in the future")
        return value


# --- Dossiers (hồ sơ TTHC), the national portal's sync payload ---------------------------


class DossierStatus(IntEnum):
    """`TrangThaiHoSo` of the national public-service portal."""

    RECEIVING = 1
    NEW = 2
    REFUSED = 3
    PROCESSING = 4
    WAITING_SUPPLEMENT = 5
    WAITING_PAYMENT = 6
    CANCELLED = 7
    UNRESOLVED = 8
    RELEASING_RESULT = 9
    DONE = 10


class Channel(IntEnum):
    """`KenhThucHien`."""

    IN_PERSON = 1
    ONLINE = 2
    POSTAL = 3


class Satisfaction(StrEnum):
    VERY_SATISFIED = "very_satisfied"
    SATISFIED = "satisfied"
    UNSATISFIED = "unsatisfied"


class DossierPayload(Contract):
    """A snapshot of one dossier; None means "not known by this event", not "false"."""

    dossier_code: Code = Field(description="MaHoSo")
    procedure_code: Code = Field(description="MaTTHC")
    procedure_name: str | None = Field(None, max_length=512, description="TenTTHC")
    field_code: str | None = Field(None, max_length=64, description="MaLinhVuc")
    status: DossierStatus = Field(description="TrangThaiHoSo")
    channel: Channel | None = Field(None, description="KenhThucHien")
    submitted_at: When | None = Field(None, description="NgayNopHoSo")
    received_at: When | None = Field(None, description="NgayTiepNhan")
    due_at: When | None = Field(None, description="NgayHenTra")
    finished_at: When | None = Field(None, description="NgayKetThucXuLy")
    returned_at: When | None = Field(None, description="NgayTra")
    refused_at: When | None = Field(None, description="NgayTuChoi")
    digitized: bool | None = Field(None, description="HoSoCoThanhPhanSoHoa")
    fee_required: bool | None = Field(None, description="DanhSachLePhi not empty")
    paid_online: bool | None = Field(None, description="DuocThanhToanTrucTuyen")
    satisfaction: Satisfaction | None = None
    complaint: bool | None = Field(None, description="The applicant filed a complaint.")


class DossierEvent(Envelope):
    kind: Literal[Kind.DOSSIER] = Kind.DOSSIER
    payload: DossierPayload

    @property
    def entity_id(self) -> str:
        return self.payload.dossier_code


# --- Documents (văn bản), edXML QCVN 102:2016 ---------------------------------------------


class DocumentStatus(StrEnum):
    """edXML business status codes."""

    ARRIVED = "01"
    REJECTED = "02"
    REGISTERED = "03"
    ASSIGNED = "04"
    IN_PROGRESS = "05"
    COMPLETED = "06"
    RECALL_REQUESTED = "13"
    RECALL_ACCEPTED = "15"
    RECALL_REJECTED = "16"


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class DocumentPayload(Contract):
    """Metadata of one document or one status message about it; never attachment content."""

    document_id: Code = Field(max_length=256, description="edXML DocumentId")
    status: DocumentStatus | None = Field(
        None, description="Status code; None for the document message itself."
    )
    direction: Direction | None = None
    signed: bool | None = Field(None, description=(
        "An attachment carries a digital signature (read from its bytes); None: unknown, no"
        " attachment bytes (a status message, a metadata-only import)."))
    signature_intact: bool | None = Field(None, description=(
        "Every signature verifies over the bytes it signed (integrity, not trust); None:"
        " unsigned, unknown, or the signed content is not among the attachments."))
    signed_at: When | None = Field(None, description="Signing time the signer claims (latest).")
    deadline: When | None = Field(None, description="Processing deadline (DueDate).")
    document_type: str | None = Field(None, max_length=64, description="DocumentType/Type")
    code_notation: str | None = Field(None, max_length=128, description="e.g. 1482/SKHCN-CĐS")
    from_organ_id: str | None = Field(None, max_length=64)
    to_organ_id: str | None = Field(None, max_length=64)
    attachment_count: int | None = Field(None, ge=0)
    attachment_bytes: int | None = Field(None, ge=0)


class DocumentEvent(Envelope):
    kind: Literal[Kind.DOCUMENT] = Kind.DOCUMENT
    payload: DocumentPayload

    @property
    def entity_id(self) -> str:
        return self.payload.document_id


# --- Citizen field reports (phản ánh hiện trường), Open311 GeoReport v2 ------------------


class ReportStatus(StrEnum):
    """Open311 open/closed plus the states real deployments add (FixMyStreet)."""

    OPEN = "open"
    INVESTIGATING = "investigating"
    IN_PROGRESS = "in_progress"
    FIXED = "fixed"
    CLOSED = "closed"
    DUPLICATE = "duplicate"


class FieldReportPayload(Contract):
    """A snapshot of one service request. The reporter's identity is never part of it."""

    service_request_id: Code
    service_code: Code
    service_name: str | None = Field(None, max_length=256)
    group: str | None = Field(None, max_length=256)
    status: ReportStatus
    lat: float | None = Field(None, ge=-90, le=90)
    long: float | None = Field(None, ge=-180, le=180)
    requested_datetime: When | None = None
    updated_datetime: When | None = None
    expected_datetime: When | None = None
    # Free text, redacted by the contract (ioc/core/redact.py): never a raw phone, e-mail or ID.
    description: LongText | None = None
    address_string: Address | None = None
    status_notes: LongText | None = None

    @model_validator(mode="after")
    def _both_coordinates(self) -> "FieldReportPayload":
        if (self.lat is None) != (self.long is None):
            raise ValueError("lat and long go together: give both or neither")
        return self


class FieldReportEvent(Envelope):
    kind: Literal[Kind.FIELD_REPORT] = Kind.FIELD_REPORT
    payload: FieldReportPayload

    @property
    def entity_id(self) -> str:
        return self.payload.service_request_id


# --- Citizens' evaluations of a dossier (đánh giá sự hài lòng), Decision 766 ---------------


class EvaluationPayload(Contract):
    """A citizen's evaluation of one dossier, or a complaint about it: what the satisfaction
    rate subtracts (docs/domain.md). The event's `occurred_at` is when it was given."""

    dossier_code: Code = Field(description="MaHoSo of the dossier evaluated")
    level: Satisfaction | None = Field(None, description="None: a complaint without a level")
    complaint: bool | None = Field(None, description="The applicant filed a complaint.")

    @model_validator(mode="after")
    def _says_something(self) -> "EvaluationPayload":
        if self.level is None and self.complaint is None:
            raise ValueError("an evaluation gives a level, a complaint flag or both")
        return self

    @property
    def status(self) -> str | None:
        """The level, as the `events` table's status column records it."""
        return self.level


class EvaluationEvent(Envelope):
    kind: Literal[Kind.EVALUATION] = Kind.EVALUATION
    payload: EvaluationPayload

    @property
    def entity_id(self) -> str:
        return self.payload.dossier_code


Event = DossierEvent | DocumentEvent | FieldReportEvent | EvaluationEvent
EVENT_TYPES: dict[Kind, type[Event]] = {
    Kind.DOSSIER: DossierEvent,
    Kind.DOCUMENT: DocumentEvent,
    Kind.FIELD_REPORT: FieldReportEvent,
    Kind.EVALUATION: EvaluationEvent,
}
ANY_EVENT: TypeAdapter[Event] = TypeAdapter(
    Annotated[Event, Field(discriminator="kind")]  # type: ignore[arg-type]
)


def parse_event(raw: bytes | str, kind: Kind | None = None) -> Event:
    """Validate one JSON event; with `kind`, also insist on that kind (one topic per kind)."""
    if kind is None:
        return ANY_EVENT.validate_json(raw)
    return EVENT_TYPES[kind].model_validate_json(raw)
