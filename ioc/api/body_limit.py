"""`BodySizeLimit`: ASGI middleware answering 413 without reading an oversized body, and 408
to a body that does not arrive in time."""

import asyncio
from collections.abc import Mapping

from ioc.api.asgi import ASGIApp, Message, Receive, Scope, Send, error_body


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


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
        body = error_body(scope.get("path", ""), status, message)
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
