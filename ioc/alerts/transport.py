"""What an alert channel is to the deliverer (Channel, Outgoing, Sender), what its sender raises
when a message was not accepted, and how an HTTP answer is read as one: permanent (the row is
marked `failed` at once: retrying cannot help) or transient (the row is retried with backoff,
or after the `retry_after` the service asked for).

HTTP: 2xx accepted; 400, 401, 403, 404 and the other 4xx permanent; 408, 425, 429 and 5xx,
timeouts and connection errors transient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from ioc.alerts.message import Notice, Text
from ioc.core.settings import Settings

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TRANSIENT_STATUS = {408, 425, 429}


@dataclass(frozen=True)
class Outgoing:
    """One outbox row to send: a transition's message to one address on one channel."""

    id: int  # the outbox row, the same on every retry (a webhook's delivery id)
    channel: str
    target: str  # e-mail address, chat id, Zalo user id, URL
    notice: Notice
    text: Text
    dashboard_url: str = ""
    ack_url: str | None = None


Sender = Callable[[Outgoing], None]  # returns when accepted; raises SendError (or any error)


class Channel(Protocol):
    """A way to send alert messages, named by the outbox row's `channel`. A new channel is a
    module with these two functions (telegram.py, zalo.py, webhook.py) plus its entry in
    ioc/alerts/deliver.py CHANNELS (and its address form in recipients.py)."""

    def configured(self, settings: Settings) -> bool:
        """Whether the settings let it send (its token or secret is set)."""
        ...

    def sender(self, settings: Settings, http: httpx.Client) -> Sender:
        """Its sender for one delivery round (`http`: the round's client)."""
        ...


class SendError(Exception):
    """Not sent. `retry_after`: seconds the service asked to wait (None: our backoff)."""

    def __init__(self, reason: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after


def client() -> httpx.Client:
    """One client per delivery round (connections reused), with timeouts, no redirects."""
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False,
                        headers={"User-Agent": "ioc-monitor"})


def permanent_status(status: int) -> bool:
    return 400 <= status < 500 and status not in TRANSIENT_STATUS


def retry_after_header(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the date form is not used by these services)."""
    value = response.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def status_error(response: httpx.Response, detail: str = "") -> SendError:
    """The SendError of a non-2xx answer."""
    reason = f"HTTP {response.status_code} {response.reason_phrase}"
    if detail:
        reason += f": {detail}"
    return SendError(reason[:500], permanent=permanent_status(response.status_code),
                     retry_after=retry_after_header(response))


def request_error(exc: httpx.HTTPError, secret: str = "") -> SendError:
    """A timeout or connection error: transient. `secret` (a token in the URL) is masked."""
    reason = f"{type(exc).__name__}: {exc}"
    if secret:
        reason = reason.replace(secret, "***")
    return SendError(reason[:500])
