"""The API's connection pool: queries fail fast, and a failure says why in one line.

The API owns no data; what it reads (keys, readiness, metrics, Open311) goes through here, so
a database that is down or frozen costs a request at most a couple of seconds.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ioc.core.db import connect_kwargs
from ioc.core.settings import Settings

POOL_TIMEOUT = 1.0  # waiting for a pooled connection before diagnosing with a direct one
DIRECT_TIMEOUT = 1.5  # the diagnosing connection (libpq's connect_timeout is at least 2 s)
STATEMENT_TIMEOUT_MS = 2000


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
