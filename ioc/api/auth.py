"""API-key checks for write routes, a request-size limit and a per-key rate limit.

`require_key(scope)` is a FastAPI dependency: 401 when the key is missing, malformed, unknown
or revoked; 403 when it lacks the scope; 429 (with Retry-After) over the key's rate, or after
too many failed checks. The rate limit is a token bucket in this process's memory: with N API
processes a key gets N times the rate. `BodySizeLimit` is ASGI middleware answering 413
without reading an oversized body, and 408 to a body that does not arrive in time.

Key checks (see ioc/api/keys.py): each process keeps the rows it read (`KeyRing`) for
`KEY_FRESH` seconds, so a revocation reaches every process within that, and a report POST
costs no database round trip. Every failure costs the same: one HMAC whatever the key id
(unknown, revoked, existing), compared with a dummy when there is no live row. Failures
are limited per client address and per key id (`api_failed_auth_per_minute`): past that,
429; an address over its budget gets no more database lookups for key ids this process has
not seen (a correct secret of a known key still passes). While PostgreSQL is down, a key
verified in the last `KEY_GRACE` seconds is still accepted: the broker is the record.
"""

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from fastapi import HTTPException, Request
from psycopg.rows import dict_row
from starlette.datastructures import Headers

from ioc.api import keys
from ioc.api.keys import ApiKey
from ioc.core.settings import Settings

log = structlog.get_logger()

KEY_FRESH = 5.0  # seconds a key row read from the database is used before reading it again
KEY_GRACE = 900.0  # database down: keys verified this recently still pass
LOOKUP_TIMEOUT = 2.5  # a frozen database must not hold a request longer
KEYRING_SIZE = 10_000  # key ids remembered (unknown ones too), least recently used dropped
TOUCH_EVERY = 60.0  # last_used_at is written at most this often per key and process
VERIFY_CONCURRENCY = 2  # scrypt checks of not yet upgraded keys at once (CPU, memory)
TARPIT = 1.0  # seconds an address over its failure budget waits for its 429 (see the gate)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- rate limit ------------------------------------------------------------------------------

class RateLimiter:
    """A token bucket per name, in memory (per process): `per_minute` sustained, as a burst."""

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(per_minute, 1.0)
        self.buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def _tokens(self, name: str, now: float) -> float:
        tokens, at = self.buckets.get(name, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def _wait(self, tokens: float) -> float:
        return (1 - tokens) / self.rate if self.rate > 0 else 60.0

    def take(self, name: str) -> float:
        """0 when allowed, else seconds until a token is back."""
        now = time.monotonic()
        tokens = self._tokens(name, now)
        if len(self.buckets) > KEYRING_SIZE * 10:  # a flood of names: forget the full ones
            refill = self.capacity / self.rate if self.rate > 0 else 0.0
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < refill}
        if tokens >= 1:
            self.buckets[name] = (tokens - 1, now)
            return 0.0
        self.buckets[name] = (tokens, now)
        return self._wait(tokens)

    def peek(self, name: str) -> float:
        """What `take` would answer, taking nothing."""
        tokens = self._tokens(name, time.monotonic())
        return 0.0 if tokens >= 1 else self._wait(tokens)


# --- keys ------------------------------------------------------------------------------------

class KeysUnavailable(RuntimeError):
    """The database could not be asked about a key this process has not verified lately."""


@dataclass
class Entry:
    row: dict[str, Any] | None  # None: no such key id
    read_at: float  # monotonic
    verified_at: float | None = None  # last successful check
    touched_at: float = 0.0


class KeyRing:
    """The api_keys rows this process read lately, by key id (see the module docstring)."""

    def __init__(self, settings: Settings, database: Any) -> None:
        self.database = database
        self.pepper = keys.pepper(settings)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.loading: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self.gate = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self.background: set[asyncio.Task[None]] = set()

    def known(self, key_id: str) -> bool:
        return key_id in self.entries

    def recently_verified(self, presented: str) -> bool:
        """A live key this process verified within KEY_GRACE, with the right secret."""
        parsed = keys.parse(presented)
        entry = self.entries.get(parsed[0]) if parsed else None
        if parsed is None or entry is None or entry.verified_at is None:
            return False
        return time.monotonic() - entry.verified_at < KEY_GRACE and \
            keys.matches(self.pepper, entry.row, parsed[1])

    async def _read(self, key_id: str) -> dict[str, Any] | None:
        async def read(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any] | None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(keys.LOOKUP, (key_id,))
                return await cur.fetchone()

        async with asyncio.timeout(LOOKUP_TIMEOUT):
            row: dict[str, Any] | None = await self.database.run(read)
        return row

    async def row(self, key_id: str) -> dict[str, Any] | None:
        """The key's row (None: no such key), read again when older than KEY_FRESH; one
        read per key id at a time."""
        now = time.monotonic()
        entry = self.entries.get(key_id)
        if entry is not None:
            self.entries.move_to_end(key_id)
            if now - entry.read_at < KEY_FRESH:
                return entry.row
        task = self.loading.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._read(key_id))
            self.loading[key_id] = task
            task.add_done_callback(lambda _: self.loading.pop(key_id, None))
        try:
            row = await asyncio.shield(task)
        except Exception as exc:  # DatabaseDown, psycopg errors, a frozen database
            if entry is not None and entry.row is not None and entry.verified_at is not None \
                    and now - entry.verified_at < KEY_GRACE:
                entry.read_at = now  # ask the database again in KEY_FRESH, not at each request
                return entry.row
            log.warning("api key: cannot verify", error=type(exc).__name__)
            raise KeysUnavailable from None
        if entry is None:
            entry = self.entries[key_id] = Entry(row, now)
            while len(self.entries) > KEYRING_SIZE:
                self.entries.popitem(last=False)
        entry.row, entry.read_at = row, now
        return row

    async def check(self, key_id: str, row: dict[str, Any] | None, secret: str) -> bool:
        """Whether `secret` is the live key's; keys made with scrypt are rehashed once."""
        if row is not None and row["revoked_at"] is None and keys.is_legacy(row):
            async with self.gate:
                if not await asyncio.to_thread(keys.matches_legacy, row, secret):
                    return False
            await self._upgrade(key_id, row, secret)
            return True
        return keys.matches(self.pepper, row, secret)

    async def _upgrade(self, key_id: str, row: dict[str, Any], secret: str) -> None:
        new_hash = keys.digest(self.pepper, secret)

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(keys.UPGRADE, (keys.KDF, new_hash, key_id, row["kdf"]))

        try:
            await self.database.run(write)
        except Exception as exc:  # checked all the same; rehashed at a later use
            log.warning("api key: not rehashed", error=type(exc).__name__)
            return
        entry = self.entries.get(key_id)
        if entry is not None and entry.row is not None:
            entry.row = {**entry.row, "kdf": keys.KDF, "salt": b"", "secret_hash": new_hash}

    def verified(self, key_id: str) -> None:
        """Remember the success (grace while the database is down); touch last_used_at now
        and then, in the background."""
        entry = self.entries.get(key_id)
        if entry is None:
            return
        now = time.monotonic()
        entry.verified_at = now
        if now - entry.touched_at < TOUCH_EVERY:
            return
        entry.touched_at = now

        async def touch() -> None:
            async def write(conn: psycopg.AsyncConnection[Any]) -> None:
                await conn.execute(keys.TOUCH, (key_id,))

            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    await self.database.run(write)
            except Exception as exc:  # bookkeeping only: the key is valid
                log.info("api key: last_used_at not updated", error=type(exc).__name__)

        task = asyncio.ensure_future(touch())
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _client(host: str | None) -> str:
    return f"addr:{host or '?'}"


class FailedAuthGate:
    """ASGI middleware: a client address past its failed-check budget gets 429 for a request
    carrying a key, before routing or reading the body, unless the key is one this process
    verified lately (a caller sharing the address keeps working). The 429 comes after TARPIT
    seconds: a flood's connections then send one request a second each instead of as many as
    the event loop can answer, and a valid caller's latency holds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = getattr(scope.get("app"), "state", None)
        failures: RateLimiter | None = getattr(state, "key_failures", None)
        ring: KeyRing | None = getattr(state, "keyring", None)
        if scope["type"] == "http" and failures is not None and ring is not None:
            client = _client((scope.get("client") or (None,))[0])
            wait = failures.peek(client)
            presented = key_in(Headers(scope=scope)) if wait > 0 else None
            if presented is not None and not ring.recently_verified(presented):
                seconds = str(max(1, math.ceil(wait)))
                body = _error_body(scope.get("path", ""), 429, "too many failed API key"
                                   f" checks; retry in {seconds} s")
                await asyncio.sleep(TARPIT)
                await send({"type": "http.response.start", "status": 429,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"retry-after", seconds.encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def key_in(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    header = headers.get("authorization")
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    value = headers.get("x-api-key", "").strip()
    return value or None


def presented_key(request: Request) -> str | None:
    return key_in(request.headers)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="ioc"'})


def _too_many(wait: float, message: str) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(429, f"{message}; retry in {seconds} s",
                         headers={"Retry-After": str(seconds)})


def _state(request: Request, name: str, make: Callable[[], Any]) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        value = make()
        setattr(request.app.state, name, value)
    return value


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
    settings: Settings = request.app.state.settings
    ring: KeyRing = _state(request, "keyring",
                           lambda: KeyRing(settings, request.app.state.database))
    failures: RateLimiter = _state(request, "key_failures",
                                   lambda: RateLimiter(settings.api_failed_auth_per_minute))
    client = _client(request.client.host if request.client else None)
    parsed = keys.parse(presented)
    key_id, secret = parsed if parsed is not None else ("", presented)
    row = None
    if key_id and (ring.known(key_id) or failures.peek(client) == 0):
        try:
            row = await ring.row(key_id)
        except KeysUnavailable:
            raise HTTPException(503, "API keys cannot be checked now; try again") from None
    if not await ring.check(key_id, row, secret) or row is None:
        wait = max(failures.take(client), failures.take(f"key:{key_id}") if key_id else 0.0)
        if wait > 0:
            raise _too_many(wait, "too many failed API key checks")
        raise _unauthorized("the API key is not valid (unknown, malformed or revoked)")
    key = keys.as_key(row)
    ring.verified(key_id)
    if scope not in key.scopes:
        raise HTTPException(403, f"the API key {key.name!r} lacks the scope {scope!r}")
    bucket = _state(request, "key_rate_limiter", lambda: RateLimiter(
        settings.api_rate_per_minute))
    wait = bucket.take(key.key_id)
    if wait > 0:
        raise _too_many(wait, f"too many requests for the API key {key.name!r}")
    request.state.api_key = key
    return key


# --- request size ----------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


def _error_body(path: str, status: int, message: str) -> bytes:
    if path.startswith("/open311/"):
        return json.dumps([{"code": status, "description": message}]).encode()
    return json.dumps({"detail": message}).encode()


class BodySizeLimit:
    """ASGI middleware: bodies over `max_bytes` (or the path's own limit in `per_path`) answer
    413, by Content-Length before reading, or as soon as a chunked body passes the limit (the
    rest is never read); a body not all there `timeout` seconds after its first read answers
    408 (a slow client holds no connection and no task for long)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 per_path: Mapping[str, int] | None = None, timeout: float = 10.0) -> None:
        self.app, self.max_bytes, self.per_path = app, max_bytes, dict(per_path or {})
        self.timeout = timeout

    async def _reject(self, scope: Scope, send: Send, limit: int, status: int = 413) -> None:
        message = f"body: larger than {limit} bytes" if status == 413 else \
            f"body: not received within {self.timeout:g} s"
        body = _error_body(scope.get("path", ""), status, message)
        await send({"type": "http.response.start", "status": status,
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
        complete = False
        deadline: float | None = None

        async def limited() -> Message:
            nonlocal seen, complete, deadline
            if complete:  # the body is in: what follows is waiting for a disconnect
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
                complete = not message.get("more_body", False)
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
        except BodyTimeout:
            if started:
                raise
            await self._reject(scope, send, limit, status=408)
