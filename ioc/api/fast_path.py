"""`FastPath`: ASGI middleware taking the hot write routes (a citizen's report POST) straight to
their endpoint, past FastAPI's routing, exception middleware and dependency solving.

A report POST spent about a sixth of the API's CPU in that machinery, for an endpoint that
parses its own body, checks its own key and answers its own errors. The route stays declared
in FastAPI (OpenAPI document, any path this table does not hold exactly); the middleware
around it (request id, generic 500, request counter, failed-key gate, body limits) is
unchanged, since `FastPath` sits inside all of it.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from ioc.api.asgi import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
FastPaths = dict[tuple[str, str], tuple[APIRoute, Endpoint, dict[str, Any]]]


class FastPath:
    """ASGI middleware: `routes[(method, path)]` is `(route, endpoint, path_params)`; an exact
    match is answered by `endpoint(request)` with `scope["route"]` and `path_params` set as
    FastAPI would set them (metrics and logs label it by the route's template)."""

    def __init__(self, app: ASGIApp, routes: FastPaths) -> None:
        self.app, self.routes = app, dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            hit = self.routes.get((scope["method"], scope["path"]))
            if hit is not None:
                route, endpoint, params = hit
                scope["route"], scope["endpoint"] = route, route.endpoint
                scope["path_params"] = dict(params)
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
