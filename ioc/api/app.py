"""HTTP API of the monitor: the app, its middleware and routes, and the server that runs it.

The parts live beside it: readiness (health.py), Prometheus metrics (metrics.py), the pool
(database.py), request ids and 500s (guard.py), keys and limits (auth.py), Open311, ingest and
alerts (their routers).
"""

import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg.conninfo import conninfo_to_dict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ioc.api import keys
from ioc.api.alerts import alerts_router
from ioc.api.auth import FailedAuthGate, TokenBuckets
from ioc.api.body_limit import BodySizeLimit
from ioc.api.database import Database
from ioc.api.fast_path import FastPath, FastPaths
from ioc.api.guard import Guard
from ioc.api.health import Readiness
from ioc.api.ingest import ingest_body_limits, ingest_router
from ioc.api.keyring import KeyRing
from ioc.api.kpis import kpis_router
from ioc.api.metrics import Metrics, RequestCounter
from ioc.api.open311 import discovery_router, http_errors, open311_router
from ioc.api.open311_updates import status_updates_router
from ioc.api.publisher import EventPublisher
from ioc.core.settings import Settings

log = structlog.get_logger()


def create_app(settings: Settings) -> FastAPI:
    """The API for one settings object; its metrics live in a registry of its own."""
    db = Database(settings)
    publisher = EventPublisher(settings)  # one producer for every route that publishes
    prometheus = Metrics(settings, db)

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

    # FastAPI's OpenTelemetry hooks off: nothing here exports traces, and asking whether a
    # provider is configured cost an environment lookup per request.
    app = FastAPI(title="IOC monitor", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.database = db
    app.state.registry = prometheus.registry
    app.state.keyring = KeyRing(settings, db)
    app.state.key_failures = TokenBuckets(settings.api_failed_auth_per_minute)
    fast_paths: FastPaths = {}  # filled by the routers below, read at the first request
    app.add_middleware(FastPath, routes=fast_paths)  # innermost
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes,
                       per_path=ingest_body_limits(settings),
                       timeout=settings.api_body_timeout_seconds)
    app.add_middleware(FailedAuthGate)
    app.add_middleware(RequestCounter, counter=prometheus.requests)
    app.add_middleware(Guard)  # outermost: sees every request and every failure

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers; no dependency is asked."""
        return {"status": "ok"}

    readiness = Readiness(settings, db)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: broker, database and at least one live worker, within READY_DEADLINE."""
        return await readiness.answer()

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format, read from the broker and worker_status at scrape time."""
        return Response(await prometheus.scrape(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(discovery_router(settings))
    app.include_router(open311_router(settings, publisher, fast_paths))
    app.add_exception_handler(StarletteHTTPException, http_errors)
    app.include_router(status_updates_router(settings, publisher))
    app.include_router(alerts_router(settings))
    app.include_router(kpis_router(settings))
    app.include_router(ingest_router(settings, publisher))
    return app


def _safe_url(settings: Settings) -> str:
    """The database address without its password, for logs."""
    info = conninfo_to_dict(settings.database_url)
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname', '')}"


def app_from_environment() -> FastAPI:
    """uvicorn's factory for `ioc api --workers N`: each worker process reads its settings
    from the environment and builds its own app (pool, producer, key ring, limits)."""
    from ioc.core.logs import configure
    from ioc.core.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, settings.log_json)
    return create_app(settings)


def serve(settings: Settings, workers: int = 1) -> None:
    """Run the API until SIGTERM or Ctrl-C, then stop cleanly (requests finish, pool closes).
    With `workers` > 1, uvicorn forks that many processes sharing the port (each one has its
    own key cache and per-process limits; see the README's "Scale out")."""
    from ioc.core.logs import configure

    configure(settings.log_level, settings.log_json)
    options: dict[str, Any] = dict(
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # uvicorn logs through the root handler ioc.core.logs installs
        log_level=settings.log_level.lower(),
        access_log=False,  # requests are counted in /metrics instead
        lifespan="on",
        timeout_graceful_shutdown=10,
        # uvloop and httptools (pyproject): the event loop and the HTTP parser in C
        loop="asyncio" if sys.platform == "win32" else "uvloop",
        http="httptools",
    )
    if workers > 1:
        # The children read IOC_* from the environment, as `ioc api` itself did.
        uvicorn.run("ioc.api.app:app_from_environment", factory=True, workers=workers,
                    **options)
        return
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
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
