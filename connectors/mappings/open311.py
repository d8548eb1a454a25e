"""Open311 GeoReport v2 service requests -> `FieldReportEvent`s (phản ánh hiện trường).

A citizen app POSTs a request (`NewRequest`: the spec's fields); once the API has placed it in
a commune and found the agency (ioc/core/geography.py), `new_report_event` makes its first
event. A later change (an agency's `StatusUpdate`, a duty officer's `CommuneAssignment`) is
applied to the stored report and published whole by `report_change_event`.

The reporter's identity (e-mail, name, phone, device and account ids) is accepted as the spec
says, then dropped: no event carries it. The description and address are redacted
(ioc/core/redact.py: phone numbers, e-mails, ID numbers masked). Ids and clocks come from the
caller, so the same input always gives the same event.
"""

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ioc.core.events import (
    AdminUnit,
    Agency,
    FieldReportEvent,
    FieldReportPayload,
    ReportStatus,
    When,
    implausible,
)
from ioc.core.redact import redact
from ioc.core.report_services import Service


class NewRequest(BaseModel):
    """POST requests.json fields; personal ones are checked, then never used."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, allow_inf_nan=False)

    service_code: str = Field(min_length=1, max_length=64)
    api_key: str | None = Field(None, max_length=256,
                                description="A key with the scope reports:create (or a header).")
    lat: float | None = Field(None, ge=-90, le=90)
    long: float | None = Field(None, ge=-180, le=180)
    address_string: str | None = Field(None, min_length=1, max_length=1024)
    address_id: str | None = Field(None, max_length=256)
    email: str | None = Field(None, max_length=254)
    device_id: str | None = Field(None, max_length=256)
    account_id: str | None = Field(None, max_length=256)
    first_name: str | None = Field(None, max_length=256)
    last_name: str | None = Field(None, max_length=256)
    phone: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=4000)
    media_url: str | None = Field(None, max_length=2048)

    @model_validator(mode="after")
    def _location(self) -> "NewRequest":
        if (self.lat is None) != (self.long is None):
            raise ValueError("lat and long go together: give both or neither")
        if self.lat is None and not self.address_string and not self.address_id:
            raise ValueError("a location is required: lat and long, or address_string")
        return self


class StatusUpdate(BaseModel):  # POST requests/{id}/status.json: the agency's new status
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: ReportStatus
    status_notes: str | None = Field(None, max_length=4000)
    expected_datetime: When | None = None  # plausible: from 2000 to 10 years ahead


class CommuneAssignment(BaseModel):  # POST requests/{id}/commune.json: the duty officer's
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    commune_code: str = Field(pattern=r"^\d{5}$", description="Official five-digit code.")


def new_report_event(new: NewRequest, service: Service, *, province_code: str,
                     commune: str | None, agency: tuple[str, str | None], request_id: str,
                     at: datetime, event_id: UUID, source: str) -> FieldReportEvent:
    """A new request's first event: open, expected within the service's hours of `at`."""
    agency_code, agency_name = agency
    return FieldReportEvent(
        event_id=event_id, source=source, occurred_at=at, ingested_at=at,
        unit=AdminUnit(province_code=province_code, commune_code=commune),
        agency=Agency(code=agency_code, name=agency_name),
        payload=FieldReportPayload(
            service_request_id=request_id, service_code=service.code,
            service_name=service.name, group=service.group,
            status=ReportStatus.OPEN, lat=new.lat, long=new.long,
            requested_datetime=at, updated_datetime=at,
            expected_datetime=at + timedelta(hours=service.hours),
            description=redact(new.description) if new.description else None,
            address_string=redact(new.address_string) if new.address_string else None))


def with_status(row: dict[str, Any], update: StatusUpdate) -> dict[str, Any]:
    """A stored report (a `field_reports` row) with an agency's status update applied."""
    # A new status without notes clears the old ones ("" is stored: a None would keep them,
    # as the fold keeps what a newer event leaves out).
    return {**row, "status": update.status.value,
            "expected_datetime": update.expected_datetime or row["expected_datetime"],
            "status_notes": update.status_notes or ""}


def with_commune(row: dict[str, Any], commune: str,
                 agency: tuple[str, str | None]) -> dict[str, Any]:
    """A stored report placed in `commune`, handled by that commune's `agency`."""
    return {**row, "commune_code": commune, "agency_code": agency[0], "agency_name": agency[1]}


def report_change_event(row: dict[str, Any], now: datetime, source: str,
                        event_id: UUID) -> FieldReportEvent:
    """The report as `row` has it (with a change applied to the row), as a newer event."""
    # Strictly after what the worker holds, so the row's clock takes this event as newer.
    occurred = max(now, row["last_occurred_at"] + timedelta(microseconds=1))
    expected = row["expected_datetime"]
    if expected is not None and implausible(expected):
        expected = None  # stored before dates were checked: not carried into a new event
    return FieldReportEvent(
        event_id=event_id, source=source, occurred_at=occurred, ingested_at=now,
        unit=AdminUnit(province_code=row["province_code"],
                       commune_code=row["commune_code"] or None),
        agency=Agency(code=row["agency_code"], name=row["agency_name"]),
        payload=FieldReportPayload(
            service_request_id=row["service_request_id"], service_code=row["service_code"],
            service_name=row["service_name"], group=row["service_group"],
            status=row["status"], lat=row["lat"], long=row["long"],
            requested_datetime=row["requested_datetime"], updated_datetime=now,
            expected_datetime=expected, description=row.get("description"),
            address_string=row.get("address_string"), status_notes=row.get("status_notes")))
