"""Fuzz every operation of the served OpenAPI document: no input may earn a 5xx.

Schemathesis generates requests from the schema (valid and invalid bodies, query strings and
path parameters); httpx sends them over HTTP to the real API, backed by the real broker and
database, with a key holding every scope so that requests get past authentication.
Hypothesis runs derandomized: CI sees the same examples each time.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given

from ioc.api import create_app, openapi_document
from ioc.broker import Broker
from ioc.db import migrate
from ioc.embedded import Postgres
from ioc.keys import SCOPES, create_key
from ioc.settings import Settings
from ioc.topics import ensure_topics
from tests.services import ServedApps, isolated_settings

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
    committed = (Path(__file__).parents[1] / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "run `ioc schema openapi`"
