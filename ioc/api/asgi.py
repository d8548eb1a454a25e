"""What the API's ASGI middleware share: the ASGI types and the error body they answer with."""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(path: str, status: int, message: str) -> bytes:
    """An error as the route's clients read it: Open311's list of errors, FastAPI's detail."""
    if path.startswith("/open311/"):
        return json.dumps([{"code": status, "description": message}]).encode()
    return json.dumps({"detail": message}).encode()
