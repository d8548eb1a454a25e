"""Evaluation of alert rules (each measured by its kind, ioc/alerts/kinds.py), and the state
transitions it makes.

Per (rule, scope key) the state is the newest row of the `alerts` table (none or `resolved`:
ok). At each evaluation, with the condition `value <comparison> threshold`:

    ok       + true   -> pending  (firing at once when `for` is 0)
    pending  + true   -> firing   once true for at least `for` since the pending row
    pending  + false  -> resolved (never fired)
    firing   + false  -> resolved
    firing   + true   -> firing   again (a reminder) once `quiet` has passed since the last
                                  firing row was due (its notify_after); `quiet` 0: never
    acknowledged + true -> (nothing: no reminder until it resolves)
    silenced + true   -> firing   once `silenced_until` has passed (nothing before)
    acknowledged / silenced + false -> resolved (a resolved message goes out: it had fired)

`acknowledged` and `silenced` rows are written by people (ioc/alerts/ack.py), never here.
Only transitions are written, each with its value and threshold: evaluating twice at the same
`now` writes nothing the second time. A scope that has no value any more (no data in the
window, a NULL rate) counts as false.

The KPIs are read as of `now` (late, due soon, overdue, open as they stood then), and the
window bounds come from it: evaluating a past `now` gives what that moment showed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg

from ioc.alerts.kinds import KINDS
from ioc.alerts.measurement import Measurement
from ioc.alerts.rules import Rule
from ioc.core.db import connect
from ioc.core.settings import Settings

EVALUATE_LOCK = 72_114_006  # pg_advisory_xact_lock key: one evaluator writes at a time


@dataclass(frozen=True)
class Transition:
    at: datetime
    rule: str
    scope: str
    state: str  # pending | firing | resolved
    previous: str  # ok | pending | firing | acknowledged | silenced
    value: Decimal | None
    threshold: Decimal
    comparison: str
    severity: str
    recipients: tuple[str, ...]
    notify_after: datetime | None
    missing: tuple[str, ...] = ()  # the part of the value's inputs not received

    def __str__(self) -> str:
        value = "no data" if self.value is None else f"{self.value}"
        return (f"{self.rule} [{self.scope}] {self.previous} -> {self.state}: "
                f"{value} {self.comparison} {self.threshold}")


@dataclass(frozen=True)
class Current:
    state: str
    at: datetime
    until: datetime | None = None  # silenced: until when
    notified_at: datetime | None = None  # when the newest firing row was due (reminders)


def measure(conn: psycopg.Connection, rule: Rule, now: datetime, tz: ZoneInfo,
            ) -> list[Measurement]:
    """The rule's metric for each of its scope keys at `now`, as its kind measures it
    (ioc/alerts/kinds.py KINDS)."""
    return KINDS[rule.kind](conn, rule, now, tz)


def current_states(conn: psycopg.Connection, rules: Iterable[str] | None = None,
                   ) -> dict[tuple[str, str], Current]:
    """The newest row of each (rule, scope) that is not resolved, with when its newest firing
    row was due (the reminder cadence counts from there)."""
    names = None if rules is None else list(rules)
    rows = conn.execute(
        "SELECT n.rule, n.scope, n.state, n.at, n.silenced_until,"
        " (SELECT greatest(f.at, f.notify_after) FROM alerts f"
        "   WHERE f.rule = n.rule AND f.scope = n.scope AND f.state = 'firing'"
        "   ORDER BY f.at DESC, f.seq DESC LIMIT 1)"
        " FROM (SELECT DISTINCT ON (rule, scope) rule, scope, state, at, silenced_until"
        "       FROM alerts WHERE %(names)s::text[] IS NULL OR rule = ANY(%(names)s::text[])"
        "       ORDER BY rule, scope, at DESC, seq DESC) n"
        " WHERE n.state <> 'resolved'",
        {"names": names},
    ).fetchall()
    return {(r, s): Current(state, at, until, notified)
            for r, s, state, at, until, notified in rows}


def reminder_due(rule: Rule, current: Current, now: datetime) -> bool:
    """A firing alert is told again once `quiet` has passed since its last message was due:
    never more often than `quiet`, and never twice while working hours hold one back."""
    if rule.quiet.total_seconds() <= 0 or current.notified_at is None:
        return False
    return now >= current.notified_at + rule.quiet


def fires_now(rule: Rule, current: Current, now: datetime) -> bool:
    """Whether a (rule, scope) in `current` whose condition holds writes a firing row at `now`:
    pending for long enough, its silence over, or a reminder due (acknowledged: never)."""
    if current.state == "pending":
        return now - current.at >= rule.for_
    if current.state == "silenced":
        return current.until is not None and now >= current.until
    if current.state == "firing":
        return reminder_due(rule, current, now)
    return False


def plan(rules: Sequence[Rule], measurements: Iterable[Measurement],
         states: dict[tuple[str, str], Current], now: datetime, tz: ZoneInfo,
         ) -> list[Transition]:
    """The transitions these measurements make from these states (pure: writes nothing)."""
    by_name = {rule.name: rule for rule in rules}
    seen: set[tuple[str, str]] = set()
    transitions = []

    def make(rule: Rule, scope: str, state: str, previous: str,
             value: Decimal | None, threshold: Decimal | None = None,
             missing: tuple[str, ...] = ()) -> Transition:
        return Transition(
            at=now, rule=rule.name, scope=scope, state=state, previous=previous, value=value,
            threshold=rule.threshold if threshold is None else threshold,
            comparison=rule.comparison, severity=rule.severity,
            recipients=rule.recipients_for(scope),
            notify_after=rule.notify_after(now, tz) if state == "firing" else None,
            missing=missing,
        )

    for m in measurements:
        key = (m.rule.name, m.scope)
        seen.add(key)
        current = states.get(key)
        if current and current.at > now:
            continue  # a person acked or silenced after this `now`: the next round decides
        state = current.state if current else "ok"
        if m.breached:
            if state == "ok":
                target = "firing" if m.rule.for_.total_seconds() == 0 else "pending"
                transitions.append(make(m.rule, m.scope, target, state, m.value, m.threshold,
                                        m.missing))
            elif current and fires_now(m.rule, current, now):
                transitions.append(make(m.rule, m.scope, "firing", state, m.value, m.threshold,
                                        m.missing))
        elif state != "ok":
            transitions.append(make(m.rule, m.scope, "resolved", state, m.value, m.threshold,
                                    m.missing))
    # Scopes with a state but no value any more (no data in the window): the condition is false.
    for (name, scope), current in states.items():
        if name in by_name and (name, scope) not in seen and current.at <= now:
            transitions.append(make(by_name[name], scope, "resolved", current.state, None))
    return transitions


def evaluate(settings: Settings, rules: Sequence[Rule], now: datetime, *,
             write: bool = True) -> list[Transition]:
    """Evaluate the rules at `now` (timezone-aware), write the transitions (unless `write` is
    false) and return them."""
    if now.tzinfo is None:
        raise ValueError("now must have a time zone")
    tz = ZoneInfo(settings.timezone)
    with connect(settings) as conn, conn.transaction():
        if write:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVALUATE_LOCK,))
        states = current_states(conn, [r.name for r in rules])
        measurements = [m for rule in rules for m in measure(conn, rule, now, tz)]
        transitions = plan(rules, measurements, states, now, tz)
        if write and transitions:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO alerts (at, rule, scope, state, value, threshold, comparison,"
                    " severity, recipients, notify_after, missing)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(t.at, t.rule, t.scope, t.state, t.value, t.threshold, t.comparison,
                      t.severity, list(t.recipients), t.notify_after, list(t.missing))
                     for t in transitions],
                )
    return transitions


def measure_all(settings: Settings, rules: Sequence[Rule], now: datetime,
                ) -> list[Measurement]:
    """Every rule's values at `now`, read-only (for `ioc alerts test`)."""
    tz = ZoneInfo(settings.timezone)
    with connect(settings) as conn:
        conn.read_only = True
        return [m for rule in rules for m in measure(conn, rule, now, tz)]
