"""XML bodies of the Open311 GeoReport v2 routes (the spec's element names, UTF-8)."""

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from fastapi.responses import Response

XML_TYPE = "text/xml; charset=utf-8"
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'  # as the spec's examples write it
ITEMS = {"attributes": "attribute", "values": "value", "endpoints": "endpoint",
         "formats": "format"}  # the element of each list's items


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(parent: ET.Element, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, list):  # attributes of a definition, discovery's endpoints
            for item in value:
                element = ET.SubElement(child, ITEMS.get(name, "item"))
                if isinstance(item, Mapping):
                    _fill(element, item)
                else:
                    element.text = _text(item)
        else:
            child.text = _text(value)


def _document(top: ET.Element) -> bytes:
    return DECLARATION + ET.tostring(top, encoding="utf-8", xml_declaration=False)


def render(root: str, item: str, rows: Sequence[Mapping[str, Any]], status: int = 200) -> Response:
    """`<root><item>...</item>...</root>`, e.g. services/service, service_requests/request."""
    top = ET.Element(root)
    for row in rows:
        _fill(ET.SubElement(top, item), row)
    return Response(_document(top), status_code=status, media_type=XML_TYPE)


def render_one(root: str, fields: Mapping[str, Any]) -> Response:
    """One element with children, e.g. service_definition."""
    top = ET.Element(root)
    _fill(top, fields)
    return Response(_document(top), media_type=XML_TYPE)


def errors(status: int, descriptions: Sequence[str]) -> Response:
    """`<errors><error><code>400</code><description>...</description></error></errors>`."""
    return render("errors", "error", [{"code": status, "description": d} for d in descriptions],
                  status)
