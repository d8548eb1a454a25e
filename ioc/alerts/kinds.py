"""The rule kinds (ioc/alerts/rules.py `kind:`): KINDS, the registry the evaluator measures
through, and the kinds that read the state tables directly. Each kind is a function of the
AlertKind protocol (ioc/alerts/measurement.py) returning the Measurements of the rule's scopes
at `now`. A new kind is a module with such a function plus its entry in KINDS (and its name
and fields in rules.py `Kind`); `threshold` rules read the KPI functions (threshold.py).

- due_soon: dossiers in process as of `now` (dossier_facts_at: status 1, 2, 4, 5, 6, or
  finished after `now`) whose deadline is in [now, now + within): the same boundaries as the
  `due_soon` KPI, so an open dossier is late, due soon or not yet due, never two. Value: the
  count; `each agency` lists every agency with an open dossier (0 when none is due soon, so a
  resolved alert says 0).
- surge: field reports requested in the window (`last 1 hour`) against the usual count, the
  mean of the same window (same local time of day, settings.timezone) on each of the
  `baseline` previous days, days without reports counting 0. Value: the current count;
  breached when count >= min_count and count >= factor x usual (SurgeMeasurement.threshold).
- no_signal: minutes since the source last sent something: the newest `ingested_at` (when its
  connector read the record) of its events, or its connector's cursor move
  (connector_cursors.updated_at), whichever is newer; both only up to `now`. `each source` is
  every connector with a cursor and every source with an event in the last LOOKBACK.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from ioc.alerts.grammar import Scope
from ioc.alerts.measurement import AlertKind, Measurement
from ioc.alerts.rules import Rule
from ioc.alerts.threshold import threshold

LOOKBACK = timedelta(days=35)  # how far back `each source` looks for sources in events

# Scope -> (SQL of its key, label of the key in the scope string)
KEYS = {"agency": "agency_code", "commune": "commune_code"}


def _key(scope: Scope) -> tuple[sql.Composable, sql.Composable, dict[str, object]]:
    """The SQL of a scope: its key expression (`'province'`, `agency:` || code...), the filter
    it adds, and the filter's parameters."""
    if scope.kind == "province":
        return sql.Literal("province"), sql.SQL("true"), {}
    prefix = scope.kind.removeprefix("each_")
    column = sql.Identifier(KEYS[prefix])
    key = sql.SQL("{prefix} || {column}").format(prefix=sql.Literal(f"{prefix}:"), column=column)
    if scope.kind.startswith("each_"):
        return key, sql.SQL("{column} <> ''").format(column=column), {}
    return key, sql.SQL("{column} = %(code)s").format(column=column), {"code": scope.code}


def _fixed(scope: Scope) -> str | None:
    """The one scope key of a fixed scope (province, agency: X...), None for `each ...`."""
    if scope.kind == "province":
        return "province"
    return None if scope.kind.startswith("each_") else f"{scope.kind}:{scope.code}"


def due_soon(conn: psycopg.Connection, rule: Rule, now: datetime,
             tz: ZoneInfo) -> list[Measurement]:
    since, until = rule.window.bounds(now, tz)
    key, where, params = _key(rule.scope)
    query = sql.SQL(
        "SELECT {key}, count(*) FILTER (WHERE due_at >= %(since)s AND due_at < %(until)s)"
        " FROM dossier_facts_at(%(now)s) WHERE in_process AND {where} GROUP BY 1 ORDER BY 1"
    ).format(key=key, where=where)
    rows = conn.execute(query, {**params, "since": since, "until": until,
                                "now": now}).fetchall()
    counts = {k: Decimal(n) for k, n in rows}
    fixed = _fixed(rule.scope)
    if fixed is not None:
        return [Measurement(rule, fixed, counts.get(fixed, Decimal(0)))]
    return [Measurement(rule, k, n) for k, n in counts.items()]


@dataclass(frozen=True)
class SurgeMeasurement(Measurement):
    """A surge's count, with the usual count and the threshold they make for this scope:
    max(min_count, factor x usual)."""

    usual: Decimal = Decimal(0)
    threshold: Decimal = Decimal(0)

    @property
    def breached(self) -> bool:
        return self.value is not None and self.value >= self.threshold


def surge(conn: psycopg.Connection, rule: Rule, now: datetime,
          tz: ZoneInfo) -> list[Measurement]:
    assert rule.window.length is not None and rule.baseline is not None
    assert rule.factor is not None
    days = rule.baseline.days
    key, where, params = _key(rule.scope)
    # Day 0 is the current window, days 1..N the same local time on the previous days
    # (wall-clock arithmetic in the time zone: right across daylight saving changes too).
    query = sql.SQL(
        "SELECT {key}, count(*) FILTER (WHERE d.day = 0), count(*) FILTER (WHERE d.day > 0)"
        " FROM generate_series(0, %(days)s) AS d(day)"
        " CROSS JOIN LATERAL (SELECT ((%(now)s::timestamptz AT TIME ZONE %(tz)s)"
        "     - make_interval(days => d.day)) AT TIME ZONE %(tz)s AS until) w"
        " JOIN field_reports r ON r.anchor_at >= w.until - %(length)s AND r.anchor_at < w.until"
        " WHERE {where} GROUP BY 1 ORDER BY 1"
    ).format(key=key, where=where)
    rows = conn.execute(query, {**params, "days": days, "now": now, "tz": tz.key,
                                "length": rule.window.length}).fetchall()
    counts = {k: (Decimal(current), Decimal(past) / days) for k, current, past in rows}
    fixed = _fixed(rule.scope)
    if fixed is not None:
        counts.setdefault(fixed, (Decimal(0), Decimal(0)))
    out: list[Measurement] = []
    for k, (current, usual) in counts.items():
        usual = usual.quantize(Decimal("0.01"), ROUND_HALF_UP)
        threshold = max(rule.threshold, rule.factor * usual)
        out.append(SurgeMeasurement(rule, k, current, usual=usual, threshold=threshold))
    return out


def no_signal(conn: psycopg.Connection, rule: Rule, now: datetime,
              tz: ZoneInfo) -> list[Measurement]:
    assert rule.expected is not None
    name = rule.scope.code if rule.scope.kind == "source" else None
    rows = conn.execute(
        "SELECT source, max(at) FROM ("
        "  SELECT source, max(ingested_at) AS at FROM events"
        "  WHERE occurred_at >= %(horizon)s AND ingested_at <= %(now)s"
        "    AND (%(name)s::text IS NULL OR source = %(name)s) GROUP BY source"
        "  UNION ALL"
        "  SELECT connector, updated_at FROM connector_cursors"
        "  WHERE updated_at <= %(now)s AND (%(name)s::text IS NULL OR connector = %(name)s)"
        ") s GROUP BY source ORDER BY source",
        {"horizon": now - max(LOOKBACK, 2 * rule.expected), "now": now, "name": name},
    ).fetchall()
    silent = {f"source:{source}": _minutes(now - at) for source, at in rows}
    if name is not None:  # never heard of (in LOOKBACK): no data, which never fires
        return [Measurement(rule, f"source:{name}", silent.get(f"source:{name}"))]
    return [Measurement(rule, k, v) for k, v in silent.items()]


def _minutes(silence: timedelta) -> Decimal:
    seconds = max(int(silence.total_seconds()), 0)
    return (Decimal(seconds) / 60).quantize(Decimal("0.01"), ROUND_HALF_UP)


KINDS: dict[str, AlertKind] = {"threshold": threshold, "due_soon": due_soon, "surge": surge,
                               "no_signal": no_signal}
