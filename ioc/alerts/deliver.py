"""Drain the alert outbox: send each due row, mark it sent, retry failures later.

Every row is handled in its own transaction, locked with FOR UPDATE SKIP LOCKED while it is
being sent: two deliverers never send the same row, and a recipient whose server refuses does
not hold up the others. A failed attempt keeps the row `pending` with `attempts` + 1 and
`next_attempt_at` pushed back (BACKOFF), until MAX_ATTEMPTS make it `failed`. A row is due
when `next_attempt_at <= now`: that is the alert's `notify_after` (working-hours routing) at
first.

Recipients: `alerts/recipients.yaml` (setting alert_recipients) maps a rule's recipient (role,
`role:CODE` or name) to e-mail addresses; an entry that is an address is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
import yaml

from ioc.alerts import email
from ioc.alerts.email import Notice, SmtpConfig
from ioc.alerts.outbox import enqueue
from ioc.alerts.rules import Rule
from ioc.db import connect
from ioc.settings import Settings

log = structlog.get_logger()

MAX_ATTEMPTS = 12
BACKOFF = timedelta(seconds=30)  # doubled at each failure, at most MAX_BACKOFF
MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt (1, 2, ...)."""
    return min(BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def recipients_path(settings: Settings) -> Path:
    return settings.alert_recipients


def load_recipients(path: Path) -> dict[str, list[str]]:
    """role or name -> e-mail addresses, from a YAML mapping (a value: one address or a list)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping of recipient -> e-mail addresses")
    table: dict[str, list[str]] = {}
    for key, value in data.items():
        addresses = [value] if isinstance(value, str) else value
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and "@" in a for a in addresses):
            raise ValueError(f"{path}: {key}: one e-mail address or a list of them")
        table[str(key)] = addresses
    return table


def resolver(table: dict[str, list[str]]) -> Callable[[str], list[str]]:
    """`director:000.00.12.H25` is looked up as itself, then as `director`."""
    def resolve(recipient: str) -> list[str]:
        if recipient in table:
            return table[recipient]
        role = recipient.split(":", 1)[0]
        if role in table:
            return table[role]
        return [recipient] if "@" in recipient else []
    return resolve


@dataclass(frozen=True)
class Delivery:
    id: int
    recipient: str
    state: str  # sent | pending (will retry) | failed (gave up)
    attempts: int
    error: str | None = None


DUE = """
SELECT o.id, o.recipient, o.attempts, a.rule, a.scope, a.state, a.severity, a.value,
       a.threshold, a.comparison, a.at,
       (SELECT p.at FROM alerts p WHERE p.rule = a.rule AND p.scope = a.scope
          AND p.state = 'pending' AND (p.at, p.seq) < (a.at, a.seq)
          AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.rule = a.rule AND r.scope = a.scope
                          AND r.state = 'resolved' AND (r.at, r.seq) > (p.at, p.seq)
                          AND (r.at, r.seq) < (a.at, a.seq))
          ORDER BY p.at DESC, p.seq DESC LIMIT 1) AS pending_since
FROM alert_outbox o JOIN alerts a ON a.seq = o.alert_seq
WHERE o.state = 'pending' AND o.next_attempt_at <= %(now)s AND o.channel = 'email'
  AND o.id > %(after)s
ORDER BY o.id
LIMIT 1
FOR UPDATE OF o SKIP LOCKED
"""


def deliver(settings: Settings, config: SmtpConfig, now: datetime,
            rules: Sequence[Rule] = ()) -> list[Delivery]:
    """Send every row due at `now`; returns what happened to each."""
    if now.tzinfo is None:
        raise ValueError("now must have a time zone")
    tz = ZoneInfo(settings.timezone)
    metrics = {rule.name: rule.metric for rule in rules}
    done: list[Delivery] = []
    after = 0
    with connect(settings) as conn:
        while True:
            with conn.transaction():
                row = conn.execute(DUE, {"now": now, "after": after}).fetchone()
                if row is None:
                    break
                (id_, recipient, attempts, rule, scope, state, severity, value, threshold,
                 comparison, at, pending_since) = row
                after = id_
                notice = Notice(rule=rule, metric=metrics.get(rule, rule), scope=scope,
                                state=state, severity=severity, value=value,
                                threshold=threshold, comparison=comparison, at=at,
                                since=pending_since or at)
                message = email.compose(notice, config.sender, recipient,
                                        config.dashboard_url, tz)
                try:
                    email.send(config, message)
                except Exception as exc:  # any failure: retry later
                    attempts += 1
                    error = f"{type(exc).__name__}: {exc}"[:500]
                    final = attempts >= MAX_ATTEMPTS
                    conn.execute(
                        "UPDATE alert_outbox SET attempts = %s, last_error = %s, state = %s,"
                        " next_attempt_at = %s WHERE id = %s",
                        (attempts, error, "failed" if final else "pending",
                         now + backoff(attempts), id_))
                    log.warning("alert e-mail not sent", recipient=recipient, rule=rule,
                                scope=scope, attempts=attempts, error=error, gave_up=final)
                    done.append(Delivery(id_, recipient, "failed" if final else "pending",
                                         attempts, error))
                else:
                    conn.execute(
                        "UPDATE alert_outbox SET attempts = attempts + 1, state = 'sent',"
                        " sent_at = now(), last_error = NULL WHERE id = %s", (id_,))
                    log.info("alert e-mail sent", recipient=recipient, rule=rule, scope=scope,
                             state=state)
                    done.append(Delivery(id_, recipient, "sent", attempts + 1))
    return done


def enqueue_and_deliver(settings: Settings, config: SmtpConfig, now: datetime,
                        rules: Sequence[Rule] = (),
                        recipients: Path | None = None) -> list[Delivery]:
    """Queue the new transitions (recipients from the YAML file), then send what is due."""
    resolve = resolver(load_recipients(recipients or recipients_path(settings)))
    with connect(settings) as conn:
        enqueue(conn, resolve, now)
    return deliver(settings, config, now, rules)

