"""HTTP API of the monitor: liveness, readiness and Prometheus metrics.

The API owns no data: it reads the broker (consumer lag) and the `worker_status` table the
worker keeps up to date, so that one scrape shows whether events flow from Kafka to PostgreSQL.
Every dependency is asked with a short timeout: a probe must answer even when one is down.
"""

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, TypeVar

import psycopg
import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from ioc.api import keys
from ioc.api.alerts import alerts_router
from ioc.api.auth import BodySizeLimit, FailedAuthGate, KeyRing, RateLimiter, _error_body
from ioc.api.connector_metrics import ConnectorRow, connector_families, connector_rows
from ioc.api.ingest import ingest_body_limits, ingest_router
from ioc.api.open311 import discovery_router, http_errors, open311_router
from ioc.api.open311_updates import status_updates_router
from ioc.api.publisher import EventPublisher
from ioc.core.db import connect_kwargs
from ioc.core.inputs import nul_in_url
from ioc.core.lag import BrokerUnavailable, broker_metadata, consumer_lag
from ioc.core.settings import Settings

log = structlog.get_logger()

BROKER_TIMEOUT = 2.0  # readiness: metadata request
LAG_TIMEOUT = 3.0  # metrics: offsets of every source partition
POOL_TIMEOUT = 1.0  # waiting for a pooled connection before diagnosing with a direct one
DIRECT_TIMEOUT = 1.5  # the diagnosing connection (libpq's connect_timeout is at least 2 s)
STATEMENT_TIMEOUT_MS = 2000
READY_DEADLINE = 3.0  # /readyz answers within this, whatever a dependency does
CHECK_LIMIT = 30.0  # a check still stuck after this is cancelled (then the next one starts)

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


def heartbeat_limit(settings: Settings) -> float:
    """Seconds after which a worker counts as gone: three missed heartbeats, at least 15 s."""
    return max(3 * settings.heartbeat_seconds, 15.0)


@dataclass
class Check:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass
class WorkerRow:
    instance: str
    started_at: float  # unix time
    age: float  # seconds since the last heartbeat (database clock)
    counters: dict[str, Any]


class DatabaseDown(RuntimeError):
    """The database could not be used; the message is the readiness detail."""


def describe_db_error(settings: Settings, exc: BaseException) -> str:
    """A psycopg error as one short line: where, and what went wrong."""
    info = conninfo_to_dict(settings.database_url)
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    text = str(exc)
    if "Connection refused" in text:
        return f"connection refused at {where}"
    if isinstance(exc, TimeoutError) or "timeout expired" in text:
        return f"no answer from {where} within {DIRECT_TIMEOUT:g} s"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return f"{first.removeprefix('connection failed: ')} ({where})"


class Database:
    """The API's connection pool, opened in the app's lifespan; queries fail fast."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kwargs = connect_kwargs(settings)
        kwargs["options"] = f"{kwargs['options']} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        self.kwargs: dict[str, Any] = {**kwargs, "autocommit": True, "connect_timeout": 2}
        self.pool: AsyncConnectionPool = AsyncConnectionPool(
            settings.database_url,
            kwargs=self.kwargs,
            min_size=1,
            max_size=4,
            open=False,
            timeout=POOL_TIMEOUT,
            check=AsyncConnectionPool.check_connection,  # drop connections a restart broke
            name="ioc-api",
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)  # start even while the database is down

    async def close(self) -> None:
        await self.pool.close(timeout=5)

    async def run(self, query: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        """Run `query` on a pooled connection; when none comes in time, on a direct one,
        whose error then says why (the pool only says it timed out)."""
        try:
            async with self.pool.connection() as conn:
                return await query(conn)
        except PoolTimeout:
            pass
        except psycopg.OperationalError as exc:
            raise DatabaseDown(describe_db_error(self.settings, exc)) from exc
        try:
            async with asyncio.timeout(DIRECT_TIMEOUT):
                conn = await psycopg.AsyncConnection.connect(
                    self.settings.database_url, **self.kwargs
                )
                async with conn:
                    return await query(conn)
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise DatabaseDown(describe_db_error(self.settings, exc)) from exc


async def _readiness_rows(
    conn: psycopg.AsyncConnection[Any], limit: float
) -> tuple[int, int, int, float]:
    """(migrations, workers, fresh workers, newest heartbeat age) or DatabaseDown."""
    try:
        cur = await conn.execute("SELECT count(*) FROM schema_migrations")
        (migrations,) = await cur.fetchone() or (0,)
    except psycopg.errors.UndefinedTable as exc:
        raise DatabaseDown("not migrated: no schema_migrations table (run `ioc db migrate`)") \
            from exc
    cur = await conn.execute(
        "SELECT count(*),"
        " count(*) FILTER (WHERE heartbeat_at > now() - make_interval(secs => %s)),"
        " coalesce(extract(epoch FROM now() - max(heartbeat_at))::float8, -1)"
        " FROM worker_status",
        (limit,),
    )
    workers, fresh, age = await cur.fetchone() or (0, 0, -1.0)
    return migrations, workers, fresh, age


async def _worker_rows(conn: psycopg.AsyncConnection[Any]) -> list[WorkerRow]:
    cur = await conn.execute(
        "SELECT instance_id, extract(epoch FROM started_at)::float8,"
        " extract(epoch FROM now() - heartbeat_at)::float8, counters"
        " FROM worker_status ORDER BY instance_id"
    )
    rows = []
    for instance, started, age, counters in await cur.fetchall():
        if isinstance(counters, str):  # jsonb arrives decoded; text only if someone cast it
            counters = json.loads(counters)
        rows.append(WorkerRow(instance, started, age, counters if isinstance(counters, dict)
                              else {}))
    return rows


async def check_broker(settings: Settings) -> Check:
    try:
        meta = await broker_metadata(settings, timeout=BROKER_TIMEOUT)
    except BrokerUnavailable as exc:
        return Check(False, str(exc))
    brokers = ", ".join(f"{b['host']}:{b['port']}" for b in meta["brokers"]) or "no brokers"
    missing = [settings.topic(n) for n in ("dossiers", "documents", "field_reports")
               if settings.topic(n) not in meta["topics"]]
    detail = f"metadata from {brokers}"
    if missing:
        detail += f"; source topics not created yet: {', '.join(missing)}"
    return Check(True, detail)


async def check_database(db: Database) -> tuple[Check, Check]:
    """Database and worker checks: one query round trip answers both."""
    limit = heartbeat_limit(db.settings)
    try:
        migrations, workers, fresh, age = await db.run(
            lambda conn: _readiness_rows(conn, limit)
        )
    except DatabaseDown as exc:
        return Check(False, str(exc)), Check(False, "unknown: database unavailable")
    except psycopg.Error as exc:
        detail = describe_db_error(db.settings, exc)
        return Check(False, detail), Check(False, "unknown: database unavailable")
    if migrations == 0:
        database = Check(False, "not migrated: schema_migrations is empty (run `ioc db migrate`)")
    else:
        database = Check(True, f"{migrations} migrations applied")
    if workers == 0:
        worker = Check(False, "no worker heartbeat yet (worker_status is empty)")
    elif fresh == 0:
        worker = Check(False, f"no worker heartbeat for {max(age, 0):.0f} s "
                              f"(limit {limit:.0f} s)")
    else:
        worker = Check(True, f"{fresh} of {workers} workers alive, "
                             f"last heartbeat {max(age, 0):.0f} s ago")
    return database, worker


@dataclass
class Snapshot:
    """What one scrape read; the collector turns it into metric families."""

    lag: dict[tuple[str, int], int] | None
    workers: list[WorkerRow] | None
    heartbeat_limit: float
    connectors: list[ConnectorRow] | None = None  # connector_status (ioc/api/connector_metrics.py)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _per_key(value: object) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, n in sorted(value.items()):
            number = _number(n)
            if number is not None:
                yield str(key), number


class MonitorCollector(Collector):
    """Exposes the snapshot read at scrape time (consumer lag, worker heartbeats, counters)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # names vary with the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        errors = GaugeMetricFamily(
            "ioc_scrape_error", "1 when this scrape could not read a component",
            labels=["component"])
        errors.add_metric(["broker"], float(snap.lag is None))
        errors.add_metric(["database"], float(snap.workers is None))
        yield errors
        if snap.lag is not None:
            lag = GaugeMetricFamily(
                "ioc_consumer_lag", "Messages the worker's group has not committed yet",
                labels=["topic", "partition"])
            for (topic, partition), value in sorted(snap.lag.items()):
                lag.add_metric([topic, str(partition)], float(value))
            yield lag
        if snap.workers is not None:
            yield from self._workers(snap.workers, snap.heartbeat_limit)
        if snap.connectors is not None:
            yield from connector_families(snap.connectors)

    @staticmethod
    def _workers(rows: list[WorkerRow], limit: float) -> Iterator[Metric]:
        age = GaugeMetricFamily("ioc_worker_heartbeat_age_seconds",
                                "Seconds since the worker's last heartbeat", labels=["instance"])
        up = GaugeMetricFamily("ioc_worker_up", f"1 if the worker's heartbeat is under {limit:g} s"
                               " old", labels=["instance"])
        started = GaugeMetricFamily("ioc_worker_start_time_seconds",
                                    "When the worker started (its counters restart from 0)",
                                    labels=["instance"])
        per_topic = {
            "events_in": CounterMetricFamily(
                "ioc_events_in", "Events the worker read", labels=["instance", "topic"]),
            "events_stored": CounterMetricFamily(
                "ioc_events_stored", "Events the worker stored", labels=["instance", "topic"]),
            "duplicates": CounterMetricFamily(
                "ioc_duplicate_events", "Events already stored (replays)",
                labels=["instance", "topic"]),
            "dead_letters": CounterMetricFamily(
                "ioc_dead_letters", "Events sent to the dead-letter topic",
                labels=["instance", "reason"]),
        }
        batch = SummaryMetricFamily("ioc_batch_write_seconds", "Time to write one batch",
                                    labels=["instance"])
        batch_max = GaugeMetricFamily("ioc_batch_write_seconds_max",
                                      "Longest batch write since the worker started",
                                      labels=["instance"])
        freshness = HistogramMetricFamily(
            "ioc_event_freshness_seconds",
            "From the connector reading an event to the event visible in PostgreSQL",
            labels=["instance"])
        for row in rows:
            labels = [row.instance]
            age.add_metric(labels, max(row.age, 0.0))
            up.add_metric(labels, float(row.age < limit))
            started.add_metric(labels, row.started_at)
            for key, family in per_topic.items():
                for name, value in _per_key(row.counters.get(key)):
                    family.add_metric([*labels, name], value)
            count = _number(row.counters.get("batches"))
            total = _number(row.counters.get("batch_write_seconds_sum"))
            if count is not None or total is not None:
                batch.add_metric(labels, count or 0.0, total or 0.0)
            longest = _number(row.counters.get("batch_write_seconds_max"))
            if longest is not None:
                batch_max.add_metric(labels, longest)
            buckets = list(_per_key(row.counters.get("freshness_buckets")))
            if buckets:
                buckets.sort(key=lambda b: float(b[0]))  # "+Inf" sorts last as inf
                freshness.add_metric(labels, buckets,
                                     _number(row.counters.get("freshness_seconds_sum")) or 0.0)
        yield from (age, up, started, *per_topic.values(), batch, batch_max, freshness)


class RequestCounter:
    """ASGI middleware counting requests by method, route template and status."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server sends if the app fails before starting a response

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # templates: bounded labels
            self.counter.labels(scope["method"], path, str(status)).inc()


class SingleFlight(Generic[T]):
    """One run of `check` at a time, shared by the callers that come meanwhile; each waits at
    most its deadline (None then). A frozen dependency so never piles up stuck checks."""

    def __init__(self, check: Callable[[], Awaitable[T]]) -> None:
        self.check = check
        self.task: asyncio.Task[T] | None = None

    async def _bounded(self) -> T:
        async with asyncio.timeout(CHECK_LIMIT):
            return await self.check()

    async def __call__(self, deadline: float) -> T | None:
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._bounded())
            self.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), deadline)
        except TimeoutError:
            return None


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame of the project's code: enough to find the bug, and no
    message or variable that could hold a caller's data."""
    tb, found = exc.__traceback__, "?"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/site-packages/" not in name and "/lib/python" not in name:
            found = f"{'/'.join(name.split('/')[-2:])}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


class Guard:
    """ASGI middleware, outermost: a request id (X-Request-ID) for every answer; 400 for a NUL
    in the path or query (bad input is not an outage); and for any unhandled exception a
    generic 500 naming the request id, logged as type and place only, never locals, headers,
    bodies or the exception's text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    async def _answer(scope: Scope, send: Callable[[Message], Awaitable[None]], status: int,
                      message: str, request_id: str) -> None:
        if status < 500:
            body = _error_body(scope.get("path", ""), status, message)
        elif scope.get("path", "").startswith("/open311/"):
            body = _error_body(scope["path"], status, f"{message} ({request_id})")
        else:
            body = json.dumps({"detail": message, "request_id": request_id}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        part = nul_in_url(scope.get("path", ""), scope.get("query_string", b""))
        if part is not None:
            await self._answer(scope, send, 400, f"{part}: a NUL character is not accepted",
                               request_id)
            return
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            log.error("unhandled error", request_id=request_id, method=scope.get("method"),
                      route=route, error=type(exc).__name__, at=_where(exc))
            if not started:
                await self._answer(scope, send, 500, "internal error; quote the request id"
                                   " when reporting it", request_id)


def create_app(settings: Settings) -> FastAPI:
    """The API for one settings object; its metrics live in a registry of its own."""
    db = Database(settings)
    registry = CollectorRegistry()
    collector = MonitorCollector()
    registry.register(collector)
    requests = Counter("ioc_api_requests", "HTTP requests the API answered",
                       ["method", "path", "status"], registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        log.info("api started", database=_safe_url(settings), broker=settings.kafka_bootstrap)
        if not keys.pepper(settings):
            log.warning("api keys: IOC_API_KEY_PEPPER is not set; key hashes are unpeppered")
        try:
            yield
        finally:
            await publisher.stop()
            await db.close()
            log.info("api stopped")

    app = FastAPI(title="IOC monitor", lifespan=lifespan)
    app.state.settings = settings
    app.state.database = db
    app.state.registry = registry
    app.state.keyring = KeyRing(settings, db)
    app.state.key_failures = RateLimiter(settings.api_failed_auth_per_minute)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes,
                       per_path=ingest_body_limits(settings),
                       timeout=settings.api_body_timeout_seconds)
    app.add_middleware(FailedAuthGate)
    app.add_middleware(RequestCounter, counter=requests)
    app.add_middleware(Guard)  # outermost: sees every request and every failure

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers; no dependency is asked."""
        return {"status": "ok"}

    database_check = SingleFlight(lambda: check_database(db))

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: broker, database and at least one live worker, within READY_DEADLINE."""
        broker, checked = await asyncio.gather(
            check_broker(settings), database_check(READY_DEADLINE))
        late = Check(False, f"no answer within {READY_DEADLINE:g} s")
        database, worker = checked or (late, Check(False, "unknown: database unavailable"))
        checks = {"broker": broker, "database": database, "worker": worker}
        ready = all(c.ok for c in checks.values())
        if not ready:
            log.info("not ready", **{k: c.detail for k, c in checks.items() if not c.ok})
        return JSONResponse(
            {"status": "ready" if ready else "not ready",
             "checks": {name: c.as_dict() for name, c in checks.items()}},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format, read from the broker and worker_status at scrape time."""
        lag, workers, connectors = await asyncio.gather(
            _read_lag(settings), _read_workers(db), _read_connectors(db))
        # No await from here to the reset: concurrent scrapes never see each other's snapshot.
        collector.snapshot = Snapshot(lag, workers, heartbeat_limit(settings), connectors)
        try:
            body = generate_latest(registry)
        finally:
            collector.snapshot = None
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    publisher = EventPublisher(settings)  # one producer for every route that publishes
    app.include_router(discovery_router(settings))
    app.include_router(open311_router(settings, publisher))
    app.add_exception_handler(StarletteHTTPException, http_errors)
    app.include_router(status_updates_router(settings, publisher))
    app.include_router(alerts_router(settings))
    app.include_router(ingest_router(settings, publisher))
    return app


async def _read_lag(settings: Settings) -> dict[tuple[str, int], int] | None:
    try:
        return await consumer_lag(settings, timeout=LAG_TIMEOUT)
    except BrokerUnavailable as exc:
        log.warning("scrape: broker unavailable", detail=str(exc))
        return None


async def _read_workers(db: Database) -> list[WorkerRow] | None:
    try:
        rows: list[WorkerRow] = await db.run(_worker_rows)
    except DatabaseDown as exc:
        log.warning("scrape: database unavailable", detail=str(exc))
        return None
    except psycopg.Error as exc:
        log.warning("scrape: worker_status unreadable", detail=describe_db_error(db.settings, exc))
        return None
    return rows


async def _read_connectors(db: Database) -> list[ConnectorRow] | None:
    try:
        rows: list[ConnectorRow] = await db.run(connector_rows)
    except (DatabaseDown, psycopg.Error) as exc:  # the database check reports it
        log.warning("scrape: connector_status unreadable", detail=str(exc))
        return None
    return rows


def _safe_url(settings: Settings) -> str:
    """The database address without its password, for logs."""
    info = conninfo_to_dict(settings.database_url)
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname', '')}"


def serve(settings: Settings) -> None:
    """Run the API until SIGTERM or Ctrl-C, then stop cleanly (requests finish, pool closes)."""
    from ioc.core.logs import configure

    configure(settings.log_level, settings.log_json)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # uvicorn logs through the root handler ioc.core.logs installs
        log_level=settings.log_level.lower(),
        access_log=False,  # requests are counted in /metrics instead
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    received: list[int] = []

    def remember(sig: int, frame: FrameType | None) -> None:
        received.append(sig)

    # uvicorn shuts down gracefully on these signals, then raises them again for the previous
    # handler; with this one in place that ends the process normally (exit status 0).
    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("api exited", signals=[signal.Signals(s).name for s in received],
             uptime_s=round(time.monotonic() - started, 1))
    if server.started is False and not received:
        raise SystemExit(1)  # could not start (port in use...): uvicorn has logged why


def openapi_document() -> str:
    """The API's OpenAPI document as committed in docs/openapi.json (`ioc schema openapi`)."""
    document = create_app(Settings()).openapi()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
