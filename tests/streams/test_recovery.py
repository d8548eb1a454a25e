"""Crashes and outages: a killed worker, a database down for 30 s, a restarted broker.
After each, every event is stored once and the KPIs equal the ground truth."""

import asyncio
import threading
import time
from pathlib import Path

from ioc.core.settings import Settings
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres
from tests.support import scenario
from tests.support.checks import assert_exact, prepare, stored_events, wait_stored
from tests.support.scenario import Message
from tests.support.services import (
    WorkerProcess,
    free_port,
    isolated_settings,
    publish,
    start_broker,
    wait_until,
)


def half_and_half(seed: int) -> scenario.Scenario:
    """A scenario sent in two halves around an outage."""
    return scenario.build(seed=seed, dossiers=300, documents=200, reports=150, malformed=False)


def store_first_half(settings: Settings, sc: scenario.Scenario,
                     worker: WorkerProcess) -> list[Message]:
    """Publish the first half of the messages, wait until the worker stores some; the rest."""
    half = len(sc.messages) // 2
    asyncio.run(publish(settings, sc.messages[:half]))
    wait_until(lambda: stored_events(settings) > 0, 60, "first events", worker.log)
    return sc.messages[half:]


def test_worker_killed_mid_batch_loses_and_doubles_nothing(settings: Settings,
                                                           tmp_path: Path) -> None:
    settings = settings.model_copy(update={"batch_size": 300})
    prepare(settings)
    sc = scenario.build(seed=3, dossiers=2000, documents=1200, reports=800, malformed=False)
    asyncio.run(publish(settings, sc.messages))
    total = len(sc.valid_event_ids)

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    wait_until(lambda: stored_events(settings) > total // 10, 60, "some progress", worker.log)
    worker.kill()  # SIGKILL: no chance to commit offsets or finish a batch
    assert stored_events(settings) < total, "the worker finished before it could be killed"

    worker.start()  # same static member id: takes its partitions back at once
    try:
        wait_stored(settings, sc, worker, timeout=120)
    finally:
        worker.stop()
    assert_exact(settings, sc)


def test_database_outage_is_waited_out(broker: Broker, tmp_path: Path) -> None:
    postgres = Postgres(port=free_port(), data_dir=tmp_path / "pg")
    postgres.start()
    settings = isolated_settings(broker, postgres)
    prepare(settings)
    sc = half_and_half(seed=4)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        rest = store_first_half(settings, sc, worker)
        postgres.stop()

        # Events keep arriving for the whole 30 s the database is away.
        def trickle() -> None:
            for i in range(10):
                asyncio.run(publish(settings, rest[i * len(rest) // 10:(i + 1) * len(rest) // 10]))
                time.sleep(2.5)

        sender = threading.Thread(target=trickle)
        sender.start()
        time.sleep(30)
        sender.join()
        postgres.start()
        wait_stored(settings, sc, worker, timeout=120)
    finally:
        worker.stop()
        postgres.stop()
    assert "database unavailable, retrying" in worker.log()
    postgres.start()
    try:
        assert_exact(settings, sc)
    finally:
        postgres.stop()


def test_broker_restart_is_survived(postgres: Postgres, tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    settings = isolated_settings(broker, postgres)
    prepare(settings)
    sc = half_and_half(seed=5)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        rest = store_first_half(settings, sc, worker)
        broker.stop()
        time.sleep(3)
        broker.start()
        asyncio.run(publish(settings, rest))
        wait_stored(settings, sc, worker, timeout=120)
    finally:
        worker.stop()
        broker.stop()
    assert_exact(settings, sc)
