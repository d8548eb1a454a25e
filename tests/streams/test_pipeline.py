"""End to end: events on real topics, a real `ioc worker` process, KPIs in real PostgreSQL."""

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ioc.core.settings import Settings
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres
from tests.support import scenario
from tests.support.checks import (
    assert_counted_once,
    assert_kpis,
    assert_rollups,
    handled_by,
    prepare,
    wait_stored,
)
from tests.support.services import (
    WorkerProcess,
    isolated_settings,
    publish,
    query,
    wait_until,
)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    prepare(settings)
    process = WorkerProcess(settings, tmp_path / "worker.log").start()
    yield process
    process.stop()


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    tables = {
        "events": "SELECT event_id, occurred_at, body FROM events ORDER BY 1",
        "dossiers": "SELECT * EXCLUDE_STORED FROM dossiers ORDER BY 1",
        "documents": "SELECT * EXCLUDE_STORED FROM documents ORDER BY 1",
        "field_reports": "SELECT * EXCLUDE_STORED FROM field_reports ORDER BY 1",
        "rollup_hour": "SELECT * FROM rollup_hour ORDER BY 1, 2, 3, 4, 5, 6",
        "kind_counts_minute": "SELECT * FROM kind_counts_minute ORDER BY 1, 2, 3",
        "kind_counts_hour": "SELECT * FROM kind_counts_hour ORDER BY 1, 2, 3",
    }
    result = {}
    for name, text in tables.items():
        if "EXCLUDE_STORED" in text:  # stored_at is when, not what: leave it out
            columns = [r[0] for r in query(
                settings, "SELECT column_name FROM information_schema.columns WHERE"
                " table_schema = %s AND table_name = %s AND column_name <> 'stored_at'"
                " ORDER BY ordinal_position", (settings.database_schema, name))]
            text = text.replace("* EXCLUDE_STORED", ", ".join(columns))
        result[name] = query(settings, text)
    return result


async def read_dead_letters(settings: Settings, count: int) -> list[tuple[bytes, dict]]:
    consumer = AIOKafkaConsumer(settings.topic("dead_letters"),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[bytes, dict]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [(r.value, {k: v.decode() for k, v in r.headers}) for r in records]
    finally:
        await consumer.stop()
    return found


def test_events_become_exact_kpis(settings: Settings, worker: WorkerProcess) -> None:
    check_exact_kpis(settings, worker)


def test_events_become_exact_kpis_on_the_emulator(emulator: Broker, postgres: Postgres,
                                                  tmp_path: Path) -> None:
    """The pure-PyPI path (a laptop without Java) keeps working end to end."""
    settings = isolated_settings(emulator, postgres)
    assert settings.empty_fetch_pause_ms > 0  # the emulator's one client-side workaround
    prepare(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        check_exact_kpis(settings, worker)
    finally:
        worker.stop()


def check_exact_kpis(settings: Settings, worker: WorkerProcess) -> None:
    sc = scenario.build(seed=1)
    asyncio.run(publish(settings, sc.messages))
    wait_stored(settings, sc, worker)

    letters = asyncio.run(read_dead_letters(settings, len(sc.malformed)))
    assert sorted((h["ioc.source.topic"], h["ioc.reason"]) for _, h in letters) == sorted(
        (settings.topic(t), reason) for t, reason in sc.malformed)
    sent_bad = {value for _, key, value in sc.messages if key == b"bad"}
    assert {value for value, _ in letters} == sent_bad  # raw bytes kept as they came
    assert all(h["ioc.error"] for _, h in letters)

    assert_kpis(settings, sc)
    assert_rollups(settings, sc)
    assert_counted_once(settings)
    assert query(settings, "SELECT count(*) FROM events WHERE body::text ~* 'ChuHoSo|email'") \
        == [(0,)]

    # `ioc kpis` for one ward since a date: the same definitions on the matching subset.
    since = sc.now - timedelta(days=15)
    for commune in scenario.COMMUNES[:2]:
        local = since.astimezone(scenario.VIETNAM).replace(tzinfo=None).isoformat()
        result = subprocess.run(
            [sys.executable, "-m", "ioc", "kpis", "--json", "--unit", commune, "--since", local],
            env=settings.as_env(), capture_output=True, text=True, check=True)
        assert_kpis(settings, sc.subset(commune, since), json.loads(result.stdout))


def test_replay_and_republish_change_nothing(settings: Settings, worker: WorkerProcess,
                                             tmp_path: Path) -> None:
    sc = scenario.build(seed=2, dossiers=60, documents=40, reports=30)
    asyncio.run(publish(settings, sc.messages))
    wait_stored(settings, sc, worker)
    assert_kpis(settings, sc)
    before = snapshot(settings)

    # The same events published again...
    asyncio.run(publish(settings, sc.messages))
    # ...and every topic replayed from offset 0 by a new consumer group.
    replay = settings.model_copy(update={"app_id": settings.app_id + "-replay",
                                         "worker_instance_id": "replayer"})
    replayer = WorkerProcess(replay, tmp_path / "replay.log").start()
    try:
        total = 2 * len(sc.messages)
        wait_until(lambda: handled_by(replay, "replayer") >= total, 90,
                   "the replay to finish", replayer.log)
        wait_until(lambda: handled_by(settings, settings.worker_instance_id) >= total, 90,
                   "the first worker to see the republished events", worker.log)
    finally:
        replayer.stop()
    assert snapshot(settings) == before
    assert_kpis(settings, sc)


