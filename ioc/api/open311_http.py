"""What the GeoReport v2 routes share: bodies read as form or JSON, `.json` or `.xml`
answers, and errors in the spec's shape (`[{"code", "description"}]`, or its XML)."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from ioc.api import open311_xml
from ioc.core.inputs import BadInput, check, loads

MAX_BODY = 256 * 1024


class Open311Error(Exception):
    """A refusal, answered as the spec's error list in the route's format."""

    def __init__(self, status: int, *descriptions: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(*descriptions)
        self.status, self.descriptions, self.headers = status, descriptions, headers


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


def validation_messages(exc: ValidationError) -> list[str]:
    """One description per refused field, naming it, without pydantic's prefixes."""
    out = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "location"
        out.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
    return out


async def parse_body(request: Request) -> dict[str, Any]:
    """The fields of a form or JSON body (the spec posts forms; apps often send JSON)."""
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


def check_format(fmt: str) -> str:
    """`json` or `xml`, the two formats the spec defines; another is a 404."""
    if fmt not in ("json", "xml"):
        raise Open311Error(404, f"format: .{fmt[:20]} is not served; use .json or .xml")
    return fmt


def error_response(fmt: str, exc: Open311Error) -> Response:
    """The spec's error list, as JSON or XML."""
    if fmt == "xml":
        response = open311_xml.errors(exc.status, exc.descriptions)
        response.headers.update(exc.headers or {})
        return response
    return JSONResponse([{"code": exc.status, "description": d} for d in exc.descriptions],
                        status_code=exc.status, headers=exc.headers)


def listing(fmt: str, root: str, item: str, rows: Sequence[dict[str, Any]]) -> Response:
    """A list answer, as JSON or as `<root><item>...</item></root>`."""
    if fmt == "xml":
        return open311_xml.render(root, item, rows)
    return JSONResponse(list(rows))


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

