"""The TimescaleDB variant of the migrations and policies, run against a real TimescaleDB 2.23
(tests/timescale: PGlite's WebAssembly build). Its background jobs never run by themselves:
the tests run them with CALL run_job(id), as the scheduler would.
"""

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from ioc.core.db import connect, migrate, migrations
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres
from tests.support.timescaledb import TimescaleServer, fresh_settings

EVENT_INSERT = (
    "INSERT INTO events (occurred_at, event_id, kind, entity_id, source, province_code,"
    " commune_code, agency_code, status, ingested_at, body)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '{}')"
)
GROUP = ("kind", "source")
Key = tuple[datetime, str, str]


@pytest.fixture
def ts(timescale: TimescaleServer) -> Settings:
    settings = fresh_settings(timescale.url)
    migrate(settings)
    return settings


Jobs = dict[tuple[str, str], tuple[int, dict[str, str]]]


def jobs(conn: psycopg.Connection, settings: Settings) -> Jobs:
    rows = conn.execute(
        "SELECT proc_name, hypertable_name, job_id, config FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = %s", (settings.database_schema,)
    ).fetchall()
    return {(proc, table): (job, config) for proc, table, job, config in rows}


def test_migrate_twice_creates_hypertables_caggs_and_policies(
    timescale: TimescaleServer,
) -> None:
    settings = fresh_settings(timescale.url, compress_after_days=3, retain_events_days=400)
    assert migrate(settings) == [version for version, _, _ in migrations(timescale=True)]
    assert migrate(settings) == []
    schema = settings.database_schema
    with connect(settings) as conn:
        hypertables = dict(conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = %s", (schema,)
        ).fetchall())
        assert hypertables == {"events": True, "rollup_hour": False, "alerts": False,
                               "dead_letters": False}
        caggs = dict(conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = %s", (schema,)
        ).fetchall())
        assert caggs == {"kind_counts_minute": False, "kind_counts_hour": False}
        segment_by = conn.execute(
            "SELECT attname FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = %s AND hypertable_name = 'events'"
            " AND segmentby_column_index IS NOT NULL", (schema,)
        ).fetchall()
        assert segment_by == [("kind",)]
        found = jobs(conn, settings)
    # Re-applied, not duplicated, by the second migrate; values from the settings.
    configs = {key: config for key, (_, config) in found.items()}
    assert set(configs) == {
        ("policy_compression", "events"),
        ("policy_retention", "events"),
        ("policy_retention", "dead_letters"),
        ("policy_refresh_continuous_aggregate", "kind_counts_minute"),
        ("policy_refresh_continuous_aggregate", "kind_counts_hour"),
    }
    assert configs["policy_compression", "events"]["compress_after"] == "3 days"
    assert configs["policy_retention", "events"]["drop_after"] == "400 days"
    assert configs["policy_retention", "dead_letters"]["drop_after"] == "400 days"
    minute = configs["policy_refresh_continuous_aggregate", "kind_counts_minute"]
    hour = configs["policy_refresh_continuous_aggregate", "kind_counts_hour"]
    assert (minute["start_offset"], minute["end_offset"]) == ("400 days", "00:01:00")
    assert (hour["start_offset"], hour["end_offset"]) == ("400 days", "01:00:00")


CHUNK = timedelta(days=7)  # the events hypertable's chunk interval (migration 0002)
COMPRESS_AFTER = timedelta(days=7)  # the compression policy's default age


def make_events(now: datetime, count: int) -> list[tuple[object, ...]]:
    """Events over the last hours and days, a third older than the compression age.

    Whatever the date, events 16 and 30 days old sit in two different chunks that both end more
    than `COMPRESS_AFTER` ago (a chunk is 7 days wide), so at least two chunks get compressed;
    those 10 days old fall on either side of that boundary depending on the calendar.
    """
    rng = random.Random(20250701)
    rows = []
    for i in range(count):
        age = timedelta(days=rng.choice([0, 0, 0, 1, 3, 10, 16, 30]),
                        hours=rng.randrange(6), minutes=rng.randrange(60),
                        seconds=rng.randrange(60), microseconds=rng.randrange(1_000_000))
        occurred = now - age - timedelta(minutes=2)  # below end_offset: refreshable
        rows.append((occurred, uuid.uuid4(), rng.choice(["dossier", "document", "field_report"]),
                     f"e{i}", rng.choice(["dvc", "edoc"]), "01", rng.choice(["", "00004"]),
                     rng.choice(["A1", "A2"]), None, occurred))
    return rows


def expected_counts(rows: list[tuple[object, ...]], unit: str) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for occurred, _, kind, _, source, *_ in rows:
        assert isinstance(occurred, datetime)
        bucket = occurred.astimezone(UTC).replace(second=0, microsecond=0)
        if unit == "hour":
            bucket = bucket.replace(minute=0)
        counts[bucket, kind, source] += 1  # type: ignore[index]
    return counts


def cagg_counts(conn: psycopg.Connection, view: str) -> Counter[Key]:
    rows = conn.execute(f"SELECT bucket, {', '.join(GROUP)}, events FROM {view}").fetchall()
    return Counter({(b.astimezone(UTC), *group): n for b, *group, n in rows})


def materialized(conn: psycopg.Connection, settings: Settings, view: str) -> Counter[Key]:
    """What the continuous aggregate stored in its materialization hypertable."""
    schema, table = conn.execute(
        "SELECT materialization_hypertable_schema, materialization_hypertable_name"
        " FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = %s AND view_name = %s", (settings.database_schema, view)
    ).fetchone() or ("", "")
    rows = conn.execute(sql.SQL("SELECT bucket, {}, events FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, GROUP)), sql.Identifier(schema, table))).fetchall()
    return Counter({(b.astimezone(UTC), *group): n for b, *group, n in rows})


def refresh(conn: psycopg.Connection, policy: Jobs) -> None:
    """Run each refresh policy twice, as the scheduler does within two minutes.

    TimescaleDB 2.23's batched refresh can leave the invalidation of a lone late row to the next
    run (it only picks batches whose range overlaps an invalidation, and a single row's range is
    empty until a run has moved it to the aggregate's log, expanded to its bucket).
    """
    for view in ("kind_counts_minute", "kind_counts_hour"):
        for _ in range(2):
            conn.execute("CALL run_job(%s)",
                         (policy["policy_refresh_continuous_aggregate", view][0],))


def test_kind_counts_are_exact_realtime_refreshed_and_compressed(ts: Settings) -> None:
    """kind_counts_minute/_hour (migration 0025): the events per bucket, kind and source."""
    now = datetime.now(UTC)
    rows = make_events(now, 360)
    old = [r for r in rows if r[0] < now - timedelta(days=8)]  # type: ignore[operator]
    assert len(old) > 50
    by_minute, by_hour = expected_counts(rows, "minute"), expected_counts(rows, "hour")
    assert len(by_hour) < len(by_minute) < len(rows)  # several events share buckets
    with connect(ts, autocommit=True) as conn:
        with conn.transaction():
            conn.cursor().executemany(EVENT_INSERT, rows)
        # Real-time aggregation: nothing materialized yet, every event counted.
        assert cagg_counts(conn, "kind_counts_minute") == by_minute
        assert cagg_counts(conn, "kind_counts_hour") == by_hour

        policy = jobs(conn, ts)
        refresh(conn, policy)
        # Everything before the last hours was materialized, old days too (the refresh window
        # reaches back as far as the retention); the rest is real-time.
        day_ago = now - timedelta(days=1)
        for view, expected in (("kind_counts_minute", by_minute), ("kind_counts_hour", by_hour)):
            stored = materialized(conn, ts, view)
            assert +Counter({k: n for k, n in stored.items() if k[0] < day_ago}) == +Counter(
                {k: n for k, n in expected.items() if k[0] < day_ago})
        # The last hour is not materialized in the hour aggregate: it is served real-time.
        assert sum(materialized(conn, ts, "kind_counts_hour").values()) < len(rows)
        assert cagg_counts(conn, "kind_counts_minute") == by_minute
        assert cagg_counts(conn, "kind_counts_hour") == by_hour

        conn.execute("CALL run_job(%s)", (policy["policy_compression", "events"][0],))
        compressed = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*) FILTER (WHERE NOT is_compressed"
            " AND range_end < now() - interval '7 days')"
            " FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = %s AND hypertable_name = 'events'", (ts.database_schema,)
        ).fetchone()
        assert compressed is not None and compressed[0] >= 2 and compressed[1] == 0
        readable = conn.execute(
            "SELECT occurred_at, event_id, kind, entity_id FROM events"
            " WHERE occurred_at < now() - interval '8 days'"
        ).fetchall()
        assert sorted(readable) == sorted(r[:4] for r in old)  # type: ignore[type-var]
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(rows),)

        # The primary key still holds in a compressed chunk.
        compressed_age = now - CHUNK - COMPRESS_AFTER
        duplicate = next(r for r in old if r[0] < compressed_age)  # type: ignore[operator]
        inserted = conn.execute(EVENT_INSERT + " ON CONFLICT DO NOTHING", duplicate).rowcount
        assert inserted == 0
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(EVENT_INSERT, duplicate)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(rows),)

        # A late event into a compressed chunk is counted once its refresh has run.
        late = (*duplicate[:1], uuid.uuid4(), *duplicate[2:])
        conn.execute(EVENT_INSERT, late)
        refresh(conn, policy)
        assert cagg_counts(conn, "kind_counts_minute") == expected_counts([*rows, late], "minute")
        assert cagg_counts(conn, "kind_counts_hour") == expected_counts([*rows, late], "hour")


WIDTHS = ["1 minute", "15 minutes", "1 hour", "1 day", "7 days", "1 month", "3 months", "1 year"]
STAMPS = [
    "1900-03-01 00:00:00+00", "1969-12-31 23:59:59+00", "1975-06-12 17:30:00+00",
    "1999-12-31 23:59:59.999999+00", "2000-01-01 00:00:00+00", "2000-01-02 23:59:00+00",
    "2000-01-03 00:00:00+00", "2024-01-31 17:30:00+00", "2024-01-31 23:30:00+00",
    "2024-02-29 16:59:59+00", "2024-02-29 17:00:00+00", "2024-12-31 17:00:00+00",
    "2025-03-31 16:59:59.5+00", "2025-06-30 23:59:59+07", "2026-11-22 08:15:42.123456+07",
]
BUCKETS = (
    "SELECT w::text, ts, time_bucket(w, ts), time_bucket(w, ts, 'Asia/Ho_Chi_Minh'),"
    " time_bucket(w, ts, 'UTC')"
    " FROM unnest(%s::interval[]) w, unnest(%s::timestamptz[]) ts ORDER BY 1, 2"
)


def buckets(settings: Settings, zone: str) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
        rows = conn.execute(BUCKETS, (WIDTHS, STAMPS)).fetchall()
    return [(w, *(t.astimezone(UTC) for t in stamps)) for w, *stamps in rows]


@pytest.mark.parametrize("session_zone", ["UTC", "Asia/Ho_Chi_Minh", "America/New_York"])
def test_plain_time_bucket_matches_timescaledb(
    ts: Settings, postgres: Postgres, session_zone: str
) -> None:
    plain = fresh_settings(postgres.url)
    migrate(plain)
    with connect(plain) as conn:
        assert not conn.execute(  # the plain server really has no TimescaleDB
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchall()
    expected = buckets(ts, session_zone)
    assert len(expected) == len(WIDTHS) * len(STAMPS)
    assert buckets(plain, session_zone) == expected
    # Spot checks computed by hand: weeks start on Monday, local months in Hanoi time (+07).
    found = {(w, t): (b, local) for w, t, b, local, _ in expected}
    end_jan = datetime(2024, 1, 31, 23, 30, tzinfo=UTC)
    assert found["7 days", end_jan][0] == datetime(2024, 1, 29, tzinfo=UTC)
    assert found["1 mon", end_jan] == (datetime(2024, 1, 1, tzinfo=UTC),
                                       datetime(2024, 1, 31, 17, tzinfo=UTC))
    leap = datetime(2024, 2, 29, 17, tzinfo=UTC)  # 2024-03-01 00:00 in Hanoi
    assert found["1 mon", leap] == (datetime(2024, 2, 1, tzinfo=UTC),
                                    datetime(2024, 2, 29, 17, tzinfo=UTC))
    assert found["3 mons", leap] == (datetime(2024, 1, 1, tzinfo=UTC),
                                     datetime(2023, 12, 31, 17, tzinfo=UTC))


def test_kpi_functions_run_on_timescaledb(ts: Settings) -> None:
    now = datetime.now(UTC)
    dossiers = [  # code, status, channel, digitized, received, due, finished
        ("D1", 10, 2, True, now - timedelta(days=3), now - timedelta(days=1),
         now - timedelta(days=2)),                                     # finished on time, online
        ("D2", 2, 1, False, now - timedelta(days=5), now - timedelta(hours=2), None),  # late
        ("D3", 3, 1, None, now - timedelta(days=1), None, None),       # refused
    ]
    with connect(ts, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO dossiers (dossier_code, province_code, agency_code, status, channel,"
            " digitized, received_at, due_at, finished_at, first_occurred_at, last_occurred_at,"
            " events) VALUES (%s, '01', 'A1', %s, %s, %s, %s, %s, %s, %s, %s, 1)",
            [(*d, d[4], d[4]) for d in dossiers],
        )
        cursor = conn.execute("SELECT * FROM kpi_dossiers()")
        kpis, names = cursor.fetchone(), [c.name for c in cursor.description or []]
        recent = conn.execute(
            "SELECT received, to_handle FROM kpi_dossiers(since => now() - interval '4 days')"
        ).fetchone()
    assert kpis is not None
    got = dict(zip(names, kpis, strict=True))
    assert got == {
        "received": 3, "to_handle": 2, "finished": 1, "finished_on_time": 1, "finished_late": 0,
        "in_process": 1, "late_in_process": 1, "due_soon": 0, "not_yet_due": 0, "online": 1,
        "digitized": 1, "with_fee": 0, "paid_online": 0, "dissatisfied_or_late": 1, "evaluated": 0,
        "on_time_rate": Decimal("50.00"), "online_rate": Decimal("33.33"),
        "digitized_rate": Decimal("33.33"), "paid_online_rate": None,
        "satisfaction_rate": Decimal("50.00"),
    }
    assert recent == (2, 1)  # D1 and D3 were received in the last four days


def test_worker_store_on_timescaledb_gives_exact_kpis(ts: Settings) -> None:
    """The worker's write path (events hypertable ON CONFLICT, state, rollup hypertable,
    continuous aggregates) on the real extension: same exact KPIs as on plain PostgreSQL."""
    from tests.support import scenario
    from tests.support.checks import assert_counted_once, assert_kpis, assert_rollups
    from tests.support.store import load

    sc = scenario.build(seed=31, dossiers=60, documents=40, reports=30, malformed=False)
    load(ts, sc, replay=True)  # a replay changes nothing
    assert_kpis(ts, sc)
    assert_rollups(ts, sc)
    assert_counted_once(ts)
