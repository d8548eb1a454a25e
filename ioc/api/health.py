"""Readiness: the broker, the database and at least one live worker, answered within a deadline.

Every dependency is asked with a short timeout, and one database check at a time whatever the
number of probes: /readyz must answer even when a dependency is down or frozen.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from fastapi.responses import JSONResponse

from ioc.api.database import Database, DatabaseDown, describe_db_error
from ioc.core.lag import BrokerUnavailable, broker_metadata
from ioc.core.settings import Settings

log = structlog.get_logger()

BROKER_TIMEOUT = 2.0  # readiness: metadata request
READY_DEADLINE = 3.0  # /readyz answers within this, whatever a dependency does
CHECK_LIMIT = 30.0  # a check still stuck after this is cancelled (then the next one starts)

T = TypeVar("T")


def heartbeat_limit(settings: Settings) -> float:
    """Seconds after which a worker counts as gone: three missed heartbeats, at least 15 s."""
    return max(3 * settings.heartbeat_seconds, 15.0)


@dataclass
class Check:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


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


async def check_broker(settings: Settings) -> Check:
    try:
        meta = await broker_metadata(settings, timeout=BROKER_TIMEOUT)
    except BrokerUnavailable as exc:
        return Check(False, str(exc))
    brokers = ", ".join(f"{b['host']}:{b['port']}" for b in meta["brokers"]) or "no brokers"
    missing = [settings.topic(n) for n in ("dossiers", "documents", "field_reports", "evaluations")
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


class Readiness:
    """The /readyz answer: 200 when every check passes, else 503 naming what failed."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.database_check = SingleFlight(lambda: check_database(db))

    async def answer(self) -> JSONResponse:
        broker, checked = await asyncio.gather(
            check_broker(self.settings), self.database_check(READY_DEADLINE))
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
