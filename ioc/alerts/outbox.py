"""The alert outbox: each firing or resolved transition in `alerts` becomes one row per
(transition, recipient address, channel) in `alert_outbox` (migration 0008), state `pending`
until ioc/alerts/deliver.py sends it (`sent`), gives up (`failed`) or drops a firing notice
whose alert a person acknowledged or silenced meanwhile (`cancelled`, migration 0015).
`recipient` is the address on its channel: e-mail address, Telegram chat id, Zalo user id
or webhook URL.

Queuing is idempotent: the rows are found from the `alerts` table itself (not from what one
evaluation returned) and the unique key (alert_seq, recipient, channel) means a transition is
never queued twice, however often or by how many processes `enqueue` runs.

A `resolved` transition is queued only when the alert had fired (pending -> resolved told
nobody anything), also after an acknowledgement or a silence; it is not sent before the
newest firing's `notify_after`. A reminder (firing -> firing, evaluate.py) is a firing row:
queued like the first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta

import psycopg
import structlog

from ioc.alerts.recipients import Address

log = structlog.get_logger()

CHANNEL = "email"  # of an address given as a plain string

# Firing transitions, and resolved ones that follow a firing, not yet (fully) queued.
NEW_TRANSITIONS = """
SELECT seq, recipients, next_attempt_at FROM (
    SELECT seq, at, state, recipients,
           CASE WHEN state = 'firing' THEN coalesce(notify_after, at)
                ELSE greatest(at, coalesce(max(notify_after) OVER (w ROWS BETWEEN UNBOUNDED
                                                   PRECEDING AND 1 PRECEDING), at))
           END AS next_attempt_at,
           lag(state) OVER w AS previous
    FROM alerts
    WHERE at >= %(since)s - %(lookback)s
    WINDOW w AS (PARTITION BY rule, scope ORDER BY at, seq)
) t
WHERE at >= %(since)s
  AND (state = 'firing'
       OR (state = 'resolved' AND previous IN ('firing', 'acknowledged', 'silenced')))
  AND NOT EXISTS (SELECT 1 FROM alert_outbox o WHERE o.alert_seq = t.seq)
ORDER BY seq
"""


def enqueue(conn: psycopg.Connection, resolve: Callable[[str], Iterable[Address | str]],
            now: datetime, max_age: timedelta = timedelta(days=2),
            lookback: timedelta = timedelta(days=62),
            channels: Collection[str] | None = None) -> int:
    """Queue the transitions of the last `max_age` before `now` that are not queued yet.

    `resolve` turns a rule's recipient (role or name) into addresses (a plain string is an
    e-mail address); one it cannot resolve is logged and skipped, and so is an address on a
    channel not in `channels` (not configured; None: all). `lookback` is how far back the
    firing of a resolved alert is looked for. Returns the number of rows added."""
    added = 0
    with conn.transaction():
        rows = conn.execute(NEW_TRANSITIONS, {"since": now - max_age,
                                              "lookback": lookback}).fetchall()
        for seq, recipients, next_attempt_at in rows:
            for role in recipients:
                addresses = list(resolve(role))
                if not addresses:
                    log.warning("alert recipient has no address", recipient=role,
                                alert_seq=seq)
                for address in addresses:
                    channel, target = ((CHANNEL, address) if isinstance(address, str)
                                       else address)
                    if channels is not None and channel not in channels:
                        log.warning("alert channel not configured", channel=channel,
                                    recipient=role, alert_seq=seq)
                        continue
                    cur = conn.execute(
                        "INSERT INTO alert_outbox (alert_seq, recipient, channel, role,"
                        " next_attempt_at) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (alert_seq, recipient, channel) DO NOTHING",
                        (seq, target, channel, role, next_attempt_at))
                    added += cur.rowcount
    return added
