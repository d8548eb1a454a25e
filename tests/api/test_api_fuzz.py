"""Fuzz every operation of the served OpenAPI document: no input may earn a 5xx.

Schemathesis generates requests from the schema (valid and invalid bodies, query strings and
path parameters); httpx sends them over HTTP to the real API, backed by the real broker and
database, with a key holding every scope so that requests get past authentication.
Hypothesis runs derandomized: CI sees the same examples each time.
"""

import asyncio
import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from ioc.api.app import create_app, openapi_document
from ioc.api.keys import SCOPES, create_key
from ioc.core.db import migrate
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres
from tests.support import ROOT
from tests.support.portal import dossier
from tests.support.services import ServedApps, isolated_settings

EXAMPLES = 20  # per operation

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = {f"{op.method.upper()} {op.path}": op
              for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def api(broker: Broker, postgres: Postgres) -> Iterator[tuple[str, dict[str, str]]]:
    """The API on a free port, and headers with a key that may do everything."""
    settings = isolated_settings(broker, postgres, api_rate_per_minute=1e6)
    migrate(settings)
    asyncio.run(ensure_topics(settings))
    _, key = create_key(settings, "fuzzer", list(SCOPES))
    apps = ServedApps()
    client = apps(create_app(settings))
    yield str(client.base_url), {"Authorization": f"Bearer {key}"}
    apps.stop()


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_no_input_earns_a_server_error(name: str, api: tuple[str, dict[str, str]]) -> None:
    base_url, headers = api
    seen: list[int] = []
    client = httpx.Client(timeout=30)

    @given(case=OPERATIONS[name].as_strategy())
    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        request = case.as_transport_kwargs(base_url=base_url, headers=headers)
        data = request.pop("data", None)
        if isinstance(data, str | bytes):
            request["content"] = data
        elif data is not None:
            request["data"] = data
        request.pop("cookies", None)
        response = client.request(**request)
        seen.append(response.status_code)
        # /readyz answers 503 by design here: no worker runs, so there is no heartbeat.
        ready_check = name == "GET /readyz" and response.status_code == 503
        assert response.status_code < 500 or ready_check, (
            f"{request['method']} {request['url']} -> {response.status_code}:"
            f" {response.text[:300]}")

    with client:
        fuzz()
    assert seen, "no request was sent"


def test_the_committed_openapi_document_is_what_the_api_serves() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "run `ioc schema openapi`"


# --- hostile inputs the schema does not suggest: deep nesting, NUL, extreme dates and numbers --

EXTREME_DATES = st.sampled_from([
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-02T00:00:00+07:00",
    "1999-12-31T23:59:59Z", "2199-01-01T00:00:00Z", "infinity", "-infinity", "99991231235959",
    "00010101000000", "20261301000000", "31/12/9999", "9999-12-01T00:00:00-23:59"])
NUL_TEXT = st.text(max_size=20).map(lambda t: f"{t}\x00{t}")
NUMBERS = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, -1e300,
                           10 ** 400, -(10 ** 400), 2 ** 63, 0, -1])
NESTED = st.integers(2, 200).map(lambda n: json.loads("[" * n + "]" * n))
DOSSIER = dossier(1)
VALUES = st.one_of(EXTREME_DATES, NUL_TEXT, NUMBERS, NESTED, st.text(max_size=30))
DEEP_BODIES = st.one_of(st.integers(33, 6000).map(lambda n: "[" * n + "]" * n),
                        st.integers(33, 6000).map(lambda n: '{"a":' * n + "1" + "}" * n),
                        st.integers(33, 6000).map(lambda n: "[" * n))


@st.composite
def hostile_requests(draw: st.DrawFn) -> dict[str, Any]:
    """One request carrying a hostile value where some route reads one."""
    value = draw(VALUES)
    text = value if isinstance(value, str) else json.dumps(value)
    where = draw(st.sampled_from([
        "query", "path_id", "report_field", "status_update", "ack_note", "silence",
        "dossier_field", "link", "deep_body"]))
    v2 = "/open311/v2"
    if where == "query":
        name = draw(st.sampled_from(["start_date", "end_date", "service_code", "status",
                                     "service_request_id"]))
        fmt = draw(st.sampled_from(["json", "xml"]))
        return {"method": "GET", "url": f"{v2}/requests.{fmt}", "params": {name: text}}
    if where == "path_id":
        return {"method": "GET", "url": f"{v2}/requests/{quote(text, safe='') or 'x'}.json"}
    if where == "report_field":
        name = draw(st.sampled_from(["service_code", "lat", "long", "address_string",
                                     "description", "email", "phone", "media_url"]))
        body = {"service_code": "GT-01", "lat": 21.32, "long": 105.40, name: value}
        return {"method": "POST", "url": f"{v2}/requests.json", "json": body}
    if where == "status_update":
        body = {"status": "in_progress", draw(st.sampled_from(
            ["expected_datetime", "status_notes", "status"])): value}
        return {"method": "POST", "url": f"{v2}/requests/PAHT-25-X/status.json", "json": body}
    if where == "ack_note":
        return {"method": "POST", "url": "/alerts/1/ack", "json": {"note": value}}
    if where == "silence":
        return {"method": "POST", "url": "/alerts/1/silence",
                "json": {"duration": value, "note": draw(NUL_TEXT)}}
    if where == "dossier_field":
        record = copy.deepcopy(DOSSIER)
        record[draw(st.sampled_from(["NgayNopHoSo", "NgayHenTra", "MaHoSo", "TrangThaiHoSo",
                                     "NgayTiepNhan", "DonViXuLy"]))] = value
        return {"method": "POST", "url": "/ingest/dossiers", "json": record}
    if where == "link":
        return {"method": draw(st.sampled_from(["GET", "POST"])), "url": "/alerts/1/ack",
                "params": {"exp": text, "sig": text}}
    url = draw(st.sampled_from([f"{v2}/requests.json", f"{v2}/requests/PAHT-25-X/status.json",
                                "/alerts/1/ack", "/alerts/1/silence", "/ingest/dossiers"]))
    return {"method": "POST", "url": url, "content": draw(DEEP_BODIES).encode(),
            "headers": {"content-type": "application/json"}}


def test_hostile_inputs_earn_no_server_error_and_no_hang(
        api: tuple[str, dict[str, str]]) -> None:
    base_url, headers = api
    seen: list[int] = []

    @given(request=hostile_requests())
    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))
    def fuzz(request: dict[str, Any]) -> None:
        if "json" in request:  # Infinity and NaN as JavaScript writes them, not refused here
            request["content"] = json.dumps(request.pop("json")).encode()
            request["headers"] = {"content-type": "application/json"}
        request["headers"] = {**headers, **request.get("headers", {})}
        response = client.request(**request)  # a hang fails on the client's timeout
        seen.append(response.status_code)
        assert response.status_code < 500, (
            f"{request['method']} {request['url']} -> {response.status_code}:"
            f" {response.text[:300]}")

    with httpx.Client(base_url=base_url, timeout=15) as client:
        fuzz()
    assert len(seen) == 200 and any(400 <= s < 500 for s in seen)
