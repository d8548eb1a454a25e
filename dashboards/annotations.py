"""Alert transitions on every dashboard: annotation queries on the `alerts` table.

Every row of `alerts` (pending, firing, resolved, acknowledged, silenced; ioc/alerts) becomes a
marker on the time axis, in Vietnamese: state, rule, scope, value against threshold. One query
per severity, so each has its colour (critical red, warning orange, info blue) and its own
toggle. A silenced row is a region up to `silenced_until`. On a dashboard with a `$commune` or
`$agency` variable ("All" = SQL NULL), choosing one keeps the province-wide alerts and those of
that commune/ward or agency.

Grafana's PostgreSQL datasource reads the columns `time`, `timeend`, `text` and `tags` (comma
separated) of the annotation query (its `target`, a raw SQL query like the panels').
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.sdk import DATASOURCE, Sql, SqlQuery

# severity -> (annotation name, marker colour)
SEVERITIES = {
    "critical": ("Cảnh báo nghiêm trọng", "red"),
    "warning": ("Cảnh báo cần chú ý", "orange"),
    "info": ("Thông báo", "blue"),
}
STATES = {
    "pending": "Chờ kích hoạt",
    "firing": "Đang cảnh báo",
    "resolved": "Đã trở lại bình thường",
    "acknowledged": "Đã tiếp nhận",
    "silenced": "Tạm tắt thông báo",
}
# dashboard variable -> prefix of the alerts' scope it selects
SCOPE_VARIABLES = {"commune": "commune", "agency": "agency"}

STATE_TEXT = "CASE state " + " ".join(
    f"WHEN '{state}' THEN '{text}'" for state, text in STATES.items()) + " ELSE state END"
SCOPE_TEXT = ("CASE WHEN scope = 'province' THEN 'Toàn tỉnh'"
              " WHEN scope LIKE 'agency:%' THEN 'Cơ quan ' || substr(scope, 8)"
              " WHEN scope LIKE 'commune:%' THEN 'Xã/phường ' || substr(scope, 9)"
              " ELSE scope END")
VALUE_TEXT = ("'giá trị ' || coalesce(trim_scale(value)::text, 'không có dữ liệu')"
              " || ' ' || comparison || ' ngưỡng ' || trim_scale(threshold)::text")


def scope_filter(variables: list[str]) -> str:
    """The condition that keeps the province's alerts and those of the chosen scopes."""
    if not variables:
        return ""
    none = " AND ".join(f"${name}::text IS NULL" for name in variables)
    chosen = ", ".join(f"'{SCOPE_VARIABLES[name]}:' || ${name}::text" for name in variables)
    return f"\n  AND ({none}\n       OR scope IN ('province', {chosen}))"


def sql(severity: str, variables: list[str]) -> str:
    return f"""SELECT at AS "time",
       CASE WHEN state = 'silenced' THEN silenced_until END AS timeend,
       concat_ws(' — ', {STATE_TEXT},
                 rule,
                 {SCOPE_TEXT},
                 {VALUE_TEXT}) AS text,
       concat_ws(',', severity, state, rule, scope) AS tags
FROM alerts
WHERE $__timeFilter(at) AND severity = '{severity}'{scope_filter(variables)}
ORDER BY at, seq"""


def scope_variables(board: model.Dashboard) -> list[str]:
    """The board's commune/agency variables whose "All" is SQL NULL, in SCOPE_VARIABLES order."""
    found = {v.name: v for v in (board.templating.list_val or [])} if board.templating else {}
    return [name for name in SCOPE_VARIABLES
            if name in found and found[name].all_value == "NULL"]


def queries(board: model.Dashboard) -> list[db.AnnotationQuery]:
    variables = scope_variables(board)
    return [db.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).hide(False)
            .icon_color(color).target(Sql(sql(severity, variables), ref_id="Anno"))  # type: ignore[arg-type]
            for severity, (name, color) in SEVERITIES.items()]


def add(board: model.Dashboard) -> model.Dashboard:
    """The board with the alert annotations appended to its own (if any)."""
    if board.annotations is None:
        board.annotations = model.AnnotationContainer()
    board.annotations.list_val = [*(board.annotations.list_val or []),
                                  *(q.build() for q in queries(board))]
    return board


def register() -> None:
    """Let `Dashboard.from_json` keep a SQL annotation target: the SDK types every target as
    the built-in Grafana datasource's (limit, tags...) and would drop `rawSql`."""
    original = model.AnnotationTarget.from_json.__func__  # type: ignore[attr-defined]

    def from_json(cls: type, data: dict[str, Any]) -> Any:
        return SqlQuery.from_json(data) if "rawSql" in data else original(cls, data)

    if not getattr(model.AnnotationTarget.from_json, "_ioc_sql", False):
        from_json._ioc_sql = True  # type: ignore[attr-defined]
        model.AnnotationTarget.from_json = classmethod(from_json)  # type: ignore[method-assign,assignment]


register()
