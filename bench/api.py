"""API benchmark on the embedded stack (run on demand; not a test): Open311 report POSTs.

    .venv/bin/python bench/api.py [--seconds 10] [--max-requests 30000] [--keys 8] [--json]
        [--api-workers 1] [--worker-during-load] [--profile DIR]

One `ioc api` process (`--api-workers N`: `ioc api --workers N`) and one `ioc worker` on
fresh embedded servers. The worker starts once the load levels are done (with
`--worker-during-load`, from the start): on a two-core machine, a worker draining the reports
as they arrive takes the cores the API is measured on; production runs them apart.
For 16 and then 64 concurrent clients (keep-alive connections, the keys taken in turn),
valid report POSTs for `--seconds` (at most `--max-requests`):
requests/s, p50/p95/p99 latency, errors and the API process's CPU time per accepted request
(user + system, from psutil: the figure that stays comparable on a shared machine, where
wall-clock rates move with the neighbours' load). `--profile DIR` records each level with
py-spy (collapsed stacks, DIR/api-<clients>.txt). Then a
valid caller's latency alone and while 32 connections send wrong secrets for a known key id.
Last, exactly-once: every accepted service_request_id, once the worker stored them, is one
row of field_reports made of one event, and the events table holds one event for it.
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from rich.console import Console
from rich.table import Table

from ioc.api.keys import create_key
from ioc.core.db import connect, migrate
from ioc.core.logs import configure
from ioc.core.settings import Settings, default_cache_dir
from ioc.core.topics import ensure_topics
from ioc.embedded import broker as brokers
from ioc.embedded.servers import Postgres, free_port

console = Console(stderr=True)
URL = "/open311/v2/requests.json"
VIET_TRI = (21.3227, 105.4019)



def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of `ioc api` and its uvicorn workers (with --api-workers)."""
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def load(base: str, keys: list[str], clients: int, seconds: float,
               limit: int) -> dict[str, Any]:
    """`clients` loops POSTing valid reports until `seconds` pass or `limit` are sent."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    accepted: list[str] = []
    sent = 0
    deadline = time.monotonic() + seconds

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent
        i = n
        while time.monotonic() < deadline and sent < limit:
            sent += 1
            i += clients
            body = {"service_code": "GT-01", "lat": VIET_TRI[0] + (i % 100) * 1e-4,
                    "long": VIET_TRI[1] - (i % 70) * 1e-4}
            started = time.perf_counter()
            try:
                async with session.post(URL, json=body, headers={
                        "authorization": f"Bearer {keys[i % len(keys)]}"}) as response:
                    answer = await response.read()
                    status = response.status
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            if status == 200:
                accepted.append(json.loads(answer)[0]["service_request_id"])
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(n, session) for n in range(clients)))
        elapsed = time.monotonic() - started
    return {"clients": clients, "requests": len(latencies) + sum(
                v for k, v in errors.items() if not k.isdigit()),
            "requests_per_s": round(len(latencies) / elapsed),
            "p50_ms": round(1000 * quantile(latencies, 0.50), 1),
            "p95_ms": round(1000 * quantile(latencies, 0.95), 1),
            "p99_ms": round(1000 * quantile(latencies, 0.99), 1),
            "errors": errors, "accepted": accepted}


async def flood(base: str, good: str, seconds: float) -> dict[str, Any]:
    """A valid caller's latencies alone, then while 32 connections (from 127.0.0.2) send
    wrong secrets for the caller's key id."""
    key_id = good.split("_")[1]

    async def caller(session: aiohttp.ClientSession, until: float) -> list[float]:
        times = []
        while time.monotonic() < until:
            started = time.perf_counter()
            async with session.post(URL, json={"service_code": "GT-01", "lat": VIET_TRI[0],
                                               "long": VIET_TRI[1]},
                                    headers={"authorization": f"Bearer {good}"}) as response:
                await response.read()
                if response.status == 200:
                    times.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
        return times

    statuses: dict[int, int] = {}

    async def attacker(session: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            wrong = f"ioc_{key_id}_{secrets.token_urlsafe(32)}"
            async with session.post(URL, json={"service_code": "GT-01"},
                                    headers={"authorization": f"Bearer {wrong}"}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    # The attacker comes from another loopback address, as it would from another host.
    hostile = aiohttp.TCPConnector(limit=32, local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(base) as session, \
            aiohttp.ClientSession(base, connector=hostile) as attackers:
        alone = await caller(session, time.monotonic() + seconds)
        until = time.monotonic() + seconds
        results = await asyncio.gather(caller(session, until),
                                       *(attacker(attackers, until) for _ in range(32)))
    during = results[0]
    return {"valid_median_ms_alone": round(1000 * statistics.median(alone), 1),
            "valid_median_ms_flood": round(1000 * statistics.median(during), 1),
            "valid_p95_ms_flood": round(1000 * quantile(during, 0.95), 1),
            "flood_answers": {str(k): v for k, v in sorted(statuses.items())}}


def exactly_once(settings: Settings, ids: list[str], timeout: float) -> dict[str, Any]:
    """Wait for the worker to store every accepted id, then count rows and events."""
    deadline = time.monotonic() + timeout
    with connect(settings) as conn:
        while True:
            (stored,) = conn.execute("SELECT count(*) FROM field_reports WHERE"
                                     " service_request_id = ANY(%s)", (ids,)).fetchone() or (0,)
            if stored == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(1)
        (events,) = conn.execute("SELECT count(*) FROM events WHERE kind = 'field_report' AND"
                                 " entity_id = ANY(%s)", (ids,)).fetchone() or (0,)
        (folded,) = conn.execute("SELECT count(*) FROM field_reports WHERE"
                                 " service_request_id = ANY(%s) AND events = 1",
                                 (ids,)).fetchone() or (0,)
    return {"accepted": len(ids), "distinct": len(set(ids)), "stored": stored,
            "events": events, "one_event_each": folded,
            "ok": len(set(ids)) == len(ids) == stored == events == folded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per concurrency level")
    parser.add_argument("--max-requests", type=int, default=30_000, help="per level")
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--broker", choices=brokers.KINDS,
                        help="default: the one `ioc up` would run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker-during-load", action="store_true",
                        help="run the worker while the load levels run (it shares the cores)")
    parser.add_argument("--api-workers", type=int, default=1,
                        help="`ioc api --workers N` (the targets are for one process)")
    parser.add_argument("--profile", type=Path, help="py-spy each level into this folder")
    args = parser.parse_args()

    configure("WARNING")  # stdout carries the table or the JSON only
    kind = args.broker or brokers.choose("auto", default_cache_dir()).kind
    root = Path(tempfile.mkdtemp(prefix="ioc-bench-api-"))
    postgres = Postgres(port=free_port(), data_dir=root / "postgres")
    broker = brokers.make(kind, free_port(), root, default_cache_dir(),  # type: ignore[arg-type]
                          progress=console.print)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        broker.start()
        port = free_port()
        settings = Settings(kafka_bootstrap=broker.bootstrap, **broker.client_settings(),
                            database_url=postgres.url, database_schema="bench",
                            topic_prefix="bench.", app_id="bench", worker_instance_id="bench-1",
                            partitions=4, heartbeat_seconds=1, topic_retention_hours=2,
                            api_port=port, api_rate_per_minute=1e9,
                            api_key_pepper=secrets.token_urlsafe(32), log_level="WARNING")
        migrate(settings)
        asyncio.run(ensure_topics(settings))
        keys = [create_key(settings, f"app-{n}", ["reports:create"])[1]
                for n in range(args.keys)]
        env = settings.as_env()
        def start(*command: str) -> None:
            procs.append(subprocess.Popen([sys.executable, "-m", "ioc", *command], env=env,
                                          stdout=(root / f"{command[0]}.log").open("wb"),
                                          stderr=subprocess.STDOUT))

        start("api", "--workers", str(args.api_workers))
        if args.worker_during_load:
            start("worker")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit((root / "api.log").read_text()[-3000:])
            time.sleep(0.2)
        asyncio.run(load(base, keys, 4, 3, 500))  # warm-up: producer, key cache, pool
        levels = []
        accepted: list[str] = []
        api = psutil.Process(procs[0].pid)
        load_start = os.getloadavg()
        for clients in (16, 64):
            console.print(f"{clients} clients for {args.seconds:g} s…")
            spy = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen(
                    [spy_bin, "record", "--pid", str(api.pid), "--rate", "200", "--format", "raw",
                     "--nonblocking", "-o", str(args.profile / f"api-{clients}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu, wall = cpu_seconds(api), time.monotonic()
            result = asyncio.run(load(base, keys, clients, args.seconds, args.max_requests))
            cpu, wall = cpu_seconds(api) - cpu, time.monotonic() - wall
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            result["api_cpu_ms_per_request"] = round(
                1000 * cpu / max(1, len(result["accepted"])), 3)
            result["api_cpu_share"] = round(cpu / wall, 2)  # of one core
            accepted += result.pop("accepted")
            levels.append(result)
        if not args.worker_during_load:
            start("worker")
        console.print("a valid caller, alone and during a wrong-secret flood…")
        flooded = asyncio.run(flood(base, keys[0], 5))
        console.print("exactly-once: waiting for the worker to store every accepted id…")
        once = exactly_once(settings, accepted, timeout=180)
        load_avg = os.getloadavg()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    result = {"api_processes": args.api_workers, "worker_during_load": args.worker_during_load,
              "levels": levels, "flood": flooded,
              "exactly_once": once,
              "machine": f"{psutil.cpu_count()} cores, load average"
                         f" {load_start[0]:.1f} at the start, {load_avg[0]:.1f} at the end"}
    if args.json:
        print(json.dumps(result))
        return
    table = Table(title="IOC API benchmark: Open311 report POSTs, "
                        f"{args.api_workers} API process{'es' if args.api_workers > 1 else ''}")
    for column in ("clients", "requests", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                   "API CPU ms/request", "API CPU, cores"):
        table.add_column(column, justify="right")
    for level in levels:
        table.add_row(*(str(level[k]) for k in ("clients", "requests", "requests_per_s",
                                                 "p50_ms", "p95_ms", "p99_ms")),
                      json.dumps(level["errors"]) if level["errors"] else "0",
                      str(level["api_cpu_ms_per_request"]), str(level["api_cpu_share"]))
    Console(width=max(Console().width, 120)).print(table)
    Console().print(f"flood: {flooded}")
    Console().print(f"exactly-once: {once}")
    Console().print(result["machine"])
    if not once["ok"]:
        raise SystemExit("exactly-once check FAILED")


if __name__ == "__main__":
    main()
