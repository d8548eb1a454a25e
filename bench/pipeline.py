"""Pipeline benchmark on the embedded stack (run on demand; not a test).

    .venv/bin/python bench/pipeline.py [--events 200000] [--rate 1000] [--seconds 30] [--json]

Measures, in one run on fresh servers:
- throughput: events/s from the first publish until the last event is visible in the
  events table, the state tables and the rollups (one transaction makes all three visible);
- the baseline: raw aiokafka consume + batched COPY of the same events into PostgreSQL;
- freshness: p50/p95/p99 from publish to visible at a steady rate (the worker's histogram);
- the worker's peak resident memory.
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
from rich.console import Console
from rich.table import Table

from connectors.simulator import Message, Simulator
from ioc import broker as brokers
from ioc.db import connect, migrate
from ioc.embedded import Postgres
from ioc.settings import Settings, default_cache_dir
from ioc.topics import ensure_topics

console = Console(stderr=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def worker_counters(settings: Settings) -> dict:
    with connect(settings) as conn:
        row = conn.execute("SELECT counters FROM worker_status").fetchone()
    return row[0] if row else {}


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


def cpu_seconds(proc: subprocess.Popen[bytes], seconds: float) -> float:
    """CPU the process uses over `seconds` of wall time."""
    p = psutil.Process(proc.pid)
    before = sum(p.cpu_times()[:2])
    time.sleep(seconds)
    return sum(p.cpu_times()[:2]) - before


def wait_stored(settings: Settings, total: int, what: str) -> None:
    shown = time.monotonic()
    while (done := stored(settings)) < total:
        if time.monotonic() - shown > 5:
            console.print(f"  {what}: {done:,}/{total:,} stored")
            shown = time.monotonic()
        time.sleep(0.05)


async def baseline(settings: Settings, total: int, group: str) -> float:
    """The ceiling: consume every source topic and COPY the raw events, no validation."""
    topics = [settings.topic(n) for n in ("dossiers", "documents", "field_reports")]
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000)
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=False)
    await conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS public.baseline"
                       " (key text, value jsonb)")
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
                    "COPY public.baseline (key, value) FROM STDIN") as copy:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1000, help="steady rate for freshness")
    parser.add_argument("--seconds", type=float, default=30, help="freshness window")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--broker", choices=brokers.KINDS,
                        help="default: the one `ioc up` would run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ioc-bench-"))
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    kind = args.broker or brokers.choose("auto", default_cache_dir()).kind
    broker = brokers.make(kind, free_port(), root, default_cache_dir(), progress=console.print)
    worker: subprocess.Popen[bytes] | None = None
    try:
        postgres.start()
        broker.start()
        settings = Settings(kafka_bootstrap=f"127.0.0.1:{broker.port}",
                            database_url=postgres.url, database_schema="bench",
                            topic_prefix="bench.", app_id="bench", worker_instance_id="bench-1",
                            partitions=args.partitions, batch_size=args.batch_size,
                            heartbeat_seconds=1, topic_retention_hours=2,
                            **broker.client_settings())
        migrate(settings)
        asyncio.run(ensure_topics(settings))
        console.print(f"generating {args.events:,} events…")
        messages = generate(args.events, seed=1)
        steady = generate(int(args.rate * args.seconds) + len(messages), seed=2)[len(messages):]

        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        env.update({f"IOC_{k.upper()}": str(v) for k, v in settings.model_dump().items()})
        worker = subprocess.Popen([sys.executable, "-m", "ioc", "worker"], env=env,
                                  stdout=(root / "worker.log").open("wb"),
                                  stderr=subprocess.STDOUT)
        rss = RssWatch(worker.pid)
        rss.start()
        while not worker_counters(settings):
            time.sleep(0.2)

        console.print("throughput: publishing and waiting until visible…")
        started = time.monotonic()
        asyncio.run(publish(settings, messages))
        published = time.monotonic() - started
        wait_stored(settings, len(messages), "throughput")
        pipeline_eps = len(messages) / (time.monotonic() - started)

        time.sleep(2 * settings.heartbeat_seconds)  # a heartbeat after the last batch
        idle = cpu_seconds(worker, 5) / 5

        console.print(f"freshness: {args.rate:.0f} events/s for {args.seconds:.0f} s…")
        before = worker_counters(settings).get("freshness_buckets", {})
        asyncio.run(publish(settings, steady, rate=args.rate, stamp=True))
        wait_stored(settings, len(messages) + len(steady), "freshness")
        time.sleep(2 * settings.heartbeat_seconds)  # the heartbeat carrying the last counts
        after = worker_counters(settings)["freshness_buckets"]
        window = {le: after[le] - before.get(le, 0) for le in after}
        rss.running = False

        console.print("baseline: raw consume + COPY…")
        baseline_eps = asyncio.run(baseline(settings, len(messages) + len(steady), "baseline"))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    result = {
        "broker": kind,
        "events": len(messages),
        "publish_events_per_s": round(len(messages) / published),
        "pipeline_events_per_s": round(pipeline_eps),
        "baseline_events_per_s": round(baseline_eps),
        "ratio": round(pipeline_eps / baseline_eps, 3),
        "freshness_p50_s": round(quantile(window, 0.50), 3),
        "freshness_p95_s": round(quantile(window, 0.95), 3),
        "freshness_p99_s": round(quantile(window, 0.99), 3),
        "worker_rss_mb": round(rss.peak / 2**20),
        "worker_idle_cpu_percent": round(100 * idle, 1),
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
    }
    if args.json:
        print(json.dumps(result))
        return
    table = Table(title="IOC pipeline benchmark (embedded stack)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
