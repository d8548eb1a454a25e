"""Untrusted input at the API's edge: JSON with a depth limit, and no NUL characters.

A body nested thousands deep made `json.loads` raise RecursionError (an unhandled 500 whose
traceback ran to megabytes); a NUL reached PostgreSQL, which cannot store it, and came back as
a 503 "try again". Both are the client's error: `BadInput` carries the 400 message.
"""

import json
from typing import Any
from urllib.parse import unquote_to_bytes

MAX_DEPTH = 32  # no request of this API nests more than a few levels


class BadInput(ValueError):
    """Input refused at the edge; the message names the part ("body: ...")."""


def loads(raw: bytes | str, what: str = "body") -> Any:
    """The JSON value of `raw`, or BadInput: invalid, nested over MAX_DEPTH, or with a NUL."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadInput(f"{what}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise BadInput(f"{what}: not valid JSON") from None
    check(value, what)
    return value


def check(value: Any, what: str = "body") -> None:
    """BadInput when `value` (decoded JSON or form fields) nests too deep or holds a NUL."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise BadInput(f"{what}: a NUL character is not accepted")
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise BadInput(f"{what}: nested deeper than {MAX_DEPTH} levels")
            items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    raise BadInput(f"{what}: a NUL character is not accepted")
                stack.append((item, depth + 1))


def nul_in_url(path: str, query: bytes) -> str | None:
    """Which part of a request line holds a NUL (raw or %00), or None."""
    if "\x00" in path:
        return "path"
    if b"\x00" in query or b"\x00" in unquote_to_bytes(query.replace(b"+", b" ")):
        return "query"
    return None
