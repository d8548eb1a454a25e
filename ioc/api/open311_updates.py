"""Changes to Open311 service requests after they were filed (an API key's write).

POST /open311/v2/requests/{id}/status.json (scope `reports:update`, the handling agency):
`status` and optionally `status_notes` (stored redacted, served by GET requests) and
`expected_datetime`. POST
/open311/v2/requests/{id}/commune.json (scope `reports:assign`, the IOC's duty officer):
`commune_code`, placing a report that could not be placed (or correcting one); its agency
follows from the directory. Bodies are form or JSON. The answer comes after the broker
acknowledged a `FieldReportEvent`: the current `field_reports` row with the change,
`updated_datetime` now. The worker then applies it like any other event (the table and the
KPIs follow).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ioc.api.auth import require_key
from ioc.api.keys import ApiKey
from ioc.api.open311 import (
    PREFIX,
    PUBLISH_TIMEOUT,
    LenientTimestamptz,
    Open311Error,
    _describe,
    _errors,
    _parse_body,
    body_schema,
    request_row,
)
from ioc.api.publisher import EventPublisher
from ioc.core.events import (
    AdminUnit,
    Agency,
    FieldReportEvent,
    FieldReportPayload,
    ReportStatus,
    When,
    implausible,
)
from ioc.core.geography import UnknownCommune, geography
from ioc.core.settings import Settings

log = structlog.get_logger()

SOURCE = "open311-agency"
ASSIGN_SOURCE = "open311-duty-officer"
SCOPE = "reports:update"
ASSIGN_SCOPE = "reports:assign"


class StatusUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: ReportStatus
    status_notes: str | None = Field(None, max_length=4000)
    expected_datetime: When | None = None  # plausible: from 2000 to 10 years ahead


class CommuneAssignment(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    commune_code: str = Field(pattern=r"^\d{5}$", description="Official five-digit code.")


class Open311Route(APIRoute):
    """Errors of dependencies and validation in the spec's shape: [{"code", "description"}]."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return JSONResponse([{"code": exc.status_code, "description": str(exc.detail)}],
                                    status_code=exc.status_code, headers=exc.headers)
            except RequestValidationError as exc:
                described = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
                return JSONResponse([{"code": 400, "description": d} for d in described],
                                    status_code=400)

        return route


def snapshot(row: dict[str, Any], now: datetime, source: str = SOURCE) -> FieldReportEvent:
    """The report as `row` has it (with a change applied to the row), as a newer event."""
    # Strictly after what the worker holds, so the row's clock takes this event as newer.
    occurred = max(now, row["last_occurred_at"] + timedelta(microseconds=1))
    expected = row["expected_datetime"]
    if expected is not None and implausible(expected):
        expected = None  # stored before dates were checked: not carried into a new event
    return FieldReportEvent(
        event_id=uuid.uuid4(), source=source, occurred_at=occurred, ingested_at=now,
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


def status_updates_router(settings: Settings) -> APIRouter:
    """POST {PREFIX}/requests/{id}/status.json for keys with the `reports:update` scope and
    {PREFIX}/requests/{id}/commune.json for keys with `reports:assign`."""
    publisher = EventPublisher(settings)
    places = geography(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await publisher.stop()

    router = APIRouter(prefix=PREFIX, tags=["open311"], lifespan=lifespan,
                       route_class=Open311Route)
    publish = publisher.publish

    async def current(request: Request, request_id: str) -> dict[str, Any] | None:
        async def run(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any] | None:
            async with conn.cursor(row_factory=dict_row) as cur:
                cur.adapters.register_loader("timestamptz", LenientTimestamptz)
                await cur.execute("SELECT * FROM field_reports WHERE service_request_id = %s",
                                  (request_id,))
                return await cur.fetchone()

        try:
            return await request.app.state.database.run(run)
        except Exception as exc:  # DatabaseDown, psycopg errors: never a 500
            log.warning("open311: field_reports unreadable", error=type(exc).__name__)
            raise Open311Error(503, "service requests cannot be read now; try again") from None

    async def known(request: Request, request_id: str) -> dict[str, Any]:
        row = await current(request, request_id[:256])
        if row is None:
            raise Open311Error(404, f"service_request_id: {request_id[:64]!r} is not a"
                                    " known request")
        return row

    async def send(changed: dict[str, Any], now: datetime, source: str) -> FieldReportEvent:
        try:
            event = snapshot(changed, now, source)
        except ValidationError as exc:  # a stored row the contract refuses
            raise Open311Error(409, *_describe(exc)) from None
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await publish(event)
        except Exception as exc:
            log.warning("open311: change publish failed", error=type(exc).__name__)
            raise Open311Error(503, "the update could not be queued; try again") from None
        return event

    authorized = Annotated[ApiKey, Depends(require_key(SCOPE))]
    assigner = Annotated[ApiKey, Depends(require_key(ASSIGN_SCOPE))]

    @router.post("/requests/{request_id}/status.json", openapi_extra=body_schema(StatusUpdate))
    async def update_status(request: Request, request_id: str, key: authorized) -> Response:
        try:
            try:
                update = StatusUpdate.model_validate(await _parse_body(request))
            except ValidationError as exc:
                raise Open311Error(400, *_describe(exc)) from None
            row, now = await known(request, request_id), datetime.now(UTC)
            # A new status without notes clears the old ones ("" is stored: a None would keep
            # them, as the fold keeps what a newer event leaves out).
            changed = {**row, "status": update.status.value,
                       "expected_datetime": update.expected_datetime or row["expected_datetime"],
                       "status_notes": update.status_notes or ""}
            event = await send(changed, now, SOURCE)
        except Open311Error as exc:
            return _errors("json", exc)
        log.info("open311: status updated", service_request_id=request_id, key=key.name,
                 status=update.status.value, notes=bool(update.status_notes))
        answer = request_row({**row, "status": update.status.value, "updated_datetime": now,
                              "expected_datetime": event.payload.expected_datetime,
                              "status_notes": event.payload.status_notes})
        return JSONResponse([answer])

    @router.post("/requests/{request_id}/commune.json",
                 openapi_extra=body_schema(CommuneAssignment))
    async def assign_commune(request: Request, request_id: str, key: assigner) -> Response:
        try:
            try:
                assignment = CommuneAssignment.model_validate(await _parse_body(request))
                commune = places.check(assignment.commune_code)
            except ValidationError as exc:
                raise Open311Error(400, *_describe(exc)) from None
            except UnknownCommune as exc:
                raise Open311Error(400, str(exc).replace("attribute[commune_code]",
                                                         "commune_code")) from None
            row, now = await known(request, request_id), datetime.now(UTC)
            if row["province_code"] != places.province_code:
                raise Open311Error(409, f"service_request_id: {request_id[:64]!r} belongs to"
                                        f" province {row['province_code']}")
            agency_code, agency_name = places.directory.agency(commune)
            changed = {**row, "commune_code": commune, "agency_code": agency_code,
                       "agency_name": agency_name}
            await send(changed, now, ASSIGN_SOURCE)
        except Open311Error as exc:
            return _errors("json", exc)
        log.info("open311: commune assigned", service_request_id=request_id, key=key.name,
                 commune=commune, before=row["commune_code"] or None)
        return JSONResponse([request_row({**changed, "updated_datetime": now})])

    return router
