"""API keys and Open311 status updates, against the real broker, PostgreSQL and a worker."""

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ioc.api.app import create_app
from ioc.api.keys import create_key, revoke_key, verify
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.api import assert_error, bearer
from tests.support.services import ServedApps, WorkerProcess, query, wait_until

V2 = "/open311/v2"
VIET_TRI = (21.3227, 105.4019)  # Phú Thọ
MAX_BODY = 4096


def build_app(settings: Settings, rate_per_minute: float = 600) -> FastAPI:
    """The API as `ioc api` serves it, with a small body limit and the given key rate."""
    return create_app(settings.model_copy(update={"api_max_body_bytes": MAX_BODY,
                                                  "api_rate_per_minute": rate_per_minute}))


@pytest.fixture
def serve(serve_app: ServedApps) -> ServedApps:
    return serve_app


def ioc_keys(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc.cli.keys", *args], capture_output=True,
                          text=True, env=settings.as_env(), timeout=60, check=False)


def test_cli_prints_the_key_once_and_stores_a_salted_hash(prepared: Settings) -> None:
    done = ioc_keys(prepared, "create", "so-gtvt", "--scope", "reports:update",
                    "--scope", "reports:update")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("ioc_") and len(key) > 50 and "\n" not in key
    assert "not shown again" in done.stderr and key not in done.stderr

    rows = query(prepared, "SELECT row_to_json(k)::text, scopes FROM api_keys k")
    assert len(rows) == 1 and rows[0][1] == ["reports:update"]
    secret = key.split("_", 2)[2]
    assert secret not in rows[0][0] and key not in rows[0][0]
    assert verify(prepared, key) is not None
    assert verify(prepared, key[:-1] + ("A" if key[-1] != "A" else "B")) is None

    listed = ioc_keys(prepared, "list")
    assert listed.returncode == 0 and "so-gtvt" in listed.stdout and secret not in listed.stdout

    again = ioc_keys(prepared, "create", "so-gtvt", "--scope", "reports:update")
    assert again.returncode == 1 and "revoke it first" in again.stderr and not again.stdout
    bad = ioc_keys(prepared, "create", "x", "--scope", "everything")
    assert bad.returncode == 1 and "scope" in bad.stderr

    assert ioc_keys(prepared, "revoke", "so-gtvt").returncode == 0
    assert verify(prepared, key) is None
    missing = ioc_keys(prepared, "revoke", "so-gtvt")
    assert missing.returncode == 1 and "no live key" in missing.stderr


def test_cli_says_to_migrate_first(settings: Settings) -> None:
    done = ioc_keys(settings, "create", "x", "--scope", "reports:update")
    assert done.returncode == 1 and "ioc db migrate" in done.stderr, done.stderr


def test_status_update_moves_a_report_to_fixed(
    serve: Callable[[FastAPI], httpx.Client], prepared: Settings, tmp_path: Path
) -> None:
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        api = serve(build_app(prepared))
        lat, long = VIET_TRI
        _, app_key = create_key(prepared, "citizen-app", ["reports:create"])
        created = api.post(f"{V2}/requests.json", headers=bearer(app_key),
                           json={"service_code": "GT-01", "lat": lat, "long": long})
        assert created.status_code == 200, created.text
        request_id = created.json()[0]["service_request_id"]
        wait_until(lambda: query(prepared, "SELECT count(*) FROM field_reports")[0][0] == 1, 60,
                   "the report in field_reports", worker.log)
        before = read_kpis(prepared)["field_reports"]
        assert (before["open"], before["resolved"]) == (1, 0)

        _, key = create_key(prepared, "ubnd-viet-tri", ["reports:update"])
        answer = api.post(f"{V2}/requests/{request_id}/status.json", headers=bearer(key),
                          data={"status": "fixed", "status_notes": "Đã vá ổ gà"})
        assert answer.status_code == 200, answer.text
        [row] = answer.json()
        assert (row["service_request_id"], row["status"]) == (request_id, "closed")
        assert row["status_notes"] == "Đã vá ổ gà"

        wait_until(lambda: query(prepared, "SELECT status FROM field_reports WHERE"
                                 " service_request_id = %s", (request_id,)) == [("fixed",)],
                   60, "the report fixed in field_reports", worker.log)
        after = read_kpis(prepared)["field_reports"]
        assert (after["open"], after["resolved"]) == (before["open"] - 1, before["resolved"] + 1)
        [(updated, requested, resolved_at)] = query(
            prepared, "SELECT updated_datetime, requested_datetime, resolved_at"
            " FROM field_reports WHERE service_request_id = %s", (request_id,))
        assert updated > requested and resolved_at == updated

        # The read side shows it; the key's use was recorded.
        [read] = api.get(f"{V2}/requests/{request_id}.json").json()
        assert (read["status"], read["status_notes"]) == ("closed", "Đã vá ổ gà")
        assert query(prepared, "SELECT bool_and(last_used_at IS NOT NULL) FROM api_keys") \
            == [(True,)]

        # X-API-Key works too, and JSON bodies; back to in_progress.
        reopened = api.post(f"{V2}/requests/{request_id}/status.json",
                            headers={"x-api-key": key}, json={"status": "in_progress"})
        assert reopened.status_code == 200, reopened.text
        wait_until(lambda: read_kpis(prepared)["field_reports"]["open"] == 1, 60,
                   "the reopened report in the open count", worker.log)
    finally:
        worker.stop()


def test_keys_scopes_and_malformed_input_never_500(
    serve: Callable[[FastAPI], httpx.Client], prepared: Settings
) -> None:
    api = serve(build_app(prepared))
    _, good = create_key(prepared, "so-tnmt", ["reports:update"])
    _, reader = create_key(prepared, "dashboard", ["reports:read"])
    _, gone = create_key(prepared, "old", ["reports:update"])
    assert revoke_key(prepared, "old") == 1
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    fixed = {"status": "fixed"}

    missing = api.post(url, data=fixed)
    assert_error(missing, 401, "API key is required")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    for headers in (bearer("nonsense"), bearer(good[:-2]), bearer(gone),
                    {"authorization": "Basic Zm9vOmJhcg=="}, {"authorization": "Bearer"},
                    {"x-api-key": "ioc_"}, bearer("ioc_000000000000_" + "A" * 43)):
        assert_error(api.post(url, headers=headers, data=fixed), 401, "API key")
    assert_error(api.post(url, headers=bearer(reader), data=fixed), 403, "reports:update")

    assert_error(api.post(url, headers=bearer(good), data=fixed), 404, "service_request_id")
    auth = bearer(good)
    assert_error(api.post(url, headers=auth, data={"status": "done"}), 400, "status")
    assert_error(api.post(url, headers=auth, data={}), 400, "status")
    assert_error(api.post(url, headers=auth, json={"status": ["fixed"]}), 400, "status")
    assert_error(api.post(url, headers=auth, data={"status": "fixed",
                                                   "expected_datetime": "tomorrow"}),
                 400, "expected_datetime")
    assert_error(api.post(url, headers=auth, data={"status": "fixed",
                                                   "expected_datetime": "2026-12-01T10:00"}),
                 400, "expected_datetime")
    assert_error(api.post(url, headers={**auth, "content-type": "application/json"},
                          content=b"{not json"), 400, "JSON")
    assert_error(api.post(url, headers={**auth, "content-type": "application/json"},
                          content=b"[1, 2]"), 400, "object")
    assert_error(api.post(url, headers=auth, content=b"\xff\xfe"), 400, "UTF-8")
    assert_error(api.post(url, headers=auth, data={"status": "fixed",
                                                   "status_notes": "x" * 4001}),
                 400, "status_notes")

    # Oversized bodies: 413, by Content-Length or while a chunked body streams in.
    assert_error(api.post(url, headers=auth, content=b"status=fixed&x=" + b"a" * MAX_BODY),
                 413, "larger than")

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"a" * 1024

    assert_error(api.post(url, headers=auth, content=chunks()), 413, "larger than")
    # Health and the read side are untouched by all this.
    assert api.get("/healthz").status_code == 200
    assert api.get(f"{V2}/requests/PAHT-25-NOPE.json").status_code in (200, 404)


def test_a_burst_over_the_rate_answers_429_with_retry_after(
    serve: Callable[[FastAPI], httpx.Client], prepared: Settings
) -> None:
    api = serve(build_app(prepared, rate_per_minute=3))  # a burst of 3, then one per 20 s
    _, key = create_key(prepared, "burst", ["reports:update"])
    _, other = create_key(prepared, "calm", ["reports:update"])
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    answers = [api.post(url, headers=bearer(key), data={"status": "fixed"}) for _ in range(5)]
    assert [a.status_code for a in answers] == [404, 404, 404, 429, 429], answers
    assert_error(answers[3], 429, "too many requests")
    assert 1 <= int(answers[3].headers["retry-after"]) <= 20
    # Per key: another key still gets through.
    assert api.post(url, headers=bearer(other), data={"status": "fixed"}).status_code == 404
