"""Open311 GeoReport v2 for citizens' field reports (phản ánh hiện trường).

Services come from `ioc/core/report_services.py`; a POSTed request is placed in a commune and routed
to an agency by `ioc/core/geography.py` (or left unassigned), becomes a `FieldReportEvent` published
to the field-reports topic (acknowledged before the answer), and requests are read back from
the worker's `field_reports` table. The reporter's identity (e-mail, name, phone,
device and account ids) is accepted as the spec says, then dropped: it never reaches an
event, the database, a log line or an answer. The description and address are kept redacted
(`ioc/core/redact.py`: phone numbers, e-mails, ID numbers masked before publishing).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import psycopg
import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ioc.api import open311_xml
from ioc.api.auth import authorize, presented_key
from ioc.api.publisher import EventPublisher
from ioc.core.events import (
    AdminUnit,
    Agency,
    FieldReportEvent,
    FieldReportPayload,
    ReportStatus,
    implausible,
)
from ioc.core.geography import COMMUNE_ATTRIBUTE, UnknownCommune, attributes, geography
from ioc.core.inputs import BadInput, check, loads
from ioc.core.redact import redact
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
MAX_BODY = 256 * 1024
MAX_SPAN = timedelta(days=90)
MAX_ROWS = 1000
PUBLISH_TIMEOUT = 15.0
OPEN = {ReportStatus.OPEN, ReportStatus.INVESTIGATING, ReportStatus.IN_PROGRESS}
STATUS_SETS = {"open": sorted(OPEN),
               "closed": sorted(set(ReportStatus) - OPEN)}


class Open311Error(Exception):
    def __init__(self, status: int, *descriptions: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(*descriptions)
        self.status, self.descriptions, self.headers = status, descriptions, headers


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


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that parses its own body: the model, as form or JSON."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    content = {kind: {"schema": inline(schema)}
               for kind in ("application/x-www-form-urlencoded", "application/json")}
    return {"requestBody": {"required": True, "content": content}}


def _describe(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "location"
        out.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
    return out


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


async def _parse_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise Open311Error(400, f"body: larger than {MAX_BODY} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Open311Error(400, "body: not UTF-8") from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or (not kind and text.lstrip().startswith("{")):
        try:
            data = loads(text)
        except BadInput as exc:
            raise Open311Error(400, str(exc)) from None
        if not isinstance(data, dict):
            raise Open311Error(400, "body: a JSON object is expected")
        # JSON true/false is no number or text: left as text, the model rejects it.
        return {k: str(v).lower() if isinstance(v, bool) else v for k, v in data.items()
                if v is not None and v != ""}
    if kind.startswith("multipart/"):
        raise Open311Error(400, "body: send application/x-www-form-urlencoded (media_url for"
                                " media)")
    try:
        pairs = parse_qsl(text, keep_blank_values=False, strict_parsing=False)
    except ValueError:
        raise Open311Error(400, "body: not form-encoded") from None
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields.setdefault(key, value)  # repeated fields: the first one counts
    try:
        check(fields)
    except BadInput as exc:
        raise Open311Error(400, str(exc)) from None
    return fields


def _fmt(fmt: str) -> str:
    if fmt not in ("json", "xml"):
        raise Open311Error(404, f"format: .{fmt[:20]} is not served; use .json or .xml")
    return fmt


def _errors(fmt: str, exc: Open311Error) -> Response:
    if fmt == "xml":
        response = open311_xml.errors(exc.status, exc.descriptions)
        response.headers.update(exc.headers or {})
        return response
    return JSONResponse([{"code": exc.status, "description": d} for d in exc.descriptions],
                        status_code=exc.status, headers=exc.headers)


def _list(fmt: str, root: str, item: str, rows: Sequence[dict[str, Any]]) -> Response:
    if fmt == "xml":
        return open311_xml.render(root, item, rows)
    return JSONResponse(list(rows))


def open311_router(settings: Settings) -> APIRouter:
    """The GeoReport v2 routes under /open311/v2 for `settings.province_code`."""
    province_code, province_name = settings.province_code, provinces()[settings.province_code]
    places = geography(settings)
    services = {s.code: s for s in SERVICES}
    publisher = EventPublisher(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await publisher.stop()

    router = APIRouter(prefix=PREFIX, tags=["open311"], lifespan=lifespan)
    publish = publisher.publish

    async def rows(request: Request, where: sql.Composable,
                   args: list[Any]) -> list[dict[str, Any]]:
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

    @router.get("/services.{fmt}")
    async def list_services(fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
        except Open311Error as exc:
            return _errors("json", exc)
        return _list(fmt, "services", "service", [service_row(s) for s in services.values()])

    @router.get("/services/{service_code}.{fmt}")
    async def service_definition(service_code: str, fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
            if service_code not in services:
                raise Open311Error(404, f"service_code: {service_code[:64]!r} is not a service")
        except Open311Error as exc:
            return _errors(fmt if fmt == "xml" else "json", exc)
        body = {"service_code": service_code, "attributes": [COMMUNE_DEFINITION]}
        if fmt == "xml":
            return open311_xml.render_one("service_definition", body)
        return JSONResponse(body)

    @router.post("/requests.{fmt}", openapi_extra=body_schema(NewRequest))
    async def create_request(request: Request, fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
            body = await _parse_body(request)
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
                raise Open311Error(400, *_describe(exc)) from None
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
            agency_code, agency_name = places.directory.agency(commune)
            event = FieldReportEvent(
                event_id=uuid.uuid4(), source=SOURCE, occurred_at=now, ingested_at=now,
                unit=AdminUnit(province_code=province_code, commune_code=commune),
                agency=Agency(code=agency_code, name=agency_name),
                payload=FieldReportPayload(
                    service_request_id=request_id, service_code=service.code,
                    service_name=service.name, group=service.group,
                    status=ReportStatus.OPEN, lat=new.lat, long=new.long,
                    requested_datetime=now, updated_datetime=now,
                    expected_datetime=now + timedelta(hours=service.hours),
                    description=redact(new.description) if new.description else None,
                    address_string=redact(new.address_string) if new.address_string
                    else None))
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await publish(event)
            except Exception as exc:  # broker down or slow: the request was not taken
                log.warning("open311: publish failed", error=type(exc).__name__)
                raise Open311Error(503, "the request could not be queued; try again") from None
        except Open311Error as exc:
            return _errors(fmt if fmt == "xml" else "json", exc)
        where = (places.commune_name(commune) if commune
                 else f"{province_name}, chưa xác định xã/phường")
        notice = (f"Đã tiếp nhận phản ánh, chuyển {agency_name or agency_code} ({where}); dự"
                  f" kiến xử lý trong {service.hours:g} giờ.")
        log.info("open311: request queued", service_request_id=request_id,
                 service_code=service.code, commune=commune, placed_by=how)
        return _list(fmt, "service_requests", "request", [
            {"service_request_id": request_id, "service_notice": notice, "account_id": None}])

    @router.get("/requests.{fmt}")
    async def list_requests(request: Request, fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
            where, args = _query_filters(dict(request.query_params))
            found = await rows(request, where, args)
        except Open311Error as exc:
            return _errors(fmt if fmt == "xml" else "json", exc)
        return _list(fmt, "service_requests", "request", [request_row(r) for r in found])

    @router.get("/requests/{service_request_id}.{fmt}")
    async def get_request(request: Request, service_request_id: str, fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
            found = await rows(request, sql.SQL("service_request_id = %s"), [service_request_id])
            if not found:
                raise Open311Error(404, f"service_request_id: {service_request_id[:64]!r}"
                                        f" not found")
        except Open311Error as exc:
            return _errors(fmt if fmt == "xml" else "json", exc)
        return _list(fmt, "service_requests", "request", [request_row(r) for r in found])

    return router


def discovery_router(settings: Settings) -> APIRouter:
    """GET /open311/discovery.json (.xml): where the GeoReport v2 endpoint is, per the spec."""
    router = APIRouter(prefix="/open311", tags=["open311"])
    province = provinces()[settings.province_code]

    @router.get("/discovery.{fmt}")
    async def discovery(request: Request, fmt: str) -> Response:
        try:
            fmt = _fmt(fmt)
        except Open311Error as exc:
            return _errors("json", exc)
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
    return _errors("xml" if path.endswith(".xml") else "json",
                   Open311Error(exc.status_code, description, headers=exc.headers))
