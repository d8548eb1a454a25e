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

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from pydantic import ValidationError

from connectors.mappings.open311 import (
    CommuneAssignment,
    StatusUpdate,
    report_change_event,
    with_commune,
    with_status,
)
from ioc.api.auth import require_key
from ioc.api.keys import ApiKey
from ioc.api.open311 import PREFIX, read_reports, request_row
from ioc.api.open311_http import (
    Open311Error,
    Open311Route,
    body_schema,
    error_response,
    parse_body,
    validation_messages,
)
from ioc.api.publisher import EventPublisher, PublishFailed
from ioc.core.events import FieldReportEvent
from ioc.core.geography import UnknownCommune, geography
from ioc.core.settings import Settings

log = structlog.get_logger()

SOURCE = "open311-agency"
ASSIGN_SOURCE = "open311-duty-officer"
SCOPE = "reports:update"
ASSIGN_SCOPE = "reports:assign"


def status_updates_router(settings: Settings, publisher: EventPublisher) -> APIRouter:
    """POST {PREFIX}/requests/{id}/status.json for keys with the `reports:update` scope and
    {PREFIX}/requests/{id}/commune.json for keys with `reports:assign`."""
    places = geography(settings)
    router = APIRouter(prefix=PREFIX, tags=["open311"], route_class=Open311Route)

    async def known(request: Request, request_id: str) -> dict[str, Any]:
        found = await read_reports(request, sql.SQL("service_request_id = %s"),
                                   [request_id[:256]])
        if not found:
            raise Open311Error(404, f"service_request_id: {request_id[:64]!r} is not a"
                                    " known request")
        return found[0]

    async def send(changed: dict[str, Any], now: datetime, source: str) -> FieldReportEvent:
        try:
            event = report_change_event(changed, now, source, uuid.uuid4())
        except ValidationError as exc:  # a stored row the contract refuses
            raise Open311Error(409, *validation_messages(exc)) from None
        try:
            await publisher.publish(event)
        except PublishFailed:
            raise Open311Error(503, "the update could not be queued; try again") from None
        return event

    authorized = Annotated[ApiKey, Depends(require_key(SCOPE))]
    assigner = Annotated[ApiKey, Depends(require_key(ASSIGN_SCOPE))]

    @router.post("/requests/{request_id}/status.json", openapi_extra=body_schema(StatusUpdate))
    async def update_status(request: Request, request_id: str, key: authorized) -> Response:
        try:
            try:
                update = StatusUpdate.model_validate(await parse_body(request))
            except ValidationError as exc:
                raise Open311Error(400, *validation_messages(exc)) from None
            row, now = await known(request, request_id), datetime.now(UTC)
            event = await send(with_status(row, update), now, SOURCE)
        except Open311Error as exc:
            return error_response("json", exc)
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
                assignment = CommuneAssignment.model_validate(await parse_body(request))
                commune = places.check(assignment.commune_code)
            except ValidationError as exc:
                raise Open311Error(400, *validation_messages(exc)) from None
            except UnknownCommune as exc:
                raise Open311Error(400, str(exc).replace("attribute[commune_code]",
                                                         "commune_code")) from None
            row, now = await known(request, request_id), datetime.now(UTC)
            if row["province_code"] != places.province_code:
                raise Open311Error(409, f"service_request_id: {request_id[:64]!r} belongs to"
                                        f" province {row['province_code']}")
            changed = with_commune(row, commune, places.directory.agency(commune))
            await send(changed, now, ASSIGN_SOURCE)
        except Open311Error as exc:
            return error_response("json", exc)
        log.info("open311: commune assigned", service_request_id=request_id, key=key.name,
                 commune=commune, before=row["commune_code"] or None)
        return JSONResponse([request_row({**changed, "updated_datetime": now})])

    return router
