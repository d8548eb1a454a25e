"""The HTTP API against the session's real broker and PostgreSQL, served by uvicorn on a port."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from connectors.status import Health, StatusRow, save_status
from ioc.api.app import create_app
from ioc.core.db import connect, migrate
from ioc.core.lag import CONSUMED_TOPICS, BrokerUnavailable, consumer_lag
from ioc.core.settings import Settings
from tests.support.services import ServedApps, free_port, start_postgres

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers: real topics, messages, commits and rows -------------------------------------------

async def _create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(settings.topic(name), settings.partitions, 1) for name in CONSUMED_TOPICS
        ])
    finally:
        await admin.close()


async def _produce(settings: Settings, topic: str, partition: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, json.dumps({"n": i}).encode(), partition=partition)
    finally:
        await producer.stop()


async def _commit(settings: Settings, topic: str, partition: int, offset: int) -> None:
    """Commit as the worker's group would, without joining it (assign, not subscribe)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def insert_worker(settings: Settings, instance: str, age_s: float, counters: dict) -> None:
    with connect(settings, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO worker_status (instance_id, started_at, heartbeat_at, counters)"
            " VALUES (%s, now() - interval '1 hour', now() - make_interval(secs => %s), %s)"
            " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
            " counters = excluded.counters",
            (instance, age_s, psycopg.types.json.Jsonb(counters)),
        )


def closed_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/ioc"


def not_ready(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """/readyz's checks, once it has answered 503 in under 4 s."""
    started = time.monotonic()
    response = api.get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 4, f"/readyz took {elapsed:.1f} s"
    return response.json()["checks"]


def refused(port: int | str) -> dict[str, object]:
    return {"ok": False, "detail": f"connection refused at 127.0.0.1:{port}"}


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def with_topics(migrated: Settings) -> Settings:
    asyncio.run(_create_topics(migrated))
    return migrated


@pytest.fixture
def serve_api(serve_app: ServedApps) -> Callable[[Settings], httpx.Client]:
    """The API for some settings on a real port (a real HTTP server, lifespan included)."""
    return lambda settings: serve_app(create_app(settings))


# --- /healthz and /readyz ------------------------------------------------------------------------

def test_healthz(serve_api: Callable[[Settings], httpx.Client], settings: Settings) -> None:
    # Liveness asks nothing: even with the database unreachable it answers.
    api = serve_api(settings.model_copy(update={"database_url": closed_port_url()}))
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_waits_for_a_fresh_worker_heartbeat(
    serve_api: Callable[[Settings], httpx.Client], with_topics: Settings
) -> None:
    api = serve_api(with_topics)

    response = api.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["broker"]["ok"] is True, body
    assert body["checks"]["database"]["ok"] is True, body
    assert body["checks"]["worker"] == {
        "ok": False, "detail": "no worker heartbeat yet (worker_status is empty)"}

    # A stale heartbeat (limit: 3 x 1 s, at least 15 s) is not enough.
    insert_worker(with_topics, "w-stale", 60, {})
    body = api.get("/readyz").json()
    assert body["checks"]["worker"]["ok"] is False
    assert re.fullmatch(r"no worker heartbeat for 6\d s \(limit 15 s\)",
                        body["checks"]["worker"]["detail"]), body

    insert_worker(with_topics, "w-fresh", 0, {})
    response = api.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "broker": True, "database": True, "worker": True}
    assert body["checks"]["worker"]["detail"].startswith("1 of 2 workers alive")


def test_readyz_database_unreachable(
    serve_api: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    url = closed_port_url()
    checks = not_ready(serve_api(settings.model_copy(update={"database_url": url})))
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert checks["database"] == refused(port)
    assert checks["worker"]["ok"] is False
    assert checks["broker"]["ok"] is True


def test_readyz_broker_unreachable(
    serve_api: Callable[[Settings], httpx.Client], migrated: Settings
) -> None:
    insert_worker(migrated, "w1", 0, {})
    port = free_port()
    checks = not_ready(serve_api(migrated.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}"})))
    assert checks["broker"] == refused(port)
    assert checks["database"]["ok"] is True
    assert checks["worker"]["ok"] is True


def test_readyz_answers_in_time_when_peers_hang(
    serve_api: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    # A listening socket nobody accepts on: connections open, no byte ever comes back.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        port = hole.getsockname()[1]
        api = serve_api(settings.model_copy(update={
            "kafka_bootstrap": f"127.0.0.1:{port}",
            "database_url": f"postgresql://postgres@127.0.0.1:{port}/ioc"}))
        started = time.monotonic()
        response = api.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 3.5, f"/readyz took {elapsed:.1f} s"
    checks = response.json()["checks"]
    assert checks["broker"]["detail"] == f"broker at 127.0.0.1:{port} did not answer within 2 s"
    assert checks["database"]["detail"] == f"no answer from 127.0.0.1:{port} within 1.5 s"


@pytest.mark.slow
def test_readyz_follows_a_database_restart(
    serve_api: Callable[[Settings], httpx.Client], settings: Settings, tmp_path: Path
) -> None:
    own = start_postgres(tmp_path)  # stopping the session's server would disturb other tests
    try:
        local = settings.model_copy(update={"database_url": own.url})
        migrate(local)
        insert_worker(local, "w1", 0, {})
        api = serve_api(local)
        assert api.get("/readyz").status_code == 200
        own.stop()
        response = api.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"]["detail"] == \
            f"connection refused at 127.0.0.1:{own.port}"
        own.start()
        insert_worker(local, "w1", 0, {})
        deadline = time.monotonic() + 10
        while (response := api.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, response.json()
            time.sleep(0.2)
    finally:
        own.stop()


def test_readyz_unmigrated_schema(
    serve_api: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    api = serve_api(settings)  # the test's schema does not even exist
    response = api.get("/readyz")
    assert response.status_code == 503
    database = response.json()["checks"]["database"]
    assert database["ok"] is False
    assert "not migrated" in database["detail"]


def test_readyz_mentions_missing_source_topics(
    serve_api: Callable[[Settings], httpx.Client], migrated: Settings
) -> None:
    api = serve_api(migrated)
    broker = api.get("/readyz").json()["checks"]["broker"]
    assert broker["ok"] is True
    assert f"source topics not created yet: {migrated.topic('dossiers')}" in broker["detail"]
    # Asking did not create them (a metadata request naming a topic would, on this broker).
    lag = asyncio.run(consumer_lag(migrated))
    assert lag == {}


# --- /metrics ------------------------------------------------------------------------------------

COUNTERS = {
    "events_in": {"ioc.dossiers": 120, "ioc.documents": 30},
    "events_stored": {"ioc.dossiers": 110, "ioc.documents": 30},
    "duplicates": {"ioc.dossiers": 10},
    "dead_letters": {"invalid_json": 2, "schema": 3},
    "batches": 7,
    "batch_write_seconds_sum": 1.75,
    "batch_write_seconds_max": 0.5,
    "freshness_buckets": {"0.5": 3, "1.0": 5, "+Inf": 6},  # cumulative, as the worker writes
    "freshness_seconds_sum": 4.5,
}


def test_metrics_worker_status(
    serve_api: Callable[[Settings], httpx.Client], with_topics: Settings
) -> None:
    insert_worker(with_topics, "w-a", 2, COUNTERS)
    insert_worker(with_topics, "w-b", 90, {"batches": 1, "events_in": {"ioc.dossiers": "bad"}})
    api = serve_api(with_topics)
    samples = scrape(api)

    assert sample(samples, "ioc_worker_up", instance="w-a") == 1
    assert sample(samples, "ioc_worker_up", instance="w-b") == 0
    assert 2 <= sample(samples, "ioc_worker_heartbeat_age_seconds", instance="w-a") < 10
    assert 90 <= sample(samples, "ioc_worker_heartbeat_age_seconds", instance="w-b") < 100
    start = sample(samples, "ioc_worker_start_time_seconds", instance="w-a")
    assert abs(time.time() - 3600 - start) < 60

    a = {"instance": "w-a"}
    assert sample(samples, "ioc_events_in_total", **a, topic="ioc.dossiers") == 120
    assert sample(samples, "ioc_events_in_total", **a, topic="ioc.documents") == 30
    assert sample(samples, "ioc_events_stored_total", **a, topic="ioc.dossiers") == 110
    assert sample(samples, "ioc_duplicate_events_total", **a, topic="ioc.dossiers") == 10
    assert sample(samples, "ioc_dead_letters_total", **a, reason="invalid_json") == 2
    assert sample(samples, "ioc_dead_letters_total", **a, reason="schema") == 3
    assert sample(samples, "ioc_batch_write_seconds_count", **a) == 7
    assert sample(samples, "ioc_batch_write_seconds_sum", **a) == 1.75
    assert sample(samples, "ioc_batch_write_seconds_max", **a) == 0.5
    assert sample(samples, "ioc_event_freshness_seconds_bucket", **a, le="0.5") == 3
    assert sample(samples, "ioc_event_freshness_seconds_bucket", **a, le="1.0") == 5
    assert sample(samples, "ioc_event_freshness_seconds_bucket", **a, le="+Inf") == 6
    assert sample(samples, "ioc_event_freshness_seconds_count", **a) == 6
    assert sample(samples, "ioc_event_freshness_seconds_sum", **a) == 4.5

    # Missing keys and non-numbers are left out, not guessed.
    b = [labels for name, labels in samples if ("instance", "w-b") in labels]
    b_names = {name for name, labels in samples if ("instance", "w-b") in labels}
    assert b_names == {"ioc_worker_up", "ioc_worker_heartbeat_age_seconds",
                       "ioc_worker_start_time_seconds", "ioc_batch_write_seconds_count",
                       "ioc_batch_write_seconds_sum"}, b
    assert sample(samples, "ioc_batch_write_seconds_count", instance="w-b") == 1
    assert sample(samples, "ioc_batch_write_seconds_sum", instance="w-b") == 0

    assert sample(samples, "ioc_scrape_error", component="broker") == 0
    assert sample(samples, "ioc_scrape_error", component="database") == 0


def connector_row(name: str, kind: str, health: Health, now: datetime, success: float | None,
                  record: float | None, silent: float | None) -> StatusRow:
    """A connector's status row; times in seconds before `now` (None: never)."""
    ago = [None if s is None else now - timedelta(seconds=s) for s in (success, record, silent)]
    return StatusRow(name, kind, health, None if health == Health.OK else f"{health} here",
                     now - timedelta(days=3), ago[0], ago[1], None, ago[2], 3600.0)


def test_metrics_connector_status(
    serve_api: Callable[[Settings], httpx.Client], migrated: Settings
) -> None:
    """Connectors run as `--once` jobs are gone when Prometheus scrapes: the API shows the
    rows they left in connector_status (written here by connectors/status.py itself)."""
    now = datetime.now(UTC)
    rows = [connector_row("dvcqg", "dossier", Health.OK, now, 60.5, 90.25, None),
            connector_row("edxml", "document", Health.SILENT, now, 7200, 10800, 10800),
            connector_row("zalo_oa", "field_report", Health.STOPPED, now, None, None, None)]
    before = time.time()
    for row in rows:
        save_status(migrated, row)
    after = time.time()
    api = serve_api(migrated)
    samples = scrape(api)
    for row in rows:
        named = {"connector": row.connector}
        assert sample(samples, "ioc_connector_up", **named, kind=row.kind) == (
            row.health == Health.OK), row
        for health in ("ok", "degraded", "silent", "stopped"):
            assert sample(samples, "ioc_connector_status", **named, kind=row.kind,
                          health=health) == (health == row.health), (row, health)
        for name, at in (("last_success", row.last_success_at),
                         ("last_record", row.last_record_at),
                         ("silent_since", row.silent_since)):
            key = (f"ioc_connector_status_{name}_timestamp_seconds", frozenset(named.items()))
            if at is None:
                assert key not in samples, key  # never: no series, not a made-up 0
            else:
                assert samples[key] == pytest.approx(at.timestamp(), abs=1e-5), key
        updated = sample(samples, "ioc_connector_status_updated_timestamp_seconds", **named)
        assert before - 1 <= updated <= after + 1
    assert {name for name, labels in samples if ("connector", "zalo_oa") in labels} == {
        "ioc_connector_up", "ioc_connector_status",
        "ioc_connector_status_updated_timestamp_seconds"}

    # The next run of a job changes what the next scrape says.
    save_status(migrated, connector_row("dvcqg", "dossier", Health.DEGRADED, now, 60.5, 90.25,
                                        None))
    samples = scrape(api)
    assert sample(samples, "ioc_connector_up", connector="dvcqg", kind="dossier") == 0
    assert sample(samples, "ioc_connector_status", connector="dvcqg", kind="dossier",
                  health="degraded") == 1
    assert sample(samples, "ioc_connector_status", connector="dvcqg", kind="dossier",
                  health="ok") == 0


def test_consumer_lag(
    serve_api: Callable[[Settings], httpx.Client], with_topics: Settings
) -> None:
    dossiers, documents = with_topics.topic("dossiers"), with_topics.topic("documents")
    dead = with_topics.topic("dead_letters")  # the worker stores them: its group consumes it
    n, k = 7, 4
    asyncio.run(_produce(with_topics, dossiers, 0, n))
    asyncio.run(_produce(with_topics, documents, 1, 3))
    asyncio.run(_produce(with_topics, dead, 1, 5))
    asyncio.run(_commit(with_topics, dossiers, 0, k))
    asyncio.run(_commit(with_topics, dead, 1, 2))

    expected = {(with_topics.topic(name), p): 0
                for name in ("dossiers", "documents", "field_reports", "evaluations",
                             "dead_letters")
                for p in range(with_topics.partitions)}
    expected[(dossiers, 0)] = n - k
    expected[(documents, 1)] = 3  # never committed: counts from the beginning
    expected[(dead, 1)] = 5 - 2
    assert asyncio.run(consumer_lag(with_topics)) == expected

    samples = scrape(serve_api(with_topics))
    lag = {(dict(labels)["topic"], int(dict(labels)["partition"])): value
           for (name, labels), value in samples.items() if name == "ioc_consumer_lag"}
    assert lag == expected

    # The worker catching up shows at the next scrape.
    asyncio.run(_commit(with_topics, dossiers, 0, n))
    assert asyncio.run(consumer_lag(with_topics))[(dossiers, 0)] == 0


def test_metrics_with_broker_and_database_down(
    serve_api: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    api = serve_api(settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}", "database_url": closed_port_url()}))
    started = time.monotonic()
    samples = scrape(api)
    assert time.monotonic() - started < 5
    assert sample(samples, "ioc_scrape_error", component="broker") == 1
    assert sample(samples, "ioc_scrape_error", component="database") == 1
    assert not any(name.startswith(("ioc_consumer_lag", "ioc_worker")) for name in names(samples))


def test_consumer_lag_raises_when_broker_unreachable() -> None:
    port = free_port()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(BrokerUnavailable, match=f"connection refused at 127.0.0.1:{port}"):
        asyncio.run(consumer_lag(settings, timeout=2))


def test_request_counter_per_app(
    serve_api: Callable[[Settings], httpx.Client], migrated: Settings
) -> None:
    # Two apps in one process: each has its own registry, nothing clashes or leaks across.
    first, second = serve_api(migrated), serve_api(migrated)
    for _ in range(3):
        assert first.get("/healthz").status_code == 200
    assert first.get("/nowhere").status_code == 404
    samples = scrape(first)
    requests = "ioc_api_requests_total"
    assert sample(samples, requests, method="GET", path="/healthz", status="200") == 3
    assert sample(samples, requests, method="GET", path="unmatched", status="404") == 1
    samples = scrape(second)
    assert (requests, frozenset({"method": "GET", "path": "/healthz", "status": "200"}.items())) \
        not in samples
    # Its first scrape is counted once it has been answered.
    assert sample(scrape(second), requests, method="GET", path="/metrics", status="200") == 1


# --- serve(): the process the CLI runs -----------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly(migrated: Settings, tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {
        **os.environ,
        "IOC_KAFKA_BOOTSTRAP": migrated.kafka_bootstrap,
        "IOC_DATABASE_URL": migrated.database_url,
        "IOC_DATABASE_SCHEMA": migrated.database_schema,
        "IOC_API_HOST": "127.0.0.1",
        "IOC_API_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ioc.api.app import serve;"
                               " from ioc.core.settings import Settings; serve(Settings())"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not answer within 20 s"
            time.sleep(0.1)
        proc.send_signal(sig)
        output = proc.communicate(timeout=15)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "api stopped" in output
    assert "api exited" in output
