"""Alert transitions POSTed as JSON to a webhook (recipients `webhook:<https URL>` or
`webhook:<name>` from the `webhooks:` section of the recipients file), signed so the receiver
can tell they come from this IOC and are not replayed.

Each request carries:

    Content-Type: application/json; charset=utf-8
    X-IOC-Delivery: <id>          the same on every retry of one message: drop repeats
    X-IOC-Timestamp: <unix seconds when sent>
    X-IOC-Signature: sha256=<hex HMAC-SHA256, key alert_webhook_secret,
                             of "<X-IOC-Timestamp>." followed by the raw body bytes>

A receiver verifies (`verify` below does exactly this):
1. read the raw body bytes (before any JSON parsing);
2. compute HMAC-SHA256 with the shared secret over `timestamp + "." + body`;
3. compare its hex digest with the signature after `sha256=` in constant time
   (hmac.compare_digest) and reject on mismatch;
4. reject a timestamp more than 5 minutes from its clock (a replayed request);
5. treat an `X-IOC-Delivery` already processed as done (delivery is at least once).
Answer 2xx when accepted. 408, 425, 429 (Retry-After honoured) and 5xx are retried with
backoff; any other 4xx is final (the message is marked failed).

The body (UTF-8 JSON): delivery_id, alert_id (the transition's alerts.seq), rule, metric,
metric_name, scope, scope_name, state (firing | resolved), severity, severity_name, value and
threshold (decimal strings; value null without data), comparison, at and since (ISO 8601),
subject and text (the Vietnamese message every channel sends), dashboard_url, ack_url.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from ioc.alerts.message import METRIC_NAMES, SEVERITIES, scope_text
from ioc.alerts.transport import Outgoing, Sender, request_error, status_error
from ioc.core.settings import Settings

TOLERANCE_SECONDS = 300


def configured(settings: Settings) -> bool:
    """Webhooks are only sent signed: the secret must be set."""
    return bool(settings.alert_webhook_secret)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature_header: str,
           now: float | None = None, tolerance: float = TOLERANCE_SECONDS) -> bool:
    """For receivers written in Python: the request is authentic and recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    expected = signature(secret, timestamp, body)
    return age <= tolerance and hmac.compare_digest(expected.encode(),
                                                     signature_header.encode())


def payload(out: Outgoing) -> dict[str, object]:
    n = out.notice
    return {
        "delivery_id": str(out.id), "alert_id": n.seq, "rule": n.rule, "metric": n.metric,
        "metric_name": METRIC_NAMES.get(n.metric, n.metric), "scope": n.scope,
        "scope_name": scope_text(n.scope), "state": n.state, "severity": n.severity,
        "severity_name": SEVERITIES.get(n.severity, n.severity),
        "value": None if n.value is None else str(n.value), "threshold": str(n.threshold),
        "comparison": n.comparison, "at": n.at.isoformat(), "since": n.since.isoformat(),
        "subject": out.text.subject, "text": out.text.body,
        "dashboard_url": out.dashboard_url or None, "ack_url": out.ack_url,
    }


def body(out: Outgoing) -> bytes:
    return json.dumps(payload(out), ensure_ascii=False, separators=(",", ":")).encode()


def sender(settings: Settings, http: httpx.Client) -> Sender:
    secret = settings.alert_webhook_secret

    def send(out: Outgoing) -> None:
        content = body(out)
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-IOC-Delivery": str(out.id), "X-IOC-Timestamp": timestamp,
                   "X-IOC-Signature": signature(secret, timestamp, content)}
        try:
            response = http.post(out.target, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise request_error(exc) from None
        if not response.is_success:
            raise status_error(response, response.text[:200])
    return send
