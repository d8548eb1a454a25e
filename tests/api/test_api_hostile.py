"""The public API against hostile clients (issue 13): every case answers a clear 4xx, never a
5xx, a hang or a log line holding a key or personal data. Real broker, PostgreSQL, uvicorn."""

import asyncio
import hashlib
import hmac
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ioc.alerts import evaluate
from ioc.api.app import create_app
from ioc.api.keys import create_key, revoke_key
from ioc.core.settings import Settings
from tests.support.alerts import backlog_rule
from tests.support.api import bearer
from tests.support.portal import dossier
from tests.support.services import ServedApps, TcpProxy, free_port, query, wait_until

V2 = "/open311/v2"
VIET_TRI = {"lat": 21.3227, "long": 105.4019}
PHONE, EMAIL = "0912345678", "hoa.nguyen.secret@example.vn"
DEEP = 5000


def deep_json(depth: int) -> str:
    return f'{{"service_code": "GT-01", "phone": "{PHONE}", "x": {"[" * depth}{"]" * depth}}}'


def app(settings: Settings, **update: object) -> object:
    return create_app(settings.model_copy(update={"api_rate_per_minute": 6000, **update}))


def end_offsets(settings: Settings, name: str) -> int:
    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            parts = [TopicPartition(settings.topic(name), p) for p in range(settings.partitions)]
            return sum((await consumer.end_offsets(parts)).values())
        finally:
            await consumer.stop()
    return asyncio.run(read())


def open311_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert isinstance(body, list) and body and all(e["code"] == status for e in body), body
    assert any(words in e["description"] for e in body), body


# --- 1. unhandled exceptions: a generic 500, logs without secrets --------------------------

SERVE_WITH_A_FAULTY_ROUTE = """
import sys
from fastapi import Request
import ioc.api.app as api
from ioc.core.settings import Settings

make = api.create_app

def with_fault(settings):
    app = make(settings)

    @app.get("/fault")
    async def fault(request: Request) -> None:
        presented = request.headers["authorization"]  # a local holding the key
        raise RuntimeError("cannot handle " + presented + " " + request.query_params["phone"])

    return app

api.create_app = with_fault
api.serve(Settings())
"""


@pytest.fixture
def api_process(prepared: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`ioc api` as the CLI runs it (its logging set up), plus one route that fails."""
    port = free_port()
    env = {**prepared.as_env(), "IOC_API_PORT": str(port), "IOC_LOG_LEVEL": "DEBUG"}
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_WITH_A_FAULTY_ROUTE], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz"), 30, "the API process",
                   lambda: log_path.read_text(errors="replace"))
        yield base, log_path
    finally:
        proc.terminate()
        proc.wait(15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_failing_requests_answer_4xx_or_a_generic_500_and_logs_hold_no_secret(
        prepared: Settings, api_process: tuple[str, Path]) -> None:
    base, log_path = api_process
    _, key = create_key(prepared, "citizen-app", ["reports:create", "reports:update"])
    secret_part = key.split("_", 2)[2]
    with httpx.Client(base_url=base, timeout=30, headers=bearer(key)) as client:
        deep = client.post(f"{V2}/requests.json", content=deep_json(DEEP),
                           headers={"content-type": "application/json"})
        open311_error(deep, 400, "body")
        for name, value in (("start_date", "9999-12-01T00:00:00Z"),
                            ("end_date", "0001-01-02T00:00:00Z")):
            open311_error(client.get(f"{V2}/requests.json", params={name: value,
                                                                    "phone": PHONE}),
                          400, name)
        status = client.post(f"{V2}/requests/PAHT-25-X/status.json",
                             json={"status": "fixed", "status_notes": PHONE,
                                   "expected_datetime": "9999-12-31T23:59:59Z", "email": EMAIL})
        open311_error(status, 400, "expected_datetime")
        fault = client.get("/fault", params={"phone": PHONE, "email": EMAIL})
        assert fault.status_code == 500
        answer = fault.json()
        assert set(answer) == {"detail", "request_id"} and answer["request_id"], answer
        assert secret_part not in fault.text and PHONE not in fault.text
        assert client.get("/healthz").status_code == 200
    logs = "".join(p.read_text(errors="replace") for p in log_path.parent.rglob("*.log"))
    assert answer["request_id"] in logs, "the failure is logged under its request id"
    for planted in (secret_part, key, PHONE, EMAIL, "Bearer "):
        assert planted not in logs, f"{planted[:12]}... found in the logs"
    assert len(logs) < 50_000, f"{len(logs)} bytes of logs for six requests"


# --- 2. implausible dates: 4xx at the edge, stored ones never break the readers --------------

def insert_report(settings: Settings, request_id: str, expected: str, requested: str) -> None:
    query(settings, "INSERT INTO field_reports (service_request_id, province_code, agency_code,"
          " service_code, status, requested_datetime, expected_datetime, first_occurred_at,"
          " last_occurred_at, events) VALUES (%s, '25', 'A', 'GT-01', 'open', %s::timestamptz,"
          " %s::timestamptz, now(), now(), 1) RETURNING 1", (request_id, requested, expected))


def test_implausible_dates_answer_400_and_stored_ones_never_break_the_readers(
        prepared: Settings, serve_app: ServedApps) -> None:
    api = serve_app(app(prepared))
    _, key = create_key(prepared, "ubnd", ["reports:update"])
    now = datetime.now(UTC).replace(microsecond=0)
    insert_report(prepared, "PAHT-25-FAR", "9999-12-31T23:59:59Z", now.isoformat())
    insert_report(prepared, "PAHT-25-BC", "0001-01-01T00:00:00Z BC", now.isoformat())

    for params, field in (({"start_date": "9999-12-01T00:00:00Z"}, "start_date"),
                          ({"end_date": "0001-01-02T00:00:00Z"}, "end_date"),
                          ({"start_date": "1999-12-31T00:00:00Z"}, "start_date")):
        open311_error(api.get(f"{V2}/requests.json", params=params), 400, field)
    for when in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
                 (now + timedelta(days=3700)).isoformat()):
        open311_error(api.post(f"{V2}/requests/PAHT-25-FAR/status.json", headers=bearer(key),
                               json={"status": "in_progress", "expected_datetime": when}),
                      400, "expected_datetime")
    assert end_offsets(prepared, "field_reports") == 0, "a refused update was published"

    listed = api.get(f"{V2}/requests.json")
    assert listed.status_code == 200, listed.text
    got = {r["service_request_id"]: r["expected_datetime"] for r in listed.json()}
    # Past what local time can hold: shown in UTC, or none when the session's zone overflows.
    assert got["PAHT-25-FAR"] in ("9999-12-31T23:59:59+00:00", None), got
    assert got["PAHT-25-BC"] is None, got
    assert api.get(f"{V2}/requests.xml").status_code == 200
    for request_id in ("PAHT-25-FAR", "PAHT-25-BC"):
        one = api.get(f"{V2}/requests/{request_id}.json")
        assert one.status_code == 200 and one.json()[0]["service_request_id"] == request_id


# --- 3. impossible dossier dates -------------------------------------------------------------

def test_impossible_dossier_dates_answer_422_naming_the_field(
        prepared: Settings, serve_app: ServedApps) -> None:
    api = serve_app(app(prepared))
    _, key = create_key(prepared, "dvc-portal", ["ingest:dossiers"])
    for value in ("00010101000000", "99991231235959", "19991231235959"):
        record = dossier(1)
        record["NgayNopHoSo"] = value
        answer = api.post("/ingest/dossiers", headers=bearer(key), json=record)
        assert answer.status_code == 422, (value, answer.text)
        assert any("NgayNopHoSo" in m for m in answer.json()["detail"]), answer.json()
    assert end_offsets(prepared, "dossiers") == 0


# --- 4. silence durations that are no number of seconds ---------------------------------------

@pytest.fixture
def firing(prepared: Settings, serve_app: ServedApps) -> tuple[httpx.Client, str, int]:
    evaluate(prepared, [backlog_rule()], datetime.now(UTC) - timedelta(minutes=5))
    [(alert_id,)] = query(prepared, "SELECT min(seq) FROM alerts WHERE state = 'firing'")
    _, key = create_key(prepared, "truc-ioc", ["alerts:ack"])
    return serve_app(app(prepared)), key, alert_id


@pytest.mark.parametrize("duration", ["Infinity", "NaN", "-Infinity", "1" * 400, "1e300",
                                      '"1e300 hours"', '"' + "9" * 400 + ' days"'])
def test_silence_durations_out_of_range_answer_422(
        firing: tuple[httpx.Client, str, int], duration: str) -> None:
    api, key, alert_id = firing
    answer = api.post(f"/alerts/{alert_id}/silence",
                      headers={**bearer(key), "content-type": "application/json"},
                      content=f'{{"duration": {duration}}}'.encode())
    assert answer.status_code == 422, answer.text
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "duration"]]


# --- 5. NUL bytes -------------------------------------------------------------------------

def test_nul_bytes_answer_400_at_the_edge(
        prepared: Settings, firing: tuple[httpx.Client, str, int]) -> None:
    api, ack_key, alert_id = firing
    for url in (f"{V2}/requests.json?service_code=GT%0001", f"{V2}/requests.json?status=op%00en",
                f"{V2}/requests/PAHT%00X.json", f"{V2}/requests.json?service_request_id=%00"):
        open311_error(api.get(url), 400, "NUL")
    for note_route, body in ((f"/alerts/{alert_id}/ack", {"note": "a\u0000b"}),
                             (f"/alerts/{alert_id}/silence",
                              {"duration": "1h", "note": "a\u0000b"})):
        answer = api.post(note_route, headers=bearer(ack_key), json=body)
        assert answer.status_code == 400 and "NUL" in answer.text, answer.text
    assert query(prepared, "SELECT count(*) FROM alerts WHERE state <> 'firing'") == [(0,)]

    _, key = create_key(prepared, "dvc-portal", ["ingest:dossiers"])
    record = dossier(1)
    record["MaHoSo"] = "000.00.12.H25-261103-\u00000001"
    answer = api.post("/ingest/dossiers", headers=bearer(key), json=record)
    assert answer.status_code == 400 and "NUL" in answer.text, answer.text
    assert end_offsets(prepared, "dossiers") == 0


# --- 6. key checks ------------------------------------------------------------------------

def test_keys_are_stored_as_a_peppered_hmac_and_scrypt_keys_are_upgraded(
        prepared: Settings, serve_app: ServedApps) -> None:
    _, key = create_key(prepared, "so-gtvt", ["reports:update"])
    key_id, secret = key.split("_", 2)[1:]
    [(kdf, stored)] = query(prepared, "SELECT kdf, secret_hash FROM api_keys")
    expected = hmac.new(prepared.api_key_pepper.encode(), secret.encode(), hashlib.sha256)
    assert (kdf, bytes(stored)) == ("hmac-sha256", expected.digest())

    # A key made before: salted scrypt. It still works, and is rehashed on its first use.
    old_id, old_secret, salt = "0123456789ab", secrets.token_urlsafe(32), secrets.token_bytes(16)
    scrypt = hashlib.scrypt(old_secret.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    query(prepared, "INSERT INTO api_keys (key_id, name, scopes, kdf, salt, secret_hash) VALUES"
          " (%s, 'old', '{reports:update}', 'scrypt:16384:8:1', %s, %s) RETURNING 1",
          (old_id, salt, scrypt))
    api = serve_app(app(prepared))
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    wrong = api.post(url, headers=bearer(f"ioc_{old_id}_{'A' * 43}"), json={"status": "fixed"})
    assert wrong.status_code == 401
    for _ in range(2):
        answer = api.post(url, headers=bearer(f"ioc_{old_id}_{old_secret}"),
                          json={"status": "fixed"})
        assert answer.status_code == 404, answer.text
    rehashed = hmac.new(prepared.api_key_pepper.encode(), old_secret.encode(), hashlib.sha256)
    assert query(prepared, "SELECT kdf, secret_hash FROM api_keys WHERE key_id = %s",
                 (old_id,)) == [("hmac-sha256", rehashed.digest())]
    assert key_id != old_id


def test_failed_attempts_are_limited_and_a_valid_caller_gets_through(
        prepared: Settings, serve_app: ServedApps) -> None:
    budget = 6  # failed checks a minute per address and per key id: a burst of 6, then 1/10 s
    api = serve_app(app(prepared, api_failed_auth_per_minute=budget))
    _, good = create_key(prepared, "so-tnmt", ["reports:update"])
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    assert api.post(url, headers=bearer(good), json={"status": "fixed"}).status_code == 404
    key_id = good.split("_")[1]
    answers = [api.post(url, headers=bearer(f"ioc_{key_id}_{secrets.token_urlsafe(32)}"),
                        json={"status": "fixed"}) for _ in range(budget + 4)]
    codes = [a.status_code for a in answers]
    assert codes == [401] * budget + [429] * 4, codes
    limited = answers[-1]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Unknown key ids from the same address are limited too; the valid key is not.
    unknown = api.post(url, headers=bearer(f"ioc_{secrets.token_hex(6)}_{'B' * 43}"),
                       json={"status": "fixed"})
    assert unknown.status_code == 429
    assert api.post(url, headers=bearer(good), json={"status": "fixed"}).status_code == 404


def test_every_failure_costs_the_same(prepared: Settings, serve_app: ServedApps) -> None:
    """Unknown, revoked and existing key ids with a wrong secret: no timing tells them apart
    (scrypt made it 2 ms against 50 ms)."""
    api = serve_app(app(prepared, api_failed_auth_per_minute=1e6))
    _, live = create_key(prepared, "live", ["reports:update"])
    _, gone = create_key(prepared, "gone", ["reports:update"])
    assert revoke_key(prepared, "gone") == 1
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    kinds = {"unknown": lambda: secrets.token_hex(6), "revoked": lambda: gone.split("_")[1],
             "existing": lambda: live.split("_")[1]}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(25):
        for kind, key_id in kinds.items():
            started = time.perf_counter()
            answer = api.post(url, headers=bearer(f"ioc_{key_id()}_{secrets.token_urlsafe(32)}"),
                              json={"status": "fixed"})
            times[kind].append(time.perf_counter() - started)
            assert answer.status_code == 401, answer.text
    medians = {k: statistics.median(v) for k, v in times.items()}
    assert max(medians.values()) - min(medians.values()) < 0.015, medians


def test_revocation_reaches_every_api_process_within_seconds(
        prepared: Settings, serve_app: ServedApps) -> None:
    first, second = serve_app(app(prepared)), serve_app(app(prepared))
    _, key = create_key(prepared, "so-xd", ["reports:update"])
    url = f"{V2}/requests/PAHT-25-NOPE/status.json"
    for api in (first, second):
        assert api.post(url, headers=bearer(key), json={"status": "fixed"}).status_code == 404
    assert revoke_key(prepared, "so-xd") == 1
    revoked = time.monotonic()
    wait_until(lambda: all(api.post(url, headers=bearer(key), json={"status": "fixed"})
                           .status_code == 401 for api in (first, second)), 15,
               "the revoked key refused by both processes")
    assert time.monotonic() - revoked < 15


@pytest.fixture
def proxied(prepared: Settings) -> Iterator[tuple[Settings, TcpProxy]]:
    """The test's settings with PostgreSQL reached through a proxy that can fail."""
    port = int(prepared.database_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(port)
    url = prepared.database_url.replace(f":{port}/", f":{proxy.port}/")
    yield prepared.model_copy(update={"database_url": url}), proxy
    proxy.close()


def test_a_recently_verified_key_reports_while_postgres_is_down(
        proxied: tuple[Settings, TcpProxy], serve_app: ServedApps) -> None:
    settings, proxy = proxied
    _, key = create_key(settings, "citizen-app", ["reports:create"])
    api = serve_app(app(settings))
    body = {"service_code": "GT-01", **VIET_TRI}
    assert api.post(f"{V2}/requests.json", headers=bearer(key), json=body).status_code == 200
    proxy.close()
    time.sleep(6)  # past the cache's freshness: the database would be asked now
    answer = api.post(f"{V2}/requests.json", headers=bearer(key), json=body)
    assert answer.status_code == 200, answer.text
    assert end_offsets(settings, "field_reports") == 2
    # A key never seen by this process cannot be checked: 503, not 401.
    fresh = f"ioc_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    open311_error(api.post(f"{V2}/requests.json", headers=bearer(fresh), json=body), 503,
                  "try again")


# --- 7. slow clients and a frozen database ------------------------------------------------

def test_a_body_that_never_arrives_times_out(prepared: Settings, serve_app: ServedApps) -> None:
    api = serve_app(app(prepared, api_body_timeout_seconds=1.0))
    host, port = api.base_url.host, api.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /open311/v2/requests.json HTTP/1.1\r\nhost: x\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"a\"")
        started = time.monotonic()
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except TimeoutError:
            pass
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 8


def test_readyz_answers_within_its_deadline_when_postgres_freezes(
        proxied: tuple[Settings, TcpProxy], serve_app: ServedApps) -> None:
    settings, proxy = proxied
    api = serve_app(app(settings))
    assert api.get("/readyz").json()["checks"]["database"]["ok"] is True
    proxy.freeze()
    for _ in range(2):  # the second one too: a stuck check does not pile up
        started = time.monotonic()
        answer = api.get("/readyz", timeout=12)
        assert time.monotonic() - started < 5.5
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"]["ok"] is False
    proxy.thaw()


# --- 8. the one-click acknowledge link ----------------------------------------------------

def test_a_prefetched_link_does_not_acknowledge(prepared: Settings,
                                                serve_app: ServedApps) -> None:
    from ioc.alerts.links import ack_link

    settings = prepared.model_copy(update={"alert_link_secret": "s" * 32,
                                           "public_api_url": "http://ioc.tinh.vn"})
    evaluate(settings, [backlog_rule()], datetime.now(UTC) - timedelta(minutes=5))
    [(alert_id,)] = query(settings, "SELECT min(seq) FROM alerts WHERE state = 'firing'")
    api = serve_app(app(settings))
    link = ack_link(settings, alert_id, datetime.now(UTC))
    assert link is not None
    path = link.removeprefix("http://ioc.tinh.vn")
    for _ in range(3):  # a mail scanner fetching the link
        page = api.get(path)
        assert page.status_code == 200 and "<form" in page.text and 'method="post"' in page.text
    assert query(settings, "SELECT count(*) FROM alerts WHERE state = 'acknowledged'") == [(0,)]
    done = api.post(path)
    assert done.status_code == 200 and "Đã xác nhận cảnh báo" in done.text
    assert query(settings, "SELECT count(*) FROM alerts WHERE state = 'acknowledged'") == [(1,)]
