"""Grafana's PostgreSQL query interpolation, reproduced so tests run the SQL Grafana would run.

Behaviour follows Grafana 11.6 (grafana/grafana):
- template variables, interpolated by the frontend before the query leaves the browser
  (`SqlDatasource.interpolateVariable` and the scenes variable formats);
- `pkg/tsdb/grafana-postgresql-datasource/sqleng/sql_engine.go` `Interpolate`: the global
  substitutions `$__interval_ms`, `$__interval`, `$__unixEpochFrom()`, `$__unixEpochTo()`;
- `pkg/tsdb/grafana-postgresql-datasource/macros.go`: the `$__name(args)` macros, one regular
  expression, times in UTC as Go's RFC 3339 with nanoseconds (trailing zeros dropped),
  `time_bucket('%.3fs', col)` when the datasource has TimescaleDB enabled,
  `floor(extract(epoch from col)/N)*N` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")
DATE_UNIT = re.compile(r"^(\d+)([dw])$")
GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|µs|ms|s|m|h)")
UNITS = {"us": timedelta(microseconds=1), "µs": timedelta(microseconds=1),
         "ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
         "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown name, missing argument, bad interval)."""


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable and its current selection (None: "All")."""

    name: str
    value: str | list[str] | None
    options: list[str] = field(default_factory=list)  # what "All" stands for without all_value
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


@dataclass(frozen=True)
class Context:
    """What Grafana knows when it runs a query: the time range, the interval, the variables."""

    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    timescaledb: bool = True
    variables: Mapping[str, Variable] = field(default_factory=dict)


def go_rfc3339nano(moment: datetime) -> str:
    """Go's `t.UTC().Format(time.RFC3339Nano)`: fraction without trailing zeros, `Z`."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_float(value: float) -> str:
    """Go's `%v` for a float64 (shortest representation, integers without a point)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit (y, d, h, m, s, ms; no weeks)."""
    steps = [("y", timedelta(days=365)), ("d", timedelta(days=1)),
             ("h", timedelta(hours=1)), ("m", timedelta(minutes=1)), ("s", timedelta(seconds=1)),
             ("ms", timedelta(milliseconds=1))]
    for suffix, unit in steps:
        if interval >= unit:
            return f"{interval // unit}{suffix}"
    return "1ms"


def parse_interval(text: str) -> timedelta:
    """gtime.ParseInterval: `<n>d` / `<n>w`, else a Go duration (`90s`, `1h30m`, `1.5h`).

    Months and years (calendar-dependent in gtime) are not supported here.
    """
    text = text.strip()
    if found := DATE_UNIT.match(text):
        return int(found[1]) * UNITS[found[2]]
    parts = GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise MacroError(f"error parsing interval {text}")
    return sum((float(n) * UNITS[u] for n, u in parts), timedelta())


def _epoch(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() // 1)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(variable: Variable, fmt: str | None) -> str:
    if variable.value is None and variable.all_value is not None:
        return variable.all_value  # a custom "All" value goes in as it is
    values = variable.options if variable.value is None else variable.value
    if fmt in (None, "") and isinstance(values, str):  # the datasource's own formatting
        quote = variable.multi or variable.include_all
        return _quote(values) if quote else values.replace("'", "''")
    items = [values] if isinstance(values, str) else list(values)
    match fmt:
        case None | "" | "sqlstring":
            return ",".join(_quote(v) for v in items)
        case "csv" | "raw":
            return ",".join(items)
        case "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in items)
        case "doublequote":
            return ",".join('"' + v.replace('"', '\\"') + '"' for v in items)
        case _:
            raise MacroError(f"unsupported variable format {fmt}")


def interpolate_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """The frontend's template substitution: `$var`, `${var}`, `${var:fmt}`, `[[var]]`."""

    def replace(found: re.Match[str]) -> str:
        name = found[1] or found[3] or found[5]
        fmt = found[2] or found[4]
        if name not in variables:
            return found[0]  # Grafana leaves unknown names (and `$__macros`) alone
        return _format(variables[name], fmt)

    return VARIABLE.sub(replace, sql)


def interpolate_globals(sql: str, ctx: Context) -> str:
    """sqleng.Interpolate: the substitutions every SQL datasource shares."""
    sql = sql.replace("$__interval_ms", str(ctx.interval // timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", format_interval(ctx.interval))
    sql = sql.replace("$__unixEpochFrom()", str(_epoch(ctx.time_from)))
    return sql.replace("$__unixEpochTo()", str(_epoch(ctx.time_to)))


def _group(args: Sequence[str], ctx: Context, name: str, *, timescale: bool) -> str:
    if len(args) < 2:
        raise MacroError(f"macro {name} needs time column and interval and optional fill value")
    seconds = parse_interval(args[1].strip("'")).total_seconds()
    if timescale:
        return f"time_bucket('{seconds:.3f}s',{args[0]})"
    if name == "__unixEpochGroup":
        return f"floor(({args[0]})/{go_float(seconds)})*{go_float(seconds)}"
    return f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"


def evaluate(name: str, args: Sequence[str], ctx: Context) -> str:
    """One macro, as postgresMacroEngine.evaluateMacro."""
    start, end = ctx.time_from.astimezone(UTC), ctx.time_to.astimezone(UTC)
    needs_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter",
                    "__unixEpochNanoFilter"}
    if name in needs_column and not args:
        raise MacroError(f"missing time column argument for macro {name}")
    nanos = (_epoch(start) * 10**9 + start.microsecond * 1000,
             _epoch(end) * 10**9 + end.microsecond * 1000)
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{go_rfc3339nano(start)}' AND '{go_rfc3339nano(end)}'"
        case "__timeFrom":
            return f"'{go_rfc3339nano(start)}'"
        case "__timeTo":
            return f"'{go_rfc3339nano(end)}'"
        case "__timeGroup":
            return _group(args, ctx, name, timescale=ctx.timescaledb)
        case "__timeGroupAlias":
            return _group(args, ctx, "__timeGroup", timescale=ctx.timescaledb) + ' AS "time"'
        case "__unixEpochFilter":
            return f"{args[0]} >= {_epoch(start)} AND {args[0]} <= {_epoch(end)}"
        case "__unixEpochNanoFilter":
            return f"{args[0]} >= {nanos[0]} AND {args[0]} <= {nanos[1]}"
        case "__unixEpochNanoFrom":
            return str(nanos[0])
        case "__unixEpochNanoTo":
            return str(nanos[1])
        case "__unixEpochGroup":
            return _group(args, ctx, name, timescale=False)
        case "__unixEpochGroupAlias":
            return _group(args, ctx, "__unixEpochGroup", timescale=False) + ' AS "time"'
    raise MacroError(f'unknown macro "{name}"')


def interpolate_macros(sql: str, ctx: Context) -> str:
    """postgresMacroEngine.Interpolate, including the pre-5.3 `$__timeGroup(...),` alias rule."""

    def replace(found: re.Match[str]) -> str:
        name = found[1]
        if name == "__timeGroup":
            index = sql.find(found[0])
            if index >= 0 and sql[index + len(found[0]):index + len(found[0]) + 1] == ",":
                name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in found[2].split(",")]
        return evaluate(name, args, ctx)

    return MACRO.sub(replace, sql)


def expand(sql: str, ctx: Context) -> str:
    """The SQL the PostgreSQL server receives from Grafana for this panel query."""
    return interpolate_macros(interpolate_globals(interpolate_variables(sql, ctx.variables), ctx),
                              ctx)
