"""Pipeline benchmark on the embedded stack, on either broker (run on demand; not a test).

    .venv/bin/python bench/pipeline.py [--broker both] [--workers 1 2] [--partitions 8]
        [--events 40000] [--rate 1000] [--seconds 20] [--preload 1000000 10000000]
        [--panels 10] [--json]

For each broker and each worker count, in one run on fresh servers and a fresh schema:
- throughput: events/s from the first publish until the last event is visible in the
  events table, the state tables and the rollups (one transaction makes all three visible);
- the baseline (once per broker): raw aiokafka consume + batched COPY of the same events;
- freshness: p50/p95/p99 from publish to visible at a steady rate (the workers' histograms);
- each worker's peak resident memory, and the workers' CPU once idle;
- growth (`--preload`): the write rate with that many events stored first, against empty;
  with `--panels`, then every dashboard query on the largest of them (bench/panels.py).
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from panels import measure as time_panels  # bench/ is the script's folder
from panels import verdicts
from rich.console import Console
from rich.table import Table
from synthetic import load as store_synthetic
from synthetic import start_tuned

from connectors.simulator import Message, Simulator
from ioc.core.db import connect, migrate
from ioc.core.lag import SOURCE_TOPICS
from ioc.core.logs import configure
from ioc.core.settings import Settings, default_cache_dir
from ioc.core.topics import ensure_topics
from ioc.embedded import broker as brokers
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres, free_port

console = Console(stderr=True)



def generate(count: int, seed: int) -> list[Message]:
    """`count` valid events of all three kinds from the province simulator, newest last."""
    sim = Simulator(seed=seed, rate=2.0, start=datetime.now(UTC) - timedelta(days=20),
                    late_share=0, duplicate_share=0, malformed_share=0)
    messages: list[Message] = []
    clock = sim.start
    while len(messages) < count:
        clock += 6 * 3600
        if clock > time.time():
            raise SystemExit(f"the simulator made only {len(messages)} events; lower --events")
        messages += sim.advance(datetime.fromtimestamp(clock, UTC))
    return messages[:count]


def restamp(value: bytes) -> bytes:
    """ingested_at = now, so the worker's freshness histogram measures publish to visible."""
    event = json.loads(value)
    event["ingested_at"] = datetime.now(UTC).isoformat()
    return json.dumps(event).encode()


async def publish(settings: Settings, messages: list[Message], rate: float | None = None,
                  stamp: bool = False) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        pending = []
        for i, (topic, key, value) in enumerate(messages):
            if rate is not None:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(settings.topic(topic),
                                               restamp(value) if stamp else value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def stored(settings: Settings) -> int:
    with connect(settings) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


STAGES = ("take", "validate", "dedupe", "encode", "write events", "fold", "write state",
          "write rollups", "commit")
# Stages that await the broker or the database: other agents run meanwhile, so their thread
# CPU is not theirs alone (the worker's CPU per event, measured whole, is the honest figure).
AWAITING = {"take", "write events", "write state", "write rollups", "commit"}


def stage_seconds(settings: Settings) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU seconds per hot-path stage, summed over the workers (their heartbeats)."""
    with connect(settings) as conn:
        rows = conn.execute("SELECT counters FROM worker_status").fetchall()
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for (counters,) in rows:
        for total, key in ((wall, "stage_seconds"), (cpu, "stage_cpu_seconds")):
            for stage, seconds in counters.get(key, {}).items():
                total[stage] = total.get(stage, 0) + seconds
    return wall, cpu


def process_cpu(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of the processes and their children so far."""
    total = 0.0
    for p in procs:
        try:
            for q in (p, *p.children(recursive=True)):
                total += sum(q.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def freshness_buckets(settings: Settings) -> dict[str, float]:
    """The freshness histogram of every worker, summed."""
    with connect(settings) as conn:
        rows = conn.execute("SELECT counters FROM worker_status").fetchall()
    total: dict[str, float] = {}
    for (counters,) in rows:
        for le, n in counters.get("freshness_buckets", {}).items():
            total[le] = total.get(le, 0) + n
    return total


async def _group_ready(settings: Settings, workers: int) -> bool:
    """`workers` members in a stable group, each with partitions (no rebalance to come)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.app_id])
    except KafkaError:  # no coordinator yet: the offsets topic is being created
        return False
    finally:
        await admin.close()
    (group,) = response.groups
    state, members = group[2], group[5]
    return state == "Stable" and len(members) == workers and all(m[4] for m in members)


def wait_group(settings: Settings, workers: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not asyncio.run(_group_ready(settings, workers)):
        if time.monotonic() > deadline:
            raise SystemExit(f"{workers} workers did not form a group within {timeout:.0f} s")
        time.sleep(0.5)


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(pid), 0, True

    def run(self) -> None:
        while self.running:
            try:
                rss = self.process.memory_info().rss
                rss += sum(c.memory_info().rss for c in self.process.children(recursive=True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.2)


def cpu_seconds(procs: list[subprocess.Popen[bytes]], seconds: float) -> float:
    """CPU the processes use together over `seconds` of wall time."""
    ps = [psutil.Process(proc.pid) for proc in procs]
    before = sum(sum(p.cpu_times()[:2]) for p in ps)
    time.sleep(seconds)
    return sum(sum(p.cpu_times()[:2]) for p in ps) - before


def wait_stored(settings: Settings, total: int, what: str, poll: float = 0.05) -> None:
    shown = time.monotonic()
    while (done := stored(settings)) < total:
        if time.monotonic() - shown > 5:
            console.print(f"  {what}: {done:,}/{total:,} stored")
            shown = time.monotonic()
        time.sleep(poll)


async def baseline(settings: Settings, total: int, group: str) -> float:
    """The ceiling: consume every source topic and COPY the raw events, no validation."""
    topics = [settings.topic(n) for n in SOURCE_TOPICS]
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000)
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=False)
    table = f"{settings.database_schema}.baseline"
    await conn.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} (key text, value jsonb)")
    await conn.commit()
    await consumer.start()
    copied, started = 0, time.monotonic()
    try:
        while copied < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            async with conn.cursor() as cur, cur.copy(
                    f"COPY {table} (key, value) FROM STDIN") as copy:
                for r in records:
                    await copy.write_row((r.key.decode(), r.value.decode()))
            await conn.commit()
            await consumer.commit()
            copied += len(records)
        return copied / (time.monotonic() - started)
    finally:
        await consumer.stop()
        await conn.close()


def quantile(buckets: dict[str, float], q: float) -> float:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted((float(le), n) for le, n in buckets.items())
    total = bounds[-1][1]
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def run_pipeline(kind: str, broker: Broker, postgres: Postgres, workers: int,
                 messages: list[Message], steady: list[Message], args: argparse.Namespace,
                 root: Path, with_baseline: bool, preload: int = 0) -> dict:
    """One measurement: `workers` `ioc worker` processes (static members, as docker-compose
    runs them) on a fresh schema, topics and consumer group. With `preload`, that many
    synthetic events (and their state and rollups) are stored first and freshness is skipped:
    does the write rate hold as the tables grow?"""
    tag = f"{kind.replace('-', '_')}_{workers}" + (f"_{preload}" if preload else "")
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{broker.port}",
                        database_url=postgres.url, database_schema=f"bench_{tag}",
                        topic_prefix=f"bench.{tag}.", app_id=f"bench-{tag}",
                        partitions=args.partitions, batch_size=args.batch_size,
                        heartbeat_seconds=1, topic_retention_hours=2,
                        **broker.client_settings())
    migrate(settings)
    with_panels = bool(preload and args.panels and preload == max(args.preload))
    if preload:
        console.print(f"{kind}: preloading {preload:,} events…")
        store_synthetic(settings, preload, days=365)
        preload = stored(settings)  # the loader's plan rounds: what it stored
    asyncio.run(ensure_topics(settings))
    load = os.getloadavg()[0]  # other work on the machine: the figures' context
    env = settings.as_env()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(1, workers + 1):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ioc", "worker"],
                env={**env, "IOC_WORKER_INSTANCE_ID": f"bench-{tag}-{n}"},
                stdout=(root / f"worker-{tag}-{n}.log").open("wb"), stderr=subprocess.STDOUT))
        watches = [RssWatch(proc.pid) for proc in procs]
        for watch in watches:
            watch.start()
        wait_group(settings, workers)

        console.print(f"{kind}, {workers} worker(s): throughput…")
        groups = {"worker": [psutil.Process(p.pid) for p in procs],
                  "postgres": [psutil.Process(postgres.proc.pid)],  # type: ignore[union-attr]
                  "broker": [psutil.Process(broker.proc.pid)]}  # type: ignore[union-attr]
        cpu_before = {name: process_cpu(ps) for name, ps in groups.items()}
        stages_before = stage_seconds(settings)
        started = time.monotonic()
        asyncio.run(publish(settings, messages))
        published = time.monotonic() - started
        # count(*) of millions of rows costs PostgreSQL: poll less often when preloaded
        wait_stored(settings, preload + len(messages), "throughput", 0.5 if preload else 0.05)
        elapsed = time.monotonic() - started
        pipeline_eps = len(messages) / elapsed
        cpu_us = {name: round(1e6 * (process_cpu(ps) - cpu_before[name]) / len(messages), 1)
                  for name, ps in groups.items()}

        time.sleep(2 * settings.heartbeat_seconds)  # a heartbeat after the last batch
        stages_after = stage_seconds(settings)
        stages_us = {
            what: {stage: round(1e6 * (after.get(stage, 0) - before.get(stage, 0))
                                / len(messages), 1) for stage in STAGES}
            for what, before, after in zip(("wall", "cpu"), stages_before, stages_after,
                                           strict=True)}
        idle = cpu_seconds(procs, 5) / 5

        if preload:
            steady = []
        console.print(f"{kind}, {workers} worker(s): freshness at {args.rate:.0f} events/s "
                      f"for {args.seconds:.0f} s…")
        before = freshness_buckets(settings)
        asyncio.run(publish(settings, steady, rate=args.rate, stamp=True))
        wait_stored(settings, preload + len(messages) + len(steady), "freshness",
                    0.5 if preload else 0.05)
        time.sleep(2 * settings.heartbeat_seconds)  # the heartbeats carrying the last counts
        after = freshness_buckets(settings)
        window = {le: after[le] - before.get(le, 0) for le in after}
        window = window if any(window.values()) else {"+Inf": 0}
        for watch in watches:
            watch.running = False
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    panels = None
    if with_panels:
        console.print(f"every dashboard query on {preload + len(messages) + len(steady):,} "
                      "events…")
        panels = verdicts(time_panels(settings, args.panels, budget=5))
    baseline_eps = None
    if with_baseline:
        console.print(f"{kind}: baseline, raw consume + COPY…")
        baseline_eps = asyncio.run(baseline(settings, len(messages) + len(steady),
                                            f"baseline-{tag}"))
    return {
        "broker": kind,
        "workers": workers,
        "partitions": args.partitions,
        "events": len(messages),
        "preloaded_events": preload,
        "publish_events_per_s": round(len(messages) / published),
        "pipeline_events_per_s": round(pipeline_eps),
        "baseline_events_per_s": round(baseline_eps) if baseline_eps else None,
        "freshness_p50_s": None if preload else round(quantile(window, 0.50), 3),
        "freshness_p95_s": None if preload else round(quantile(window, 0.95), 3),
        "freshness_p99_s": None if preload else round(quantile(window, 0.99), 3),
        "worker_rss_mb": max(round(w.peak / 2**20) for w in watches),
        "idle_cpu_percent": round(100 * idle, 1),
        "load_before": round(load, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "cpu_us_per_event": cpu_us,  # during the throughput phase, publisher excluded
        "stage_wall_us_per_event": stages_us["wall"],
        "stage_cpu_us_per_event": stages_us["cpu"],
        # With --panels, on the largest preload: per dashboard, its queries' worst p95 (ms)
        # and whether every one meets 100 ms (bench/panels.py; "last 24 h"/"today"/"30 days").
        "panels": panels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=1000, help="steady rate for freshness")
    parser.add_argument("--seconds", type=float, default=20, help="freshness window")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--broker", choices=[*brokers.KINDS, "both"],
                        help="default: the one `ioc up` would run")
    parser.add_argument("--preload", type=int, nargs="*", default=[],
                        help="growth: also measure one worker with this many events stored first"
                             " (first broker; e.g. 1000000 10000000)")
    parser.add_argument("--panels", type=int, default=0, metavar="REPEAT",
                        help="after the largest preload, time every dashboard query REPEAT times")
    parser.add_argument("--shared-buffers", default="1GB", help="PostgreSQL's, as in production")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure("WARNING")  # logs on stderr, and few: stdout carries the figures (--json)

    kinds = list(brokers.KINDS) if args.broker == "both" else [
        args.broker or brokers.choose("auto", default_cache_dir()).kind]
    console.print(f"generating {args.events:,} events…")
    messages = generate(args.events, seed=1)
    steady = generate(int(args.rate * args.seconds) + len(messages), seed=2)[len(messages):]

    root = Path(tempfile.mkdtemp(prefix="ioc-bench-"))
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    results: list[dict] = []
    try:
        start_tuned(postgres, args.shared_buffers)
        for kind in kinds:
            broker = brokers.make(kind, free_port(), root, default_cache_dir(),  # type: ignore[arg-type]
                                  progress=console.print)
            try:
                broker.start()
                rows = [run_pipeline(kind, broker, postgres, workers, messages, steady, args,
                                     root, with_baseline=i == 0)
                        for i, workers in enumerate(args.workers)]
                if kind == kinds[0]:
                    rows += [run_pipeline(kind, broker, postgres, 1, messages, steady, args,
                                          root, with_baseline=False, preload=n)
                             for n in args.preload if n]
            finally:
                broker.stop()
            for row in rows:  # one baseline per broker: the same events, the same machine
                row["baseline_events_per_s"] = rows[0]["baseline_events_per_s"]
                row["ratio"] = round(row["pipeline_events_per_s"]
                                     / row["baseline_events_per_s"], 3)
            results += rows
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    machine = f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    empty = next(r for r in results if r["workers"] == 1 and not r["preloaded_events"])
    for row in results:  # growth: the write rate against the same broker's empty tables
        if row["preloaded_events"]:
            row["rate_vs_empty"] = round(row["pipeline_events_per_s"]
                                         / empty["pipeline_events_per_s"], 3)
    if args.json:
        print(json.dumps({"machine": machine, "results": results}))
        return
    table = Table(title=f"IOC pipeline benchmark (embedded stack; {machine}; "
                        f"{args.partitions} partitions, {args.events:,} events)")
    columns = [("broker", "broker"), ("workers", "workers"), ("preloaded_events", "preloaded"),
               ("pipeline_events_per_s", "pipeline ev/s"),
               ("baseline_events_per_s", "consume→COPY ev/s"), ("ratio", "ratio"),
               ("freshness_p50_s", f"fresh p50 s @{args.rate:.0f}/s"),
               ("freshness_p95_s", "fresh p95 s"), ("worker_rss_mb", "RSS MB/worker"),
               ("idle_cpu_percent", "idle CPU %"), ("load_before", "load before")]
    for _, title in columns:
        table.add_column(title, justify="right")
    for row in results:
        table.add_row(*(f"{row[key]:,}" if isinstance(row[key], int) else str(row[key])
                        for key, _ in columns))
        if row["preloaded_events"]:
            table.add_row("", "", "", f"{row['rate_vs_empty']:.0%} of empty")
    Console(width=200).print(table)
    stages = Table(title="µs per event, throughput phase: worker stages (wall / thread CPU; "
                         "awaiting stages wall only), then each process's CPU")
    stages.add_column("broker, workers")
    for stage in STAGES:
        stages.add_column(stage, justify="right")
    for name in ("worker", "postgres", "broker"):
        stages.add_column(f"{name} CPU", justify="right")
    for row in results:
        wall, cpu = row["stage_wall_us_per_event"], row["stage_cpu_us_per_event"]
        stages.add_row(f"{row['broker']}, {row['workers']}",
                       *(f"{wall[s]:.1f}" if s in AWAITING else f"{wall[s]:.1f} / {cpu[s]:.1f}"
                         for s in STAGES),
                       *(f"{row['cpu_us_per_event'][n]:.0f}"
                         for n in ("worker", "postgres", "broker")))
    Console(width=250).print(stages)


if __name__ == "__main__":
    main()
