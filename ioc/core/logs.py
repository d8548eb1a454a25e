"""Structured logs: key=value on a terminal, one JSON object per line in production.

Logs never hold secrets or personal data. Tracebacks are plain text without local variables
(rich's tracebacks with locals put a caller's whole `Authorization` header and request body in
the log, ~700 KB a request); every line then passes `scrub`, which drops fields named like
personal data or credentials and masks API keys, bearer tokens, e-mail addresses and phone
numbers (and ID numbers) wherever they appear, exception messages included: the patterns of
`ioc/core/redact.py`, the same that redact Open311 free text.
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from ioc.core.redact import mask

# Field names whose values never reach a log line.
HIDDEN = frozenset({"authorization", "api_key", "x-api-key", "key_secret", "secret", "password",
                    "token", "email", "phone", "first_name", "last_name", "device_id",
                    "account_id", "body", "headers", "cookie", "description",
                    "address_string", "status_notes"})


def scrub(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop hidden fields, mask secrets in every text value."""
    for name in list(event):
        value = event[name]
        if name.lower() in HIDDEN:
            event[name] = "<hidden>"
        elif isinstance(value, str):
            event[name] = mask(value)
        elif isinstance(value, list | tuple) and not name.startswith("_"):
            event[name] = [mask(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, dict) and not name.startswith("_"):
            event[name] = {k: "<hidden>" if str(k).lower() in HIDDEN else
                           mask(v) if isinstance(v, str) else v for k, v in value.items()}
    return event


def configure(level: str = "INFO", json: bool = False) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                           exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # plain text, no locals; then scrubbed
        scrub,
    ]
    structlog.configure(
        # A line below the level is dropped first, before it is stamped, scrubbed or formatted
        # (the API logs one line per accepted report: at WARNING that cost nothing).
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # Libraries (faust, aiokafka, uvicorn) log through the standard library: same format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
