"""Scale-out on a real consumer group: two `ioc worker` processes on 8 partitions share the
work, one is SIGKILLed mid-stream and the other takes its partitions over, the killed one
comes back and the group rebalances, the broker restarts under load. Each test ends with the
KPIs equal to the scenario's ground truth: nothing lost, nothing counted twice.

They run on Apache Kafka whatever IOC_TEST_BROKER says: the emulator never expires a
crashed member. Takeover times are measured and printed (`pytest -s`), never asserted.
"""

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ioc.core.settings import Settings
from ioc.embedded.broker import Broker
from ioc.embedded.broker.apache import ApacheKafka
from ioc.embedded.servers import Postgres
from tests.support import scenario
from tests.support.checks import assert_exact, prepare, stored_events, wait_stored
from tests.support.services import (
    PacedPublisher,
    WorkerProcess,
    group_lag,
    group_members,
    isolated_settings,
    make_broker,
    partition_of,
    publish,
    query,
    wait_until,
)

PARTITIONS = 8
SOURCES = ("dossiers", "documents", "field_reports")
RATE = 200  # events/s while workers are killed and brokers restarted: a stream, not a backlog

Members = dict[str, set[tuple[str, int]]]


def source_partitions(settings: Settings) -> set[tuple[str, int]]:
    return {(settings.topic(t), p) for t in SOURCES for p in range(PARTITIONS)}


def sharing(settings: Settings, workers: int) -> Members | None:
    """The group when `workers` members each hold some source partitions and together hold
    every one, once; else None (forming, rebalancing, or the broker away)."""
    members = group_members(settings)
    sources = source_partitions(settings)
    held = [parts & sources for parts in members.values()]
    if len(members) != workers or not all(held) or sum(map(len, held)) != len(sources):
        return None
    return members if set().union(*held) == sources else None


def wait_sharing(settings: Settings, workers: int, what: str,
                 processes: list[WorkerProcess]) -> Members:
    found: list[Members] = []

    def check() -> bool:
        members = sharing(settings, workers)
        if members:
            found.append(members)
        return bool(members)

    wait_until(check, 120, what, lambda: "\n".join(w.log()[-2500:] for w in processes))
    return found[-1]


def partitions_of_events(settings: Settings, sc: scenario.Scenario) -> dict[str, tuple[str, int]]:
    """event id -> the (topic, partition) its message was published to, computed here."""
    return {json.loads(value)["event_id"]: (settings.topic(topic), partition_of(key, PARTITIONS))
            for topic, key, value in sc.messages}


def first_stored_after(settings: Settings, since: datetime, partitions: set[tuple[str, int]],
                       where: dict[str, tuple[str, int]]) -> datetime | None:
    rows = query(settings, "SELECT event_id::text, stored_at FROM events WHERE stored_at > %s",
                 (since,))
    times = [at for event_id, at in rows if where[event_id] in partitions]
    return min(times) if times else None


def events_stored_by(settings: Settings, name: str) -> int:
    rows = query(settings, "SELECT counters FROM worker_status WHERE instance_id = %s", (name,))
    return sum(rows[0][0]["events_stored"].values()) if rows else 0


def missing(settings: Settings, sc: scenario.Scenario,
            where: dict[str, tuple[str, int]]) -> str:
    """Which partitions still owe events (shown when a wait times out)."""
    stored = {r[0] for r in query(settings, "SELECT event_id::text FROM events")}
    owed: dict[tuple[str, int], int] = {}
    for event_id in sc.valid_event_ids - stored:
        owed[where[event_id]] = owed.get(where[event_id], 0) + 1
    lag = group_lag(settings)
    owing = {tp: (n, *lag.get(tp, (None, None))) for tp, n in owed.items()}
    return (f"{len(stored)} stored; missing by partition (missing, committed offset, end "
            f"offset): {sorted(owing.items())}\n")


def status_name(worker: WorkerProcess) -> str:
    """The worker's row in worker_status: its instance id, else its host and process id."""
    assert worker.proc is not None
    return worker.settings.worker_instance_id or f"{socket.gethostname()}-{worker.proc.pid}"


def report(line: str) -> None:
    print(f"[scale-out] {line}", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("membership", ["dynamic", "static"])
def test_two_workers_share_take_over_and_rebalance(membership: str, apache_kafka: Broker,
                                                   postgres: Postgres, tmp_path: Path,
                                                   record_property: Callable[[str, object], None]
                                                   ) -> None:
    base = isolated_settings(apache_kafka, postgres, partitions=PARTITIONS, batch_size=200)
    prepare(base)
    tag = base.app_id.rsplit("-", 1)[-1]
    # Dynamic: no group.instance.id (IOC_WORKER_INSTANCE_ID empty); static: one id each.
    ids = ["", ""] if membership == "dynamic" else [f"a-{tag}", f"b-{tag}"]
    workers = [WorkerProcess(base.model_copy(update={"worker_instance_id": i}),
                             tmp_path / f"worker-{n}.log") for n, i in enumerate(ids)]
    sc = scenario.build(seed=11, dossiers=1000, documents=600, reports=400, malformed=False)
    where = partitions_of_events(base, sc)
    half = len(sc.messages) // 2
    publisher = PacedPublisher(base, sc.messages[:half], rate=RATE)
    for w in workers:
        w.start()
    try:
        before = wait_sharing(base, 2, "two workers sharing the partitions", workers)
        if membership == "static":  # a static member's id starts with its instance id
            assert sorted(m.split("-", 2)[:2] for m in before) == sorted(
                i.split("-") for i in ids)
        else:  # a dynamic member's id starts with the client id faust gives it
            assert all(m.startswith("faust-") for m in before), before
        names = [status_name(w) for w in workers]

        publisher.start()
        wait_until(lambda: stored_events(base) > 300, 60, "the workers storing",
                   workers[0].log)
        wait_until(lambda: all(events_stored_by(base, n) > 0 for n in names), 30,
                   "both workers storing events", workers[1].log)

        victim, survivor = workers
        killed_at = datetime.now(UTC)
        victim.kill()  # SIGKILL: no leave-group, no commit, its batch unfinished
        assert publisher.is_alive(), "the stream ended before the kill"

        after = wait_sharing(base, 1, "the survivor holding every partition", [survivor])
        (gone,) = set(before) - set(after)
        if membership == "static":
            assert gone.startswith(ids[0] + "-")
        killed = before[gone] & source_partitions(base)
        wait_until(lambda: first_stored_after(base, killed_at, killed, where) is not None, 60,
                   "the survivor storing events of the killed worker's partitions",
                   survivor.log)
        taken = first_stored_after(base, killed_at, killed, where)
        assert taken is not None
        takeover = (taken - killed_at).total_seconds()
        record_property("takeover_seconds", round(takeover, 2))
        report(f"{membership} membership: takeover {takeover:.1f} s after the SIGKILL "
               f"({len(killed)} topic-partitions; session timeout 10 s)")

        victim.start()
        restarted_at = time.monotonic()
        rebalanced = wait_sharing(base, 2, "the restarted worker rejoining", workers)
        report(f"{membership} membership: group of two again "
               f"{time.monotonic() - restarted_at:.1f} s after the restart (process start "
               f"included)")
        if membership == "static":
            assert sorted(m.split("-", 2)[:2] for m in rebalanced) == sorted(
                i.split("-") for i in ids)
        else:  # a new member, the survivor kept its id
            assert set(rebalanced) - set(before) and set(rebalanced) & set(before)
        publisher.finish()
        asyncio.run(publish(base, sc.messages[half:]))
        wait_until(lambda: stored_events(base) == len(sc.valid_event_ids), 120,
                   "every event stored", lambda: survivor.log()[-1500:] + victim.log()[-1500:]
                   + missing(base, sc, where))
        restarted = status_name(victim)
        wait_until(lambda: events_stored_by(base, restarted) > 0, 30,
                   "the restarted worker storing events", victim.log)
    finally:
        publisher.join(1)
        for w in workers:
            w.stop()
    assert_exact(base, sc)


@pytest.mark.slow
def test_broker_restarted_and_killed_under_load(postgres: Postgres, tmp_path: Path) -> None:
    """This test's own broker (not the session's): stopped and started, then SIGKILLed and
    started, while two workers consume and events keep arriving."""
    broker = make_broker(tmp_path, "apache-kafka")
    assert isinstance(broker, ApacheKafka)
    # After a crash the broker registers again once its dead incarnation's session expired.
    broker.overrides = {"broker.session.timeout.ms": "4000",
                        "broker.heartbeat.interval.ms": "1000"}
    broker.start()
    base = isolated_settings(broker, postgres, partitions=PARTITIONS, batch_size=200)
    prepare(base)
    tag = base.app_id.rsplit("-", 1)[-1]
    workers = [WorkerProcess(base.model_copy(update={"worker_instance_id": f"{n}-{tag}"}),
                             tmp_path / f"worker-{n}.log") for n in "ab"]
    sc = scenario.build(seed=12, dossiers=1000, documents=600, reports=400, malformed=False)
    most = 2 * len(sc.messages) // 3
    publisher = PacedPublisher(base, sc.messages[:most], rate=RATE)
    for w in workers:
        w.start()
    try:
        wait_sharing(base, 2, "two workers sharing the partitions", workers)
        publisher.start()
        for outage in ("stop", "kill"):
            stored = stored_events(base)
            wait_until(lambda s=stored: stored_events(base) > s + 200, 120,
                       f"progress before the broker's {outage}", workers[0].log)
            down = time.monotonic()
            getattr(broker, outage)()
            broker.start()
            report(f"broker {outage} + start: back in {time.monotonic() - down:.1f} s")
        publisher.finish()
        asyncio.run(publish(base, sc.messages[most:]))
        wait_stored(base, sc, workers[0], timeout=180)
        assert all(w.proc is not None and w.proc.poll() is None for w in workers), \
            "a worker died with the broker"
        report(f"broker outages: {publisher.resends} chunks sent again by the publisher")
    finally:
        publisher.join(1)
        for w in workers:
            w.stop()
        broker.stop()
    assert_exact(base, sc)
