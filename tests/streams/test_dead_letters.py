"""Dead letters stored (streams/store_dead_letters.py, streams/dead_letters.py): from a real `ioc
worker` process, a connector and `ioc import`, on the real broker, into real PostgreSQL; each
exactly once, even when producers send them again and a new consumer group replays every
topic; no payload, nothing personal. The expected rows are read from the dead-letter topic
itself, with a plain consumer, never from the table under test."""

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connectors.base import Batch, Connector
from ioc.cli.bulk_import import ImportKind, importer, records
from ioc.core.db import connect, connect_kwargs, migrate
from ioc.core.events import Event, Kind
from ioc.core.settings import Settings
from streams.dead_letters import ERROR_CHARS, KEY_CHARS, DeadLetter, from_message, store
from tests.support.checks import handled_by, prepare
from tests.support.exports import row_of, write_csv
from tests.support.portal import dossier
from tests.support.services import WorkerProcess, publish, query, wait_until
from tests.support.timescaledb import TimescaleServer, fresh_settings

NAME, PHONE, ID_NUMBER = "Nguyễn Văn An", "0912345678", "001203004567"
PERSONAL = (NAME, PHONE, ID_NUMBER, "Trần Thị Bình", "an.nguyen@example.vn")
BAD_SOURCE = [  # (topic, key, value) the worker must dead-letter
    ("dossiers", b"bad-json", f'{{"ChuHoSo": "{NAME}", "SoDienThoai": "{PHONE}"'.encode()),
    ("documents", b"bad-event", json.dumps(
        {"kind": "document", "payload": {"ChuHoSo": NAME, "SoGiayToChuHoSo": ID_NUMBER}},
        ensure_ascii=False).encode()),
]


class Listed(Connector):
    """A connector over records in memory: the SDK's own producer, cursor and dead letters.
    It reads the same records at every run (a source re-read after a crash)."""

    name = "listed"
    kind = Kind.FIELD_REPORT
    personal_fields: ClassVar[frozenset[str]] = frozenset({"reporter_name", "email"})
    RECORDS: ClassVar[list[dict[str, Any]]] = [
        {"id": "pa-1", "reporter_name": "Trần Thị Bình", "email": "an.nguyen@example.vn",
         "note": "đèn đường hỏng"},
        {"id": "pa-2", "reporter_name": NAME, "note": "x" * 3000},
    ]

    async def fetch(self, cursor: str | None) -> Batch:
        return Batch(self.RECORDS, "read")

    def map(self, record: Any) -> Event:
        raise ValueError(f"service_code: missing ({'y' * 2000})")

    def record_key(self, record: Any) -> str | None:
        return record["id"]


def run_import(settings: Settings, path: Path) -> None:
    job = importer(settings, ImportKind.DOSSIERS)
    rows, _ = records(path, ImportKind.DOSSIERS)
    job.start(rows, lambda n: None)
    asyncio.run(job.run(once=True))


async def topic_messages(settings: Settings) -> list[Any]:
    """Every message of the dead-letter topic, by a consumer of no group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic("dead_letters"), p)
                 for p in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[Any] = []
        async with asyncio.timeout(30):
            while sum(ends.values()) > len(found):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found += batch
        return found
    finally:
        await consumer.stop()


async def caught_up(settings: Settings, group: str) -> bool:
    """The group has committed the end of every dead-letter partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic("dead_letters"), p)
                 for p in range(settings.partitions)]
        ends = await consumer.end_offsets(parts)
        done = await admin.list_consumer_group_offsets(group, partitions=parts)
        return all(done.get(p) is not None and done[p].offset >= ends[p] for p in parts)
    finally:
        await consumer.stop()
        await admin.close()


def expected(messages: list[Any]) -> dict[str, tuple[tuple, list[tuple[int, int, datetime]]]]:
    """Identity -> (the row without its dead-letter place and time, the copies' places)."""
    rows: dict[str, tuple[tuple, list[tuple[int, int, datetime]]]] = {}
    for m in messages:
        h = {k: v.decode() for k, v in m.headers}
        if "ioc.source.topic" in h:
            identity = ("topic", h["ioc.source.topic"], h["ioc.source.partition"],
                        h["ioc.source.offset"])
            origin = h["ioc.source.topic"]
            place = (h["ioc.source.topic"], int(h["ioc.source.partition"]),
                     int(h["ioc.source.offset"]), None)
        else:
            identity = ("connector", h["ioc.source.connector"], h["ioc.reason"], h["ioc.error"],
                        m.key, m.value)
            origin = h["ioc.source.connector"]
            place = (None, None, None, h["ioc.source.connector"])
        row = (origin, h["ioc.reason"], h["ioc.error"][:ERROR_CHARS],
               m.key.decode()[:KEY_CHARS] if m.key is not None else None, len(m.value), *place)
        copy = (m.partition, m.offset, datetime.fromtimestamp(m.timestamp / 1000, UTC))
        rows.setdefault(repr(identity), (row, []))[1].append(copy)
    return rows


COLUMNS = ("origin, reason, error, message_key, payload_bytes, source_topic, source_partition,"
           " source_offset, source_connector")


def stored(settings: Settings) -> list[tuple]:
    return query(settings, f"SELECT {COLUMNS}, dead_letter_partition, dead_letter_offset, at,"
                           " origin_key FROM dead_letters ORDER BY origin_key")


def check_table(settings: Settings, messages: list[Any]) -> None:
    truth = expected(messages)
    rows = stored(settings)
    assert len(rows) == len(truth) and len({r[-1] for r in rows}) == len(rows)
    by_row = {row: copies for row, copies in truth.values()}
    assert set(by_row) == {r[:9] for r in rows}
    for r in rows:
        assert (r[9], r[10], r[11]) in by_row[r[:9]]  # one of its copies on the topic


def test_dead_letters_of_every_origin_are_stored_once(settings: Settings,
                                                      tmp_path: Path) -> None:
    prepare(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    good = row_of(dossier(1))
    bad = {**row_of(dossier(2)), "TrangThaiHoSo": "99", "ChuHoSo": NAME,
           "SoGiayToChuHoSo": ID_NUMBER}
    csv = write_csv(tmp_path / "ho_so.csv", [good, bad])
    try:
        asyncio.run(publish(settings, BAD_SOURCE))
        asyncio.run(Listed(settings).run(once=True))
        run_import(settings, csv)
        wait_until(lambda: len(stored(settings)) == 2 + 2 + 1, 60,
                   "dead letters of the worker, the connector and the import", worker.log)
        first = asyncio.run(topic_messages(settings))
        assert len(first) == 5
        check_table(settings, first)
        rows = stored(settings)
        origins = sorted((r[0], r[1]) for r in rows)
        assert origins == sorted([
            (settings.topic("dossiers"), "invalid_json"),
            (settings.topic("documents"), "invalid_event"),
            ("listed", "unmappable"), ("listed", "unmappable"),
            ("dvcqg_import", "unmappable")])

        # Sent again: the connector re-reads its records, the file is imported again...
        asyncio.run(Listed(settings).run(once=True))
        run_import(settings, csv)
        # ...and a new consumer group replays every topic (the worker's dead letters again).
        replay = settings.model_copy(update={"app_id": settings.app_id + "-replay",
                                             "worker_instance_id": "replayer"})
        replayer = WorkerProcess(replay, tmp_path / "replay.log").start()
        try:
            wait_until(lambda: handled_by(replay, "replayer") >= len(BAD_SOURCE) + 2, 60,
                       "the replay of the source topics", replayer.log)
            wait_until(lambda: asyncio.run(caught_up(settings, replay.app_id))
                       and asyncio.run(caught_up(settings, settings.app_id)), 60,
                       "both groups through the dead-letter topic", replayer.log)
        finally:
            replayer.stop()
    finally:
        worker.stop()
    again = asyncio.run(topic_messages(settings))
    assert len(again) == 5 + 2 + 1 + len(BAD_SOURCE)  # every copy is on the topic...
    assert stored(settings) == rows  # ...and the table did not change
    check_table(settings, again)

    # Nothing personal, and no payload: only sizes, keys and the errors naming fields.
    text = json.dumps(query(settings, "SELECT to_jsonb(d) FROM dead_letters d"),
                      ensure_ascii=False)
    assert not any(p in text for p in PERSONAL), text
    columns = {r[0] for r in query(
        settings, "SELECT column_name FROM information_schema.columns"
                  " WHERE table_schema = %s AND table_name = 'dead_letters'",
        (settings.database_schema,))}
    assert not columns & {"payload", "value", "body"}
    assert max(len(r[2]) for r in rows) == ERROR_CHARS  # the long connector error, truncated


def letters(count: int) -> list[DeadLetter]:
    """Dead letters of the three kinds of producer, and one without any header."""
    made = []
    for i in range(count):
        headers: list[tuple[str, bytes | None]] = [("ioc.reason", b"invalid_event"),
                                                   ("ioc.error", f"payload.status: {i}".encode())]
        if i % 3 == 0:
            headers += [("ioc.source.topic", b"t.ioc.dossiers"),
                        ("ioc.source.partition", str(i % 2).encode()),
                        ("ioc.source.offset", str(i).encode())]
        elif i % 3 == 1:
            headers += [("ioc.source.connector", b"dvcqg")]
        else:
            headers = []
        made.append(from_message(partition=i % 2, offset=1000 + i,
                                 timestamp=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i),
                                 key=f"k{i}".encode(), value=b"{}", headers=headers))
    return made


def test_the_writer_alone_keeps_one_row_per_origin(settings: Settings) -> None:
    """On TimescaleDB the hypertable cannot hold a unique index on origin_key: the advisory
    locks must. Here the plain table's unique constraint is dropped to check that they do,
    with four writers storing the same dead letters at once, in different orders."""
    migrate(settings)
    with connect(settings, autocommit=True) as conn:
        conn.execute("ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_origin_key_key")
    made = letters(60)
    assert len({x.origin_key for x in made}) == 60
    assert [x.origin for x in made[:3]] == ["t.ioc.dossiers", "dvcqg", "unknown"]

    async def write(seed: int) -> int:
        mine = made[:]
        random.Random(seed).shuffle(mine)
        async with await psycopg.AsyncConnection.connect(
                settings.database_url, **connect_kwargs(settings)) as conn:
            return sum([await store(conn, mine[i:i + 7]) for i in range(0, 60, 7)])

    async def together() -> list[int]:
        return await asyncio.gather(*(write(seed) for seed in range(4)))

    assert sum(asyncio.run(together())) == 60
    rows = query(settings, "SELECT origin_key, count(*) FROM dead_letters GROUP BY 1")
    assert sorted(rows) == sorted((x.origin_key, 1) for x in made)


def test_stored_once_in_the_timescaledb_hypertable(timescale: TimescaleServer) -> None:
    settings = fresh_settings(timescale.url)
    migrate(settings)
    made = letters(12)

    async def write() -> list[int]:
        async with await psycopg.AsyncConnection.connect(
                settings.database_url, **connect_kwargs(settings)) as conn:
            return [await store(conn, made), await store(conn, made[::-1] + made[:3])]

    assert asyncio.run(write()) == [12, 0]
    rows = query(settings, "SELECT at, origin, reason, error, message_key, payload_bytes,"
                           " origin_key FROM dead_letters ORDER BY at")
    assert rows == [(x.at, x.origin, x.reason, x.error, x.message_key, x.payload_bytes,
                     x.origin_key) for x in made]
