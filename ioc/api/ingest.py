"""Push receivers: source systems POST their records to the API instead of being polled.

- `POST /ingest/dossiers` (scope `ingest:dossiers`, JSON): one record of the national portal's
  dossier sync payload, or a list of them, exactly as the portal sends them, mapped as the
  poller maps them (`connectors/mappings/portal.py`) with the options `IOC_DVCQG_PUSH_*`
  (`agencies`, `province_code`); events' source `dvcqg_push`. A record state has one event id
  whichever way it came (polled, pushed or imported): sent twice, it counts once. A record
  that carries a citizen's evaluation (`MucDoHaiLong`, `KhieuNai`, `NgayDanhGia`) gives an
  evaluation event too.
- `POST /ingest/evaluations` (scope `ingest:evaluations`, JSON): one citizen's evaluation of
  a dossier, or a list of them: `MaHoSo`, `DonViXuLy`, `MucDoHaiLong` (1 very satisfied,
  2 satisfied, 3 unsatisfied), `KhieuNai` (0/1: a complaint), `NgayDanhGia` (when,
  `yyyyMMddHHmmss` local time), at least a level or a complaint flag; mapped by
  `connectors/mappings/portal.py` with the options `IOC_EVALUATION_PUSH_*`; source
  `evaluation_push`. Ids as for dossiers: the same evaluation sent twice counts once.
- `POST /ingest/edxml` (scope `ingest:edxml`, `application/xml` or `text/xml`): one edXML
  document message or status message, read and mapped as an inbox file is
  (`connectors/mappings/edxml.py`: no DTD, no entities, metadata only) for the agencies
  `IOC_EDXML_PUSH_OWN_ORGAN_IDS` (JSON list; `IOC_EDXML_PUSH_AGENCIES`,
  `IOC_EDXML_PUSH_MAX_FILE_BYTES` too); source `edxml_push`.
  Event ids come from the body's SHA-256, as for an inbox file: the same bytes pushed again
  (or dropped in the inbox) give the same ids. Its bodies are bounded by
  `IOC_EDXML_PUSH_MAX_FILE_BYTES` (20 MiB: attachments travel inside), not by
  `IOC_API_MAX_BODY_BYTES`.

Answers: 202 `{"event_ids": [...]}` once the broker acknowledged every event. A request is all
or nothing: when any record cannot be mapped, 422 with one message per refused record naming
the field (`body[2]: TrangThaiHoSo: 42 is not a dossier status (1-10)`) and nothing is
published (a body nested deeper than 32 levels too). 400 for a NUL character (PostgreSQL
cannot store it); dates must be plausible (ioc/core/events.py: from 2000 to 10 years ahead). 415 for
another content type, 401/403/429/413 from the key and size checks, 503
when the broker did not acknowledge in time (send again: the ids make it safe).

Refused input is not dead-lettered: the sender is told why at once and still holds the
record (and a dead-letter topic any key holder could fill would be one more thing to flood).
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from connectors.base import ConnectorOptions, refusal_reason
from connectors.mappings.edxml import document_event, message_records
from connectors.mappings.portal import carries_evaluation, dossier_event, evaluation_event
from ioc.api.auth import require_key
from ioc.api.keys import ApiKey
from ioc.api.publisher import EventPublisher, PublishFailed
from ioc.core.events import Event
from ioc.core.inputs import BadInput, loads
from ioc.core.settings import Settings

log = structlog.get_logger()

PREFIX = "/ingest"
DOSSIER_SCOPE, EDXML_SCOPE = "ingest:dossiers", "ingest:edxml"
EVALUATION_SCOPE, EVALUATION_SOURCE = "ingest:evaluations", "evaluation_push"
XML_TYPES = ("application/xml", "text/xml")
MAPPING_ERRORS = (ValueError, TypeError, KeyError, AttributeError)  # never a 500
DOSSIER_SOURCE, EDXML_SOURCE = "dvcqg_push", "edxml_push"  # options: IOC_<SOURCE>_*


class EdxmlPushOptions(ConnectorOptions):
    """Environment: `IOC_EDXML_PUSH_OWN_ORGAN_IDS` (JSON list), `..._MAX_FILE_BYTES`..."""

    own_organ_ids: list[str] = Field(default_factory=list, description=(
        "OrganIds of the agencies this IOC monitors (empty: the endpoint answers 503)."))
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Larger bodies: 413.")


class Refused(Exception):
    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(*messages)
        self.status, self.messages = status, list(messages)


def map_all(map_one: Callable[[Any], Event | list[Event]], records: list[Any],
            where: Callable[[int], str]) -> list[Event]:
    """Every record's events, or Refused(422) with every refused record's reason."""
    events: list[Event] = []
    errors = []
    for i, record in enumerate(records):
        try:
            mapped = map_one(record)
            events.extend(mapped if isinstance(mapped, list) else [mapped])
        except MAPPING_ERRORS as exc:
            reason = refusal_reason(exc) if isinstance(exc, ValueError) else \
                f"cannot be mapped ({type(exc).__name__})"
            prefix = f"{where(i)}: "  # the parser's own errors already say "body: ..."
            errors.append(reason if reason.startswith(prefix) else prefix + reason)
    if errors:
        raise Refused(422, *errors)
    return events


def dossier_records(body: bytes, content_type: str) -> tuple[list[Any], bool]:
    """The records of a JSON body (sync payload records or evaluations), and whether it was a
    list."""
    if content_type not in ("", "application/json"):
        raise Refused(415, f"content-type: {content_type!r}; send application/json")
    try:
        data = loads(body)
    except BadInput as exc:  # a NUL: 400 (PostgreSQL cannot store it); the rest 422
        raise Refused(400 if "NUL" in str(exc) else 422, str(exc)) from None
    records = data if isinstance(data, list) else [data]
    if not records or not all(isinstance(r, dict) for r in records):
        raise Refused(422, "body: a record (a JSON object) or a non-empty list of them is"
                           " expected")
    return records, isinstance(data, list)


def ingest_body_limits(settings: Settings) -> dict[str, int]:
    """edXML messages carry their attachments: their route's body limit is the receiver's
    `max_file_bytes`, not the API-wide `api_max_body_bytes`."""
    return {f"{PREFIX}/edxml": EdxmlPushOptions.read(EDXML_SOURCE).max_file_bytes}


def ingest_router(settings: Settings, publisher: EventPublisher) -> APIRouter:
    """The push receivers under /ingest, each for keys with its scope."""
    dossiers = ConnectorOptions.read(DOSSIER_SOURCE).agency_places(settings)
    evaluations = ConnectorOptions.read(EVALUATION_SOURCE).agency_places(settings)
    edxml = EdxmlPushOptions.read(EDXML_SOURCE)
    documents = edxml.agency_places(settings)
    router = APIRouter(prefix=PREFIX, tags=["ingest"])

    async def publish(events: list[Event]) -> JSONResponse:
        try:
            await publisher.publish(*events)
        except PublishFailed:
            raise Refused(503, "the events could not be queued; send again") from None
        return JSONResponse({"event_ids": [str(e.event_id) for e in events]}, status_code=202)

    async def answer(request: Request, key: ApiKey, handle: Callable[[bytes, str],
                     Awaitable[JSONResponse]]) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            return await handle(await request.body(), content_type)
        except Refused as exc:
            log.info("ingest: refused", path=request.url.path, key=key.name, status=exc.status,
                     reasons=exc.messages[:5])
            return JSONResponse({"detail": exc.messages}, status_code=exc.status)

    @router.post("/dossiers", status_code=202)
    async def push_dossiers(request: Request, key: Annotated[
            ApiKey, Depends(require_key(DOSSIER_SCOPE))]) -> JSONResponse:
        async def handle(body: bytes, content_type: str) -> JSONResponse:
            records, listed = dossier_records(body, content_type)
            def both(record: Any) -> list[Event]:
                event: list[Event] = [dossier_event(record, dossiers, DOSSIER_SOURCE)]
                if carries_evaluation(record):
                    event.append(evaluation_event(record, dossiers, DOSSIER_SOURCE))
                return event

            events = map_all(both, records, lambda i: f"body[{i}]" if listed else "body")
            return await publish(events)

        return await answer(request, key, handle)

    @router.post("/evaluations", status_code=202)
    async def push_evaluations(request: Request, key: Annotated[
            ApiKey, Depends(require_key(EVALUATION_SCOPE))]) -> JSONResponse:
        async def handle(body: bytes, content_type: str) -> JSONResponse:
            records, listed = dossier_records(body, content_type)
            events = map_all(lambda r: evaluation_event(r, evaluations, EVALUATION_SOURCE),
                             records, lambda i: f"body[{i}]" if listed else "body")
            return await publish(events)

        return await answer(request, key, handle)

    @router.post("/edxml", status_code=202)
    async def push_edxml(request: Request, key: Annotated[
            ApiKey, Depends(require_key(EDXML_SCOPE))]) -> JSONResponse:
        async def handle(body: bytes, content_type: str) -> JSONResponse:
            if content_type not in XML_TYPES:
                raise Refused(415, f"content-type: {content_type!r}; send application/xml")
            limit = edxml.max_file_bytes
            if len(body) > limit:
                raise Refused(413, f"body: {len(body)} bytes, over max_file_bytes ({limit})")
            if not edxml.own_organ_ids:
                raise Refused(503, "edXML push is not configured: set"
                                   " IOC_EDXML_PUSH_OWN_ORGAN_IDS")
            records = await asyncio.to_thread(message_records, body, {"file": "body"},
                                              edxml.own_organ_ids)
            events = map_all(lambda r: document_event(r, documents, EDXML_SOURCE), records,
                             lambda i: "body")
            return await publish(events)

        return await answer(request, key, handle)

    return router
