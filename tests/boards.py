"""What the dashboard tests share: a generated dashboard's queries, run as Grafana would."""

from typing import Any

import psycopg

from dashboards.macros import Context, Variable, expand

Board = dict[str, Any]


def queries(board: Board) -> list[str]:
    """Every panel query of a dashboard (its JSON form)."""
    return [t["rawSql"] for p in board["panels"] for t in p["targets"]]


def run(conn: psycopg.Connection, sql: str, ctx: Context) -> tuple[list[str], list[tuple]]:
    """A panel or variable query after Grafana's macro expansion: its columns and rows."""
    cursor = conn.execute(expand(sql, ctx))
    rows = cursor.fetchall()
    return [c.name for c in cursor.description or []], rows


def variable(spec: dict[str, Any], value: str | None, options: list[str]) -> Variable:
    """A dashboard variable (its JSON form) set to `value` among `options`."""
    return Variable(spec["name"], value, options=options, multi=spec["multi"],
                    include_all=spec["includeAll"], all_value=spec.get("allValue"))
