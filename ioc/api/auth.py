"""API-key checks for write routes, and a per-key rate limit.

`require_key(scope)` is a FastAPI dependency: 401 when the key is missing, malformed, unknown
or revoked; 403 when it lacks the scope; 429 (with Retry-After) over the key's rate, or after
too many failed checks. The rate limit is a token bucket in this process's memory: with N API
processes a key gets N times the rate. Rows are read through the process's `KeyRing`
(ioc/api/keyring.py; keys themselves: ioc/api/keys.py).

Failures are limited per client address and per key id (`api_failed_auth_per_minute`): past
that, 429; an address over its budget gets no more database lookups for key ids this process
has not seen (a correct secret of a known key still passes).
"""

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import Headers

from ioc.api import keys
from ioc.api.asgi import ASGIApp, Receive, Scope, Send, error_body
from ioc.api.keyring import KEYRING_SIZE, KeyRing, KeysUnavailable
from ioc.api.keys import ApiKey
from ioc.core.settings import Settings

TARPIT = 1.0  # seconds an address over its failure budget waits for its 429 (see the gate)


# --- rate limit ------------------------------------------------------------------------------

class TokenBuckets:
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
        failures: TokenBuckets | None = getattr(state, "key_failures", None)
        ring: KeyRing | None = getattr(state, "keyring", None)
        if scope["type"] == "http" and failures is not None and ring is not None:
            client = _client((scope.get("client") or (None,))[0])
            wait = failures.peek(client)
            presented = key_in(Headers(scope=scope)) if wait > 0 else None
            if presented is not None and not ring.recently_verified(presented):
                seconds = str(max(1, math.ceil(wait)))
                body = error_body(scope.get("path", ""), 429, "too many failed API key"
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
    failures: TokenBuckets = _state(request, "key_failures",
                                   lambda: TokenBuckets(settings.api_failed_auth_per_minute))
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
    bucket = _state(request, "key_rate_limiter", lambda: TokenBuckets(
        settings.api_rate_per_minute))
    wait = bucket.take(key.key_id)
    if wait > 0:
        raise _too_many(wait, f"too many requests for the API key {key.name!r}")
    request.state.api_key = key
    return key
