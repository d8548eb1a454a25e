"""grafana-foundation-sdk glue: a PostgreSQL `rawSql` dataquery and the shared panel builders,
KPI tiles and table columns from the catalogue (ioc/core/kpis.py) among them.

The SDK (11.6 build) has no PostgreSQL query type; `SqlQuery` fills the gap and is registered
with the SDK's runtime so dashboards load back from JSON without losing a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from ioc.core.kpis import KPIS, Kpi

DATASOURCE_UID = "ioc-timescaledb"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
PanelBuilder = cogbuilder.Builder[model.Panel]


class SqlQuery(cogvariants.Dataquery):
    """A target of Grafana's PostgreSQL datasource in code (raw SQL) mode."""

    def __init__(self, ref_id: str = "", raw_sql: str = "", format_val: str = "table",
                 raw_query: bool = True, editor_mode: str = "code",
                 datasource: model.DataSourceRef | None = None, hide: bool | None = None) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.raw_query = raw_query
        self.editor_mode = editor_mode
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "rawSql": self.raw_sql,
                                      "format": self.format_val, "rawQuery": self.raw_query,
                                      "editorMode": self.editor_mode}
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        keys = {"refId": "ref_id", "rawSql": "raw_sql", "format": "format_val",
                "rawQuery": "raw_query", "editorMode": "editor_mode", "hide": "hide"}
        args: dict[str, Any] = {arg: data[key] for key, arg in keys.items() if key in data}
        if "datasource" in data:
            args["datasource"] = model.DataSourceRef.from_json(data["datasource"])
        return cls(**args)


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, ref_id: str = "A", format_val: str = "table") -> None:
        self._internal = SqlQuery(ref_id=ref_id, raw_sql=raw_sql, format_val=format_val,
                                  datasource=DATASOURCE)

    def build(self) -> SqlQuery:
        return self._internal


def register() -> None:
    register_default_plugins()
    for identifier in (DATASOURCE_TYPE, "postgres"):
        cogruntime.register_dataquery_variant(
            cogruntime.DataqueryConfig(identifier=identifier, from_json_hook=SqlQuery.from_json))


register()


def to_dict(board: model.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data (what Grafana reads from the provisioned file)."""
    return json.loads(json.dumps(board, cls=JSONEncoder))


def dumps(board: model.Dashboard) -> str:
    return json.dumps(to_dict(board), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def grid(x: int, y: int, w: int, h: int) -> model.GridPos:
    return model.GridPos(h=h, w=w, x=x, y=y)


def thresholds(base: str, *steps: tuple[float, str]) -> db.ThresholdsConfig:
    return (db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=None, color=base),
                    *(model.Threshold(value=v, color=c) for v, c in steps)]))


def big_number(panel_id: int, title: str, sql: str, pos: model.GridPos, *, unit: str = "none",
               steps: db.ThresholdsConfig | None = None, description: str = "",
               decimals: int = 0) -> stat.Panel:
    """A wall tile: one big value from a one-row SQL result, coloured by its thresholds."""
    panel = (stat.Panel().id(panel_id).title(title).datasource(DATASOURCE)
             .with_target(Sql(sql)).grid_pos(pos).unit(unit).decimals(decimals)
             .color_mode(common.BigValueColorMode.BACKGROUND)
             .graph_mode(common.BigValueGraphMode.NONE)
             .text_mode(common.BigValueTextMode.VALUE)
             .justify_mode(common.BigValueJustifyMode.CENTER)
             .reduce_options(common_reduce())
             .color_scheme(db.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
             .no_value("—"))
    if description:
        panel = panel.description(description)
    return panel.thresholds(steps or thresholds("blue"))


def common_reduce() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().values(False).calcs(["lastNotNull"])


def series(panel_id: int, title: str, sql: str, pos: model.GridPos, *,
           unit: str = "none") -> timeseries.Panel:
    """A time series from a SQL result with a `time` column (format time_series)."""
    return (timeseries.Panel().id(panel_id).title(title).datasource(DATASOURCE)
            .with_target(Sql(sql, format_val="time_series")).grid_pos(pos).unit(unit)
            .draw_style(common.GraphDrawStyle.BARS).fill_opacity(60).line_width(1)
            .color_scheme(db.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
            .legend(legend()))


def legend() -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM))


def query_variable(name: str, label: str, sql: str, *, all_value: str) -> db.QueryVariable:
    """A single-choice variable from a SQL query, with "All" standing for `all_value`."""
    return (db.QueryVariable(name).label(label).datasource(DATASOURCE).query(sql)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .include_all(True).all_value(all_value).multi(False).allow_custom_value(False)
            .current(model.VariableOption(selected=True, text="All", value="$__all")))


def percent_columns(panel: table.Panel, columns: Iterable[str]) -> table.Panel:
    """Table columns holding rates (0-100): shown as percentages with two decimals."""
    for column in columns:
        panel = panel.override_by_name(column, [
            model.DynamicConfigValue(id_val="unit", value="percent"),
            model.DynamicConfigValue(id_val="decimals", value=2)])
    return panel


HOURS_LEFT = "Số giờ còn lại (âm: quá hạn)"


def hours_left(deadline: str, at: str = "now()") -> str:
    """SQL: hours from `at` (SQL; the database's now() by default) to `deadline`, negative once
    it has passed."""
    return f"round((extract(epoch FROM {deadline} - {at}) / 3600)::numeric, 1)"


def hours_left_column(panel: table.Panel) -> table.Panel:
    """A late and due-soon list's "hours left" column: red text when overdue, orange when due
    soon (every listed item is one or the other)."""
    return panel.override_by_name(HOURS_LEFT, [
        model.DynamicConfigValue(id_val="decimals", value=1),
        model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
        model.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
        model.DynamicConfigValue(id_val="thresholds", value={
            "mode": "absolute", "steps": [{"color": "red", "value": None},
                                          {"color": "orange", "value": 0}]})])


GRAFANA_UNITS = {"": "none", "%": "percent", "giờ": "h", "phút": "m"}


def kpi_steps(kpi: Kpi) -> db.ThresholdsConfig | None:
    """Green from the KPI's target on, orange up to `warn`, red past it; None without a target."""
    if kpi.target is None:
        return None
    if kpi.better == "lower":
        late = [] if kpi.warn is None else [(kpi.warn, "red")]
        return thresholds("green", (kpi.target, "orange" if late else "red"), *late)
    warn = [] if kpi.warn is None else [(kpi.warn, "orange")]
    return thresholds("red", *warn, (kpi.target, "green"))


NOTE = "note"  # a tile's second field: what its value lacks (Kpi.missing), NULL when nothing


def kpi_tile(panel_id: int, kpi: Kpi, sql: str, pos: model.GridPos, *, description: str = "",
             steps: db.ThresholdsConfig | None = None) -> stat.Panel:
    """A wall tile of one catalogue KPI: its label, unit and target (`steps` without one). A
    KPI with `inputs` shows its query's `note` field under the value, blank when it lacks
    nothing (a text on the wall's dark background, not coloured by the thresholds)."""
    about = [description] if description else []
    if kpi.inputs:
        about.append("Thiếu một phần dữ liệu đầu vào: ô ghi rõ phần thiếu dưới giá trị.")
    if kpi.target_766 is not None:
        about.append("Quyết định 766/QĐ-TTg.")
    if kpi.target is not None:
        about.append(f"Chỉ tiêu: {kpi.target_text()}")
    panel = big_number(panel_id, kpi.label, sql, pos, unit=GRAFANA_UNITS[kpi.unit],
                       decimals=0 if kpi.unit == "" else 1, steps=kpi_steps(kpi) or steps,
                       description=" ".join(about))
    if not kpi.inputs:
        return panel
    return (panel.reduce_options(common_reduce().fields("/.*/"))  # the text field too
            .orientation(common.VizOrientation.VERTICAL)
            .override_by_name(NOTE, [
                model.DynamicConfigValue(id_val="noValue", value=" "),
                model.DynamicConfigValue(id_val="color",
                                         value={"mode": "fixed", "fixedColor": "transparent"})]))


def missing_sql(kpi: Kpi) -> str:
    """SQL over the KPI function's result: `Kpi.missing`'s notes joined by "; ", or NULL when
    the value lacks nothing or is NULL (no input at all)."""
    notes = []
    for part in kpi.inputs:
        text = part.missing.replace("'", "''")
        if part.lacking == "none":
            notes.append(f"CASE WHEN coalesce({part.column}, 0) = 0 THEN '{text}' END")
        else:
            pieces = [f"'{t}'" if t else "" for t in text.partition("{n}")]
            pieces[1] = f"{part.column}::text"
            said = " || ".join(p for p in pieces if p)
            notes.append(f"CASE WHEN {part.column} > 0 THEN {said} END")
    return (f"CASE WHEN {kpi.column} IS NOT NULL"
            f" THEN nullif(concat_ws('; ', {', '.join(notes)}), '') END")


def kpi_sql(kpi: Kpi, scope: str) -> str:
    """A tile's query: the KPI's column of its function for `scope` (the function's arguments),
    and, for a KPI with `inputs`, the `note` of what it lacks."""
    note = f", {missing_sql(kpi)} AS {NOTE}" if kpi.inputs else ""
    return f"SELECT {kpi.column} AS value{note} FROM {kpi.function}({scope})"


# A drill-down's tile: catalogue name, the colours of a KPI without a target, a description.
Tile = tuple[str, db.ThresholdsConfig | None, str]


def kpi_row(tiles: Sequence[Tile], sql: Callable[[Kpi], str], height: int) -> list[PanelBuilder]:
    """A drill-down's top row: one tile per KPI, 4 columns wide, panel ids from 1."""
    return [kpi_tile(panel_id, KPIS[name], sql(KPIS[name]), grid(4 * (panel_id - 1), 0, 4, height),
                     steps=steps, description=about)
            for panel_id, (name, steps, about) in enumerate(tiles, start=1)]


def kpi_columns(*names: str, notes: bool = False) -> dict[str, str]:
    """Table columns of catalogue KPIs: label -> result column; with `notes` (a function whose
    result has the inputs' count columns), after a KPI with `inputs` the note of what its
    value lacks (`missing_sql`), titled `note_title`."""
    columns = {}
    for kpi in (KPIS[name] for name in names):
        columns[kpi.label] = kpi.column
        if notes and kpi.inputs:
            columns[note_title(kpi)] = missing_sql(kpi)
    return columns


def note_title(kpi: Kpi) -> str:
    return f"{kpi.label}: phần thiếu"


def dashboard(title: str, uid: str, tags: list[str], variables: Iterable[db.QueryVariable],
              panels: Iterable[PanelBuilder], *, since: str = "now-30d", refresh: str = "1m",
              intervals: Sequence[str] = ("30s", "1m", "5m", "15m")) -> model.Dashboard:
    """A read-only dashboard in Vietnam's time zone, weeks from Monday."""
    board = (db.Dashboard(title).uid(uid).tags(tags).timezone("Asia/Ho_Chi_Minh")
             .time(since, "now").refresh(refresh).week_start("monday").readonly()
             .timepicker(db.TimePicker().refresh_intervals(list(intervals))))
    for variable in variables:
        board = board.with_variable(variable)
    for panel in panels:
        board = board.with_panel(panel)
    return board.build()
