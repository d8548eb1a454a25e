"""Open311 GeoReport v2 for citizens' field reports (phản ánh hiện trường).

Services come from `ioc/core/report_services.py`; a POSTed request is placed in a commune and
routed to an agency by `ioc/core/geography.py` (or left unassigned), becomes a
`FieldReportEvent` (`connectors/mappings/open311.py`, which drops the reporter's identity and
redacts the free text) published to the field-reports topic (acknowledged before the answer),
and requests are read back from the worker's `field_reports` table. The reporter's identity
never reaches an event, the database, a log line or an answer.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from http import HTTPStatus
from typing import Any

import psycopg
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.mappings.open311 import NewRequest, new_report_event
from ioc.api import open311_xml
from ioc.api.auth import authorize, presented_key
from ioc.api.fast_path import FastPaths
from ioc.api.open311_http import (
    Open311Error,
    body_schema,
    check_format,
    error_response,
    listing,
    parse_body,
    validation_messages,
)
from ioc.api.publisher import EventPublisher, PublishFailed
from ioc.core.events import ReportStatus, implausible
from ioc.core.geography import COMMUNE_ATTRIBUTE, UnknownCommune, attributes, geography
from ioc.core.report_services import SERVICES, Service
from ioc.core.settings import Settings
from ioc.core.units import provinces

log = structlog.get_logger()

PREFIX = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-12-02T00:00:00Z"  # the last change of these routes (discovery.json says it)
SOURCE = "open311-api"
CREATE_SCOPE = "reports:create"  # the API key a citizen app posts reports with
VIETNAM = timezone(timedelta(hours=7))
MAX_SPAN = timedelta(days=90)
MAX_ROWS = 1000
OPEN = {ReportStatus.OPEN, ReportStatus.INVESTIGATING, ReportStatus.IN_PROGRESS}
STATUS_SETS = {"open": sorted(OPEN),
               "closed": sorted(set(ReportStatus) - OPEN)}


def service_row(service: Service) -> dict[str, Any]:
    return {"service_code": service.code, "service_name": service.name,
            "description": f"{service.name} (xử lý trong khoảng {service.hours:g} giờ)",
            "metadata": True, "type": "realtime", "keywords": service.group.lower(),
            "group": service.group}


# The one service attribute: the commune/ward the app knows the report is in.
COMMUNE_DEFINITION = {
    "variable": True, "code": COMMUNE_ATTRIBUTE, "datatype": "string", "required": False,
    "datatype_description": "Mã xã/phường chính thức, 5 chữ số (official commune/ward code)",
    "order": 1, "description": "Xã/phường nơi xảy ra sự việc, nếu ứng dụng biết."}


def _iso(value: datetime | None) -> str | None:
    """Local time; a stored value local time cannot hold (9999-12-31Z) as it is."""
    if value is None:
        return None
    try:
        return value.astimezone(VIETNAM).isoformat()
    except (OverflowError, ValueError):
        return value.isoformat()


class LenientTimestamptz(TimestamptzLoader):
    """A stored date Python cannot hold (year 1 BC, after 9999, infinity) reads as None: one
    bad row never makes a listing fail for everyone."""

    def load(self, data: Any) -> datetime | None:  # type: ignore[override]
        try:
            return super().load(data)
        except psycopg.DataError:
            return None


def request_row(row: dict[str, Any]) -> dict[str, Any]:
    """A `field_reports` row in the spec's shape. Its free text is stored redacted; without the
    agency's notes, status_notes names the detailed status."""
    detailed = row["status"]
    return {"service_request_id": row["service_request_id"],
            "status": "open" if detailed in OPEN else "closed",
            "status_notes": row.get("status_notes") or detailed,
            "service_name": row["service_name"], "service_code": row["service_code"],
            "description": row.get("description"),
            "agency_responsible": row["agency_name"] or row["agency_code"],
            "service_notice": None,
            "requested_datetime": _iso(row["requested_datetime"]),
            "updated_datetime": _iso(row["updated_datetime"]),
            "expected_datetime": _iso(row["expected_datetime"]),
            "address": row.get("address_string"), "address_id": None, "zipcode": None,
            "lat": row["lat"], "long": row["long"], "media_url": None}


def _date(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{name}: not a w3 date-time, e.g. 2025-07-01T00:00:00Z") \
            from None
    if value.tzinfo is None:
        raise Open311Error(400, f"{name}: a time zone is required (Z or +07:00)")
    reason = implausible(value)
    if reason:
        raise Open311Error(400, f"{name}: {reason}")
    return value


def _query_filters(params: dict[str, str]) -> tuple[sql.Composable, list[Any]]:
    """WHERE clause and parameters for GET requests (spec: ids override the rest)."""
    ids = [i for i in params.get("service_request_id", "").split(",") if i]
    if ids:
        return sql.SQL("service_request_id = ANY(%s)"), [ids[:MAX_ROWS]]
    start = _date("start_date", params["start_date"]) if params.get("start_date") else None
    end = _date("end_date", params["end_date"]) if params.get("end_date") else None
    if start and end and end - start > MAX_SPAN:
        raise Open311Error(400, "end_date: the span from start_date is limited to 90 days")
    if start and end and end < start:
        raise Open311Error(400, "end_date: before start_date")
    end = end or (start + MAX_SPAN if start else datetime.now(UTC))
    start = start or end - MAX_SPAN
    clauses, args = ["anchor_at >= %s", "anchor_at <= %s"], [start, end]
    if params.get("service_code"):
        clauses.append("service_code = ANY(%s)")
        args.append(params["service_code"].split(","))
    if params.get("status"):
        wanted = params["status"].split(",")
        if any(s not in STATUS_SETS for s in wanted):
            raise Open311Error(400, "status: open or closed (comma separated)")
        clauses.append("status = ANY(%s)")
        args.append([detailed for s in wanted for detailed in STATUS_SETS[s]])
    return sql.SQL(" AND ").join(map(sql.SQL, clauses)), args


async def read_reports(request: Request, where: sql.Composable,
                       args: Sequence[Any]) -> list[dict[str, Any]]:
    """The `field_reports` rows `where` selects, newest first; 503 when they cannot be read."""
    query = sql.SQL("SELECT * FROM field_reports WHERE {} ORDER BY anchor_at DESC,"
                    " service_request_id LIMIT {}").format(where, sql.Literal(MAX_ROWS))

    async def run(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            cur.adapters.register_loader("timestamptz", LenientTimestamptz)
            await cur.execute(query, args)
            return await cur.fetchall()

    try:
        return await request.app.state.database.run(run)
    except Exception as exc:  # DatabaseDown, psycopg errors: never a 500
        log.warning("open311: field_reports unreadable", error=type(exc).__name__)
        raise Open311Error(503, "service requests cannot be read now; try again") from None


def open311_router(settings: Settings, publisher: EventPublisher,
                   fast_paths: FastPaths | None = None) -> APIRouter:
    """The GeoReport v2 routes under /open311/v2 for `settings.province_code`; the report POST
    is also put in `fast_paths` (ioc/api/fast_path.py)."""
    province_code, province_name = settings.province_code, provinces()[settings.province_code]
    places = geography(settings)
    services = {s.code: s for s in SERVICES}
    router = APIRouter(prefix=PREFIX, tags=["open311"])

    @router.get("/services.{fmt}")
    async def list_services(fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
        except Open311Error as exc:
            return error_response("json", exc)
        return listing(fmt, "services", "service", [service_row(s) for s in services.values()])

    @router.get("/services/{service_code}.{fmt}")
    async def service_definition(service_code: str, fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
            if service_code not in services:
                raise Open311Error(404, f"service_code: {service_code[:64]!r} is not a service")
        except Open311Error as exc:
            return error_response(fmt if fmt == "xml" else "json", exc)
        body = {"service_code": service_code, "attributes": [COMMUNE_DEFINITION]}
        if fmt == "xml":
            return open311_xml.render_one("service_definition", body)
        return JSONResponse(body)

    @router.post("/requests.{fmt}", openapi_extra=body_schema(NewRequest))
    async def create_request(request: Request, fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
            body = await parse_body(request)
            # The spec's `api_key` argument, or the headers every other write route takes.
            api_key = body.get("api_key")
            try:
                await authorize(request, CREATE_SCOPE,
                                presented_key(request) or (str(api_key) if api_key else None))
            except HTTPException as exc:
                raise Open311Error(exc.status_code, str(exc.detail), headers=exc.headers
                                   ) from None
            try:
                new = NewRequest.model_validate(body)
            except ValidationError as exc:
                raise Open311Error(400, *validation_messages(exc)) from None
            service = services.get(new.service_code)
            if service is None:
                raise Open311Error(400, f"service_code: {new.service_code!r} is not a service"
                                        f" of this province (see services.json)")
            try:
                commune, how = places.resolve(
                    attributes(body).get(COMMUNE_ATTRIBUTE), new.address_string,
                    new.lat, new.long)
            except UnknownCommune as exc:
                raise Open311Error(400, str(exc)) from None
            now = datetime.now(UTC).replace(microsecond=0)
            request_id = f"PAHT-{province_code}-{uuid.uuid4().hex[:12].upper()}"
            agency_code, agency_name = agency = places.directory.agency(commune)
            event = new_report_event(new, service, province_code=province_code,
                                     commune=commune, agency=agency, request_id=request_id,
                                     at=now, event_id=uuid.uuid4(), source=SOURCE)
            try:
                await publisher.publish(event)
            except PublishFailed:  # broker down or slow: the request was not taken
                raise Open311Error(503, "the request could not be queued; try again") from None
        except Open311Error as exc:
            return error_response(fmt if fmt == "xml" else "json", exc)
        where = (places.commune_name(commune) if commune
                 else f"{province_name}, chưa xác định xã/phường")
        notice = (f"Đã tiếp nhận phản ánh, chuyển {agency_name or agency_code} ({where}); dự"
                  f" kiến xử lý trong {service.hours:g} giờ.")
        log.info("open311: request queued", service_request_id=request_id,
                 service_code=service.code, commune=commune, placed_by=how)
        return listing(fmt, "service_requests", "request", [
            {"service_request_id": request_id, "service_notice": notice, "account_id": None}])

    if fast_paths is not None:
        route = router.routes[-1]
        assert isinstance(route, APIRoute) and route.endpoint is create_request
        for fmt in ("json", "xml"):
            fast_paths[("POST", f"{PREFIX}/requests.{fmt}")] = (
                route, partial(create_request, fmt=fmt), {"fmt": fmt})

    @router.get("/requests.{fmt}")
    async def list_requests(request: Request, fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
            where, args = _query_filters(dict(request.query_params))
            found = await read_reports(request, where, args)
        except Open311Error as exc:
            return error_response(fmt if fmt == "xml" else "json", exc)
        return listing(fmt, "service_requests", "request", [request_row(r) for r in found])

    @router.get("/requests/{service_request_id}.{fmt}")
    async def get_request(request: Request, service_request_id: str, fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
            found = await read_reports(request, sql.SQL("service_request_id = %s"),
                                       [service_request_id])
            if not found:
                raise Open311Error(404, f"service_request_id: {service_request_id[:64]!r}"
                                        f" not found")
        except Open311Error as exc:
            return error_response(fmt if fmt == "xml" else "json", exc)
        return listing(fmt, "service_requests", "request", [request_row(r) for r in found])

    return router


def discovery_router(settings: Settings) -> APIRouter:
    """GET /open311/discovery.json (.xml): where the GeoReport v2 endpoint is, per the spec."""
    router = APIRouter(prefix="/open311", tags=["open311"])
    province = provinces()[settings.province_code]

    @router.get("/discovery.{fmt}")
    async def discovery(request: Request, fmt: str) -> Response:
        try:
            fmt = check_format(fmt)
        except Open311Error as exc:
            return error_response("json", exc)
        base = (settings.public_api_url or str(request.base_url)).rstrip("/")
        body = {"changeset": CHANGESET,
                "contact": f"Trung tâm Giám sát, điều hành thông minh (IOC) {province}",
                "key_service": "API keys (scope reports:create) are issued by the IOC operators",
                "endpoints": [{"specification": SPECIFICATION, "url": base + PREFIX,
                               "changeset": CHANGESET, "type": "production",
                               "formats": ["application/json", "text/xml"]}]}
        if fmt == "xml":
            return open311_xml.render_one("discovery", body)
        return JSONResponse(body)

    return router


async def http_errors(request: Request, exc: Exception) -> Response:
    """Unmatched /open311 paths, wrong methods: the spec's error list (XML for .xml paths)."""
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    path = request.url.path
    if path != "/open311" and not path.startswith("/open311/"):
        return await http_exception_handler(request, exc)
    description = str(exc.detail)
    if exc.detail == HTTPStatus(exc.status_code).phrase:  # the router's own: say more
        description = {
            404: f"{path[:128]}: no such Open311 resource (see /open311/discovery.json)",
            405: f"{request.method[:16]}: not allowed on {path[:128]}",
        }.get(exc.status_code, description)
    return error_response("xml" if path.endswith(".xml") else "json",
                          Open311Error(exc.status_code, description, headers=exc.headers))
