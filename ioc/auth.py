"""API-key checks for write routes, a request-size limit and a per-key rate limit.

`require_key(scope)` is a FastAPI dependency: 401 when the key is missing, malformed, unknown
or revoked; 403 when it lacks the scope; 429 (with Retry-After) over the key's rate. The rate
limit is a token bucket in this process's memory: with N API processes a key gets N times the
rate. `BodySizeLimit` is ASGI middleware answering 413 without reading an oversized body.
"""

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import psycopg
import structlog
from fastapi import HTTPException, Request
from psycopg.rows import dict_row

from ioc import keys
from ioc.keys import ApiKey

log = structlog.get_logger()

VERIFY_CONCURRENCY = 4  # scrypt checks at once: bounded memory and CPU under a flood

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- rate limit ------------------------------------------------------------------------------

class RateLimiter:
    """A token bucket per key id, in memory (per process): `per_minute` sustained, as a burst."""

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(per_minute, 1.0)
        self.buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str) -> float:
        """0 when allowed, else seconds until a token is back."""
        now = time.monotonic()
        tokens, at = self.buckets.get(key_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self.buckets[key_id] = (tokens - 1, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate if self.rate > 0 else 60.0


# --- keys ------------------------------------------------------------------------------------

def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    header = request.headers.get("authorization")
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    value = request.headers.get("x-api-key", "").strip()
    return value or None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="ioc"'})


def _state(request: Request, name: str, make: Callable[[], Any]) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        value = make()
        setattr(request.app.state, name, value)
    return value


async def lookup(request: Request, presented: str) -> ApiKey | None:
    """Verify on the app's pool (ioc.api.Database); the scrypt check runs in a thread."""
    parsed = keys.parse(presented)
    if parsed is None:
        return None
    key_id, secret = parsed

    async def read(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any] | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(keys.LOOKUP, (key_id,))
            return await cur.fetchone()

    row = await request.app.state.database.run(read)
    if row is None or row["revoked_at"] is not None:
        return None
    gate = _state(request, "key_verify_gate", lambda: asyncio.Semaphore(VERIFY_CONCURRENCY))
    async with gate:
        if not await asyncio.to_thread(keys.matches, row, secret):
            return None

    async def touch(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(keys.TOUCH, (key_id,))

    try:
        await request.app.state.database.run(touch)
    except Exception as exc:  # bookkeeping only: the key is valid
        log.warning("api key: last_used_at not updated", error=type(exc).__name__)
    return keys.as_key(row)


def require_key(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """Dependency: the verified key holding `scope`, within its rate (see `authorize`)."""

    async def dependency(request: Request) -> ApiKey:
        return await authorize(request, scope, presented_key(request))

    return dependency


async def authorize(request: Request, scope: str, presented: str | None) -> ApiKey:
    """The verified key holding `scope`, within its rate (one limiter per app, from
    `settings.api_rate_per_minute`), or an HTTPException (401, 403, 429, 503)."""
    if presented is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'"
                            " or 'X-API-Key: <key>'")
    try:
        key = await lookup(request, presented)
    except Exception as exc:  # DatabaseDown, psycopg errors
        log.warning("api key: cannot verify", error=type(exc).__name__)
        raise HTTPException(503, "API keys cannot be checked now; try again") from None
    if key is None:
        raise _unauthorized("the API key is not valid (unknown, malformed or revoked)")
    if scope not in key.scopes:
        raise HTTPException(403, f"the API key {key.name!r} lacks the scope {scope!r}")
    bucket = _state(request, "key_rate_limiter", lambda: RateLimiter(
        request.app.state.settings.api_rate_per_minute))
    wait = bucket.take(key.key_id)
    if wait > 0:
        raise HTTPException(429, f"too many requests for the API key {key.name!r};"
                                 f" retry in {math.ceil(wait)} s",
                            headers={"Retry-After": str(math.ceil(wait))})
    request.state.api_key = key
    return key


# --- request size ----------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


def _error_body(path: str, status: int, message: str) -> bytes:
    if path.startswith("/open311/"):
        return json.dumps([{"code": status, "description": message}]).encode()
    return json.dumps({"detail": message}).encode()


class BodySizeLimit:
    """ASGI middleware: bodies over `max_bytes` (or the path's own limit in `per_path`) answer
    413, by Content-Length before reading, or as soon as a chunked body passes the limit (the
    rest is never read)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 per_path: Mapping[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.per_path = app, max_bytes, dict(per_path or {})

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        message = f"body: larger than {limit} bytes"
        body = _error_body(scope.get("path", ""), 413, message)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > limit:
                await self._reject(scope, send, limit)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, send, limit)
