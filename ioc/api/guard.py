"""The API's outermost middleware: a request id on every answer, a 400 for a NUL in the URL,
and a generic 500 for any unhandled exception, logged without the caller's data."""

import json
import uuid

import structlog

from ioc.api.asgi import ASGIApp, Message, Receive, Scope, Send, error_body
from ioc.core.inputs import nul_in_url

log = structlog.get_logger()


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
    async def _answer(scope: Scope, send: Send, status: int, message: str,
                      request_id: str) -> None:
        if status < 500:
            body = error_body(scope.get("path", ""), status, message)
        elif scope.get("path", "").startswith("/open311/"):
            body = error_body(scope["path"], status, f"{message} ({request_id})")
        else:
            body = json.dumps({"detail": message, "request_id": request_id}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

