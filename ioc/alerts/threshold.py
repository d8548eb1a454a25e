"""The `threshold` kind (the default): a KPI of the catalogue, read through its SQL function
(kpi_dossiers, kpi_documents, kpi_field_reports) over the rule's window, for each scope key,
as of `now` (late, overdue and open as they stand at the evaluation's time).
One module like every kind, so the evaluator never tells the default kind apart.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from ioc.alerts.measurement import Measurement
from ioc.alerts.rules import Rule
from ioc.core.kpis import KPIS

SCOPE_COLUMN = {"each_agency": "agency_code", "each_commune": "commune_code"}


def threshold(conn: psycopg.Connection, rule: Rule, now: datetime,
              tz: ZoneInfo) -> list[Measurement]:
    function, column, table = rule.kpi
    since, until = rule.window.bounds(now, tz)
    kpi = KPIS.get(rule.metric)
    inputs = [i.column for i in kpi.inputs] if kpi else []  # to say what the value lacks
    fn = sql.Identifier(function)
    col = sql.SQL(", ").join(sql.SQL("k.{}").format(sql.Identifier(c))
                             for c in (column, *inputs))

    def missing(row: tuple) -> tuple[str, ...]:
        return tuple(kpi.missing(dict(zip((column, *inputs), row, strict=True)))) \
            if kpi and row else ()
    scope = rule.scope
    if scope.kind in SCOPE_COLUMN:
        key = sql.Identifier(SCOPE_COLUMN[scope.kind])
        unit_arg, agency_arg = ((sql.SQL("s.key"), sql.SQL("NULL"))
                                if scope.kind == "each_commune"
                                else (sql.SQL("NULL"), sql.SQL("s.key")))
        query = sql.SQL(
            "SELECT s.key, {col} FROM (SELECT DISTINCT {key} AS key FROM {table}"
            " WHERE anchor_at >= %(since)s AND anchor_at < %(until)s AND {key} <> '') s,"
            " LATERAL {fn}(%(since)s, %(until)s, {unit}, {agency}, NULL, %(now)s) k"
            " ORDER BY s.key"
        ).format(col=col, key=key, table=sql.Identifier(table), fn=fn, unit=unit_arg,
                 agency=agency_arg)
        prefix = "agency" if scope.kind == "each_agency" else "commune"
        rows = conn.execute(query, {"since": since, "until": until, "now": now}).fetchall()
        return [Measurement(rule, f"{prefix}:{r[0]}", _number(r[1]), missing(r[1:]))
                for r in rows]
    query = sql.SQL("SELECT {col} FROM {fn}(%(since)s, %(until)s, %(unit)s, %(agency)s,"
                    " NULL, %(now)s) k").format(col=col, fn=fn)
    params = {"since": since, "until": until, "now": now,
              "unit": scope.code if scope.kind == "commune" else None,
              "agency": scope.code if scope.kind == "agency" else None}
    row = conn.execute(query, params).fetchone()
    key = "province" if scope.kind == "province" else f"{scope.kind}:{scope.code}"
    return [Measurement(rule, key, _number(row[0] if row else None),
                        missing(row) if row else ())]


def _number(value: object) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))
