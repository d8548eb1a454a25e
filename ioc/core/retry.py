"""Waiting out trouble that passes: which errors are worth retrying, and the backoff.

The worker's storing agents, its dead-letter agent and the connectors retry the same way
(exponential backoff with jitter, a warning before each wait); they differ only in pace, in
how many attempts and in the errors of their own they add.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiokafka.errors import KafkaError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

BeforeSleep = Callable[[RetryCallState], Awaitable[None] | None]


def transient(exc: BaseException) -> bool:
    """Worth waiting out: the database, the broker or the network is down or busy. A psycopg
    DataError is about the value written, not the database: retrying cannot help."""
    if isinstance(exc, psycopg.Error):
        return not isinstance(exc, psycopg.DataError)
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, OSError)  # ConnectionError and TimeoutError among them


def retrying(before_sleep: BeforeSleep, *, first: float = 0.2, longest: float = 10.0,
             attempts: int = 0, also: tuple[type[BaseException], ...] = ()) -> AsyncRetrying:
    """Retry a call while it fails `transient`ly (or with one of `also`): backoff from `first`
    seconds doubling up to `longest`, `attempts` in all (0: forever); then the error is raised.

        retry = retrying(warn(log, "database unavailable, retrying"))
        return await retry(write, batch)
    """
    return AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, also) or transient(exc)),
        wait=wait_exponential_jitter(multiplier=first, max=longest),
        stop=stop_after_attempt(attempts) if attempts else stop_never,
        before_sleep=before_sleep,
        reraise=True,
    )


def warn(log: Any, event: str, **fields: object) -> Callable[[RetryCallState], None]:
    """A `before_sleep` logging `event` as a warning, with the attempt number and the error."""

    def before_sleep(state: RetryCallState) -> None:
        log.warning(event, **fields, attempt=state.attempt_number,
                    error=str(state.outcome.exception()) if state.outcome else None)

    return before_sleep
