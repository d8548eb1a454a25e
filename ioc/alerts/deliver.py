"""Drain the alert outbox: send each due row on its channel, mark it sent, retry failures later.

Channels (the outbox row's `channel`, each a transport.Channel, listed in CHANNELS): `email`
(ioc/alerts/email.py), `telegram` (telegram.py), `zalo` (zalo.py), `webhook` (webhook.py);
every one says the same words (message.py). A channel is configured when its setting is set:
smtp_host, telegram_bot_token, zalo_access_token (or zalo_refresh_token and the app's id and
secret), alert_webhook_secret.

Every row is handled in its own transaction, locked with FOR UPDATE SKIP LOCKED while it is
being sent: two deliverers never send the same row, and a recipient or a channel that refuses
does not hold up the others. A transient failure keeps the row `pending` with `attempts` + 1
and `next_attempt_at` pushed back (BACKOFF, or the service's `retry_after`), until
MAX_ATTEMPTS make it `failed`; a permanent one (a 4xx answer, an unknown chat...) makes it
`failed` at once, the reason in `last_error`. After a transient failure the rest of that
channel (that webhook host) waits for the next round, so a dead service costs one timeout per
round, not one per message. A row is due when `next_attempt_at <= now`: that is the alert's
`notify_after` (working-hours routing) at first. E-mail: a 5xx reply to the sender, a recipient
or the message (550 unknown mailbox...) is permanent; 4xx replies, a refused greeting or login
and connection errors are transient (ioc/alerts/email.py).

A firing notice or reminder still queued when a person acknowledged or silenced its alert
(after it, before it resolved) is not sent: the row becomes `cancelled`, who and when in
`last_error` (migration 0015). A resolved notice always goes out.

Every message says since when the alert holds: the first pending or firing row after the last
resolved one, the same for the first notice and every reminder.

Delivery is at least once: a crash after a service accepted a message but before the row is
marked sends it again on restart (webhooks carry the row id in X-IOC-Delivery for receivers to
drop the repeat).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import structlog

from ioc.alerts import telegram, webhook, zalo
from ioc.alerts.email import Email, SmtpConfig
from ioc.alerts.links import ack_link
from ioc.alerts.message import Notice, compose
from ioc.alerts.outbox import enqueue
from ioc.alerts.recipients import load, resolver
from ioc.alerts.rules import Rule
from ioc.alerts.transport import Channel, Outgoing, Sender, SendError, client
from ioc.core.db import connect
from ioc.core.settings import Settings

log = structlog.get_logger()

MAX_ATTEMPTS = 12
BACKOFF = timedelta(seconds=30)  # doubled at each failure, at most MAX_BACKOFF
MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt (1, 2, ...)."""
    return min(BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


CHANNELS: dict[str, Channel] = {"telegram": telegram, "zalo": zalo, "webhook": webhook}
"""The channels the settings configure, by name (a new channel: its module and an entry here).
E-mail joins each round on the SmtpConfig it is given (email.Email)."""


def channels(smtp: SmtpConfig | None) -> dict[str, Channel]:
    """Every channel of a round: CHANNELS and e-mail on `smtp` (None: no e-mail)."""
    return {"email": Email(smtp), **CHANNELS}


def configured(settings: Settings, smtp: SmtpConfig | None) -> set[str]:
    """The channels that can send."""
    return {name for name, channel in channels(smtp).items() if channel.configured(settings)}


def senders(settings: Settings, smtp: SmtpConfig | None, http: httpx.Client,
            ) -> dict[str, Sender]:
    """channel -> its sender, for the configured channels."""
    return {name: channel.sender(settings, http) for name, channel in channels(smtp).items()
            if channel.configured(settings)}


@dataclass(frozen=True)
class Delivery:
    id: int
    recipient: str
    state: str  # sent | pending (will retry) | failed (gave up) | cancelled (acknowledged/silenced)
    attempts: int
    error: str | None = None
    channel: str = "email"


# The due row, the start of its episode (the first pending or firing row after the last
# resolved one) and, for a firing row, the first acknowledgement or silence after it in the
# same episode (then it is not sent).
DUE = """
SELECT o.id, o.channel, o.recipient, o.attempts, a.seq, a.rule, a.scope, a.state, a.severity,
       a.value, a.threshold, a.comparison, a.at,
       (SELECT min(p.at) FROM alerts p WHERE p.rule = a.rule AND p.scope = a.scope
          AND p.state IN ('pending', 'firing') AND (p.at, p.seq) <= (a.at, a.seq)
          AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.rule = a.rule AND r.scope = a.scope
                          AND r.state = 'resolved' AND (r.at, r.seq) > (p.at, p.seq)
                          AND (r.at, r.seq) < (a.at, a.seq))) AS since,
       h.state, h.actor, h.at, h.silenced_until, a.missing
FROM alert_outbox o JOIN alerts a ON a.seq = o.alert_seq
LEFT JOIN LATERAL (
    SELECT s.state, s.actor, s.at, s.silenced_until FROM alerts s
    WHERE a.state = 'firing' AND s.rule = a.rule AND s.scope = a.scope
      AND s.state IN ('acknowledged', 'silenced') AND (s.at, s.seq) > (a.at, a.seq)
      AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.rule = a.rule AND r.scope = a.scope
                      AND r.state = 'resolved' AND (r.at, r.seq) > (a.at, a.seq)
                      AND (r.at, r.seq) < (s.at, s.seq))
    ORDER BY s.at, s.seq LIMIT 1) h ON true
WHERE o.state = 'pending' AND o.next_attempt_at <= %(now)s AND o.id > %(after)s
ORDER BY o.id
LIMIT 1
FOR UPDATE OF o SKIP LOCKED
"""


def _stopped(state: str, actor: str | None, at: datetime, until: datetime | None) -> str:
    """Why a queued firing notice is not sent."""
    who = f" by {actor}" if actor else ""
    if state == "silenced" and until is not None:
        return f"silenced{who} at {at.isoformat()} until {until.isoformat()}"
    return f"{state}{who} at {at.isoformat()}"


def _breaker(channel: str, target: str) -> str:
    """What one transient failure puts off until the next round: the channel, or the host."""
    return f"webhook:{urlsplit(target).netloc}" if channel == "webhook" else channel


def _shown(channel: str, target: str) -> str:
    """A webhook URL may hold a token: logs show its host only."""
    return urlsplit(target).netloc if channel == "webhook" else target


def deliver(settings: Settings, config: SmtpConfig | None, now: datetime,
            rules: Sequence[Rule] = (), send_by: Mapping[str, Sender] | None = None,
            ) -> list[Delivery]:
    """Send every row due at `now`; returns what happened to each row tried.

    `config`: e-mail (None or an empty host: no e-mail); the other channels come from
    `settings`. `send_by` replaces the senders (channel -> sender) built from those."""
    if now.tzinfo is None:
        raise ValueError("now must have a time zone")
    with client() as http:
        if send_by is None:
            send_by = senders(settings, config, http)
        return _drain(settings, config, now, rules, send_by)


def _drain(settings: Settings, config: SmtpConfig | None, now: datetime,
           rules: Sequence[Rule], send_by: Mapping[str, Sender]) -> list[Delivery]:
    tz = ZoneInfo(settings.timezone)
    dashboard_url = (config.dashboard_url if config is not None else "") or settings.dashboard_url
    metrics = {rule.name: rule.metric for rule in rules}
    done: list[Delivery] = []
    down: set[str] = set()  # put off until the next round after a transient failure
    after = 0
    with connect(settings) as conn:
        while True:
            with conn.transaction():
                row = conn.execute(DUE, {"now": now, "after": after}).fetchone()
                if row is None:
                    break
                (id_, channel, recipient, attempts, seq, rule, scope, state, severity, value,
                 threshold, comparison, at, since, stop_state, stop_actor, stop_at,
                 stop_until, missing) = row
                after = id_
                if stop_state is not None:
                    reason = _stopped(stop_state, stop_actor, stop_at, stop_until)
                    conn.execute("UPDATE alert_outbox SET state = 'cancelled', last_error = %s"
                                 " WHERE id = %s", (reason, id_))
                    log.info("alert message cancelled", channel=channel,
                             recipient=_shown(channel, recipient), rule=rule, scope=scope,
                             reason=reason)
                    done.append(Delivery(id_, recipient, "cancelled", attempts, reason, channel))
                    continue
                if _breaker(channel, recipient) in down:
                    continue
                notice = Notice(rule=rule, metric=metrics.get(rule, rule), scope=scope,
                                state=state, severity=severity, value=value,
                                threshold=threshold, comparison=comparison, at=at,
                                since=since or at, seq=seq, missing=tuple(missing))
                ack_url = ack_link(settings, seq, now) if state == "firing" else None
                out = Outgoing(id=id_, channel=channel, target=recipient, notice=notice,
                               text=compose(notice, dashboard_url, tz, ack_url),
                               dashboard_url=dashboard_url, ack_url=ack_url)
                send = send_by.get(channel)
                try:
                    if send is None:
                        raise SendError(f"channel {channel!r} is not configured",
                                        permanent=True)
                    send(out)
                except Exception as exc:  # any failure: retry later, unless permanent
                    attempts += 1
                    error = (str(exc) if isinstance(exc, SendError)
                             else f"{type(exc).__name__}: {exc}")[:500]
                    permanent = isinstance(exc, SendError) and exc.permanent
                    final = permanent or attempts >= MAX_ATTEMPTS
                    retry_after = exc.retry_after if isinstance(exc, SendError) else None
                    wait = (timedelta(seconds=retry_after) if retry_after is not None
                            else backoff(attempts))
                    conn.execute(
                        "UPDATE alert_outbox SET attempts = %s, last_error = %s, state = %s,"
                        " next_attempt_at = %s WHERE id = %s",
                        (attempts, error, "failed" if final else "pending", now + wait, id_))
                    if not permanent:
                        down.add(_breaker(channel, recipient))
                    log.warning("alert message not sent", channel=channel,
                                recipient=_shown(channel, recipient), rule=rule, scope=scope,
                                attempts=attempts, error=error, gave_up=final)
                    done.append(Delivery(id_, recipient, "failed" if final else "pending",
                                         attempts, error, channel))
                else:
                    conn.execute(
                        "UPDATE alert_outbox SET attempts = attempts + 1, state = 'sent',"
                        " sent_at = now(), last_error = NULL WHERE id = %s", (id_,))
                    log.info("alert message sent", channel=channel,
                             recipient=_shown(channel, recipient), rule=rule, scope=scope,
                             state=state)
                    done.append(Delivery(id_, recipient, "sent", attempts + 1, None, channel))
    return done


def enqueue_and_deliver(settings: Settings, config: SmtpConfig | None, now: datetime,
                        rules: Sequence[Rule] = (),
                        recipients: Path | None = None) -> list[Delivery]:
    """Queue the new transitions (recipients from the YAML file) on the configured channels,
    then send what is due."""
    resolve = resolver(load(recipients or settings.alert_recipients))
    with connect(settings) as conn:
        enqueue(conn, resolve, now, channels=configured(settings, config))
    return deliver(settings, config, now, rules)
