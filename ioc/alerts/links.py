"""One-click "acknowledge" links in alert messages: `GET {public_api_url}/alerts/{id}/ack?exp=
&sig=` where `sig` is HMAC-SHA256 (key: settings.alert_link_secret) over the alert id and the
expiry. Whoever holds the message may acknowledge that one alert until `exp`, without an API
key; nothing else. An empty secret or public_api_url means no links (and every link refused).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

from ioc.core.settings import Settings

VALID_FOR = timedelta(days=7)  # a reminder carries a fresh link


def _signature(secret: str, alert_id: int, exp: int) -> str:
    digest = hmac.new(secret.encode(), f"ack:{alert_id}:{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def enabled(settings: Settings) -> bool:
    return bool(settings.alert_link_secret and settings.public_api_url)


def ack_link(settings: Settings, alert_id: int, now: datetime) -> str | None:
    """The signed link acknowledging alert `alert_id` (an `alerts.seq`), valid VALID_FOR from
    `now`; None when links are not configured."""
    if not enabled(settings):
        return None
    exp = int((now + VALID_FOR).timestamp())
    sig = _signature(settings.alert_link_secret, alert_id, exp)
    base = settings.public_api_url.rstrip("/")
    return f"{base}/alerts/{alert_id}/ack?exp={exp}&sig={sig}"


def verify(settings: Settings, alert_id: int, exp: int, sig: str) -> bool:
    """The signature is the one `ack_link` made for this id and expiry (constant-time compare).
    The expiry itself is checked by the caller (an expired link gets its own answer)."""
    if not settings.alert_link_secret:
        return False
    expected = _signature(settings.alert_link_secret, alert_id, exp)
    return hmac.compare_digest(expected.encode(), sig.encode())


def expired(exp: int, now: datetime) -> bool:
    return now.timestamp() >= exp
