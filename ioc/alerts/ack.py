"""What people do to an alert: see the current ones, acknowledge one, silence one for a while.

Each action is a row of `alerts` (migration 0009), like the evaluator's transitions, written
under the evaluator's lock so the two never interleave:

    acknowledged: still firing, but no reminder until it resolves (then a resolved message);
    silenced:     no message until `silenced_until`; then the evaluator fires it again if the
                  condition still holds.

An alert is named by its id, the `alerts.seq` of one of its rows (the firing row that started
it, a reminder, ...), or by `RULE/SCOPE` (its current alert). An id of an alert that has
resolved since is refused (AlertConflict), even when the same rule fires again: an old link
never acknowledges a newer alert. Acknowledging twice writes one row (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg

from ioc.alerts.evaluate import EVALUATE_LOCK
from ioc.core.db import connect
from ioc.core.settings import Settings


class AlertNotFound(LookupError):
    """No alert has that id (or that rule and scope)."""


class AlertConflict(ValueError):
    """The alert exists but cannot take the action (resolved, or not firing yet)."""


@dataclass(frozen=True)
class Ref:
    """An alert's id (`alerts.seq`), or its rule and scope."""

    seq: int | None = None
    rule: str | None = None
    scope: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        """`42`, `RULE/SCOPE` or `RULE` (scope `province`)."""
        text = text.strip()
        if text.isdigit():
            return cls(seq=int(text))
        rule, _, scope = text.partition("/")
        if not rule:
            raise ValueError(f"{text!r}: an alert id (a number) or RULE/SCOPE")
        return cls(rule=rule, scope=scope or "province")

    def __str__(self) -> str:
        return str(self.seq) if self.seq is not None else f"{self.rule}/{self.scope}"


@dataclass(frozen=True)
class Alert:
    """A (rule, scope) that has fired and not resolved."""

    id: int  # seq of the firing row that started it
    rule: str
    scope: str
    state: str  # firing | acknowledged | silenced
    since: datetime  # when it started firing
    state_at: datetime  # when it took its state
    value: Decimal | None
    threshold: Decimal
    comparison: str
    severity: str
    actor: str | None
    note: str | None
    silenced_until: datetime | None
    state_seq: int  # seq of its newest row
    missing: list[str] = field(default_factory=list)  # what its value lacked (Kpi.missing)

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "rule": self.rule, "scope": self.scope, "state": self.state,
                "since": self.since.isoformat(), "state_at": self.state_at.isoformat(),
                "value": None if self.value is None else str(self.value),
                "threshold": str(self.threshold), "comparison": self.comparison,
                "severity": self.severity, "actor": self.actor, "note": self.note,
                "silenced_until": self.silenced_until and self.silenced_until.isoformat(),
                "missing": list(self.missing)}


@dataclass(frozen=True)
class Outcome:
    alert: Alert  # after the action
    changed: bool  # false: it already was acknowledged (nothing written)


# The newest row of each (rule, scope) that has fired since its last resolved row, with the
# first firing row after that (the alert's id).
CURRENT = """
SELECT f.seq, n.rule, n.scope, n.state, f.at, n.at, n.value, n.threshold, n.comparison,
       n.severity, n.actor, n.note, n.silenced_until, n.seq, n.missing
FROM (SELECT DISTINCT ON (rule, scope) * FROM alerts
      WHERE %(rule)s::text IS NULL OR (rule = %(rule)s AND scope = %(scope)s)
      ORDER BY rule, scope, at DESC, seq DESC) n
CROSS JOIN LATERAL (
    SELECT a.seq, a.at FROM alerts a
    WHERE a.rule = n.rule AND a.scope = n.scope AND a.state = 'firing'
      AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.rule = a.rule AND r.scope = a.scope
                      AND r.state = 'resolved' AND (r.at, r.seq) > (a.at, a.seq))
    ORDER BY a.at, a.seq LIMIT 1) f
WHERE n.state IN ('firing', 'acknowledged', 'silenced')
ORDER BY f.at, f.seq
"""


def current_alerts(conn: psycopg.Connection) -> list[Alert]:
    """Every alert that has fired and not resolved, oldest first."""
    rows = conn.execute(CURRENT, {"rule": None, "scope": None}).fetchall()
    return [Alert(*row) for row in rows]


def find(conn: psycopg.Connection, ref: Ref) -> Alert:
    """The current alert `ref` names; AlertNotFound or AlertConflict (resolved, pending)."""
    if ref.seq is not None:
        row = conn.execute("SELECT rule, scope, at FROM alerts WHERE seq = %s",
                           (ref.seq,)).fetchone()
        if row is None:
            raise AlertNotFound(f"no alert with id {ref.seq}")
        rule, scope, at = row
        resolved = conn.execute(
            "SELECT at FROM alerts WHERE rule = %s AND scope = %s AND state = 'resolved'"
            " AND (at, seq) >= (%s, %s) ORDER BY at, seq LIMIT 1",
            (rule, scope, at, ref.seq)).fetchone()
        if resolved is not None:
            raise AlertConflict(f"alert {ref.seq} ({rule} {scope}) already resolved at "
                                f"{resolved[0].isoformat()}")
    else:
        rule, scope = ref.rule, ref.scope
    row = conn.execute(CURRENT, {"rule": rule, "scope": scope}).fetchone()
    if row is not None:
        return Alert(*row)
    newest = conn.execute(
        "SELECT state FROM alerts WHERE rule = %s AND scope = %s ORDER BY at DESC, seq DESC"
        " LIMIT 1", (rule, scope)).fetchone()
    if newest is None:
        raise AlertNotFound(f"no alert for rule {rule!r} and scope {scope!r}")
    if newest[0] == "pending":
        raise AlertConflict(f"{ref}: {rule} {scope} is pending, not firing yet")
    raise AlertConflict(f"{ref}: {rule} {scope} is not firing (resolved)")


def _act(settings: Settings, ref: Ref, state: str, actor: str, note: str | None,
         until: datetime | None, now: datetime) -> Outcome:
    if now.tzinfo is None:
        raise ValueError("now must have a time zone")
    with connect(settings, connect_timeout=5) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVALUATE_LOCK,))
        alert = find(conn, ref)
        if state == "acknowledged" and alert.state == "acknowledged":
            return Outcome(alert, changed=False)
        # Never before the newest row: the state is the newest row.
        conn.execute(
            "INSERT INTO alerts (at, rule, scope, state, value, threshold, comparison, severity,"
            " recipients, actor, note, silenced_until, missing)"
            " SELECT greatest(%(now)s, at), rule, scope, %(state)s, value, threshold,"
            " comparison, severity, recipients, %(actor)s, %(note)s, %(until)s, missing"
            " FROM alerts WHERE seq = %(seq)s",
            {"now": now, "state": state, "actor": actor, "note": note, "until": until,
             "seq": alert.state_seq})
        return Outcome(find(conn, Ref(rule=alert.rule, scope=alert.scope)), changed=True)


def acknowledge(settings: Settings, ref: Ref, actor: str, note: str | None,
                now: datetime) -> Outcome:
    """Acknowledge a firing (or silenced) alert: no reminder until it resolves."""
    return _act(settings, ref, "acknowledged", actor, note, None, now)


def silence(settings: Settings, ref: Ref, until: datetime, actor: str, note: str | None,
            now: datetime) -> Outcome:
    """No message for this alert until `until` (after `now`); then it fires again if the
    condition still holds."""
    if until <= now:
        raise ValueError("a silence must end after now")
    return _act(settings, ref, "silenced", actor, note, until, now)
