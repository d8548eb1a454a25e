"""The league table: agencies (and communes/wards) ranked in the style of Decision 766/QĐ-TTg.

Rows come from `kpi_agency_ranking` / `kpi_commune_ranking` (ioc/core/kpis.sql) for the
dashboard's time range (a cohort: dossiers received in the period). Points per group by the 766
rule (a rate at or above its target, the catalogue's `target_766`, earns full points, otherwise
rate / target × points): progress and results 20 (on time), digitization 22, online service 22,
satisfaction 18; transparency is not measured, so 82 at most.
The agency table follows the chosen commune/ward (`$commune`; "All" is the whole province).
Aggregates only: no personal data.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.sdk import (
    DATASOURCE,
    PanelBuilder,
    Sql,
    dashboard,
    grid,
    kpi_columns,
    percent_columns,
    thresholds,
)
from dashboards.variables import AS_OF, commune_variable
from ioc.core.kpis import KPIS

UID = "ioc-ranking"
TITLE = "IOC — Xếp hạng cơ quan"
PERIOD = "$__timeFrom()::timestamptz, $__timeTo()::timestamptz"
MAX_POINTS = 82
RANK = "Hạng"
TOTAL = "Tổng điểm"

# Column title -> SQL column, in display order after the name column(s).
SCORED = ("dossiers.on_time_rate", "dossiers.digitized_rate", "dossiers.online_rate",
          "dossiers.satisfaction_rate")  # the 766 groups' rates
COLUMNS = {
    **kpi_columns("dossiers.received", "dossiers.to_handle", *SCORED, notes=True),
    "Điểm tiến độ (20)": "progress_points",
    "Điểm số hóa (22)": "digitization_points",
    "Điểm trực tuyến (22)": "online_points",
    "Điểm hài lòng (18)": "satisfaction_points",
    TOTAL: "total_points",
}
RATES = [title for title, column in COLUMNS.items() if column.endswith("_rate")]
TARGETS = ", ".join(f"{KPIS[name].label.lower()} {KPIS[name].target_text()}" for name in SCORED)


def select(names: dict[str, str], source: str) -> str:
    columns = {RANK: "rank", **names, **COLUMNS}
    lines = ",\n       ".join(f'{column} AS "{title}"' for title, column in columns.items())
    return f"SELECT {lines}\nFROM {source}\nORDER BY rank, {next(iter(names.values()))}"


AGENCIES = select({"Mã cơ quan": "agency_code", "Cơ quan": "agency_name"},
                  f"kpi_agency_ranking({PERIOD}, $commune::text, as_of => {AS_OF})")
COMMUNES = select({"Mã xã/phường": "commune_code"},
                  f"kpi_commune_ranking({PERIOD}, as_of => {AS_OF})")


def league(panel_id: int, title: str, sql: str, pos: model.GridPos,
           description: str) -> table.Panel:
    panel = (table.Panel().id(panel_id).title(title).description(description)
             .datasource(DATASOURCE).with_target(Sql(sql)).grid_pos(pos)
             .show_header(True).cell_height(common.TableCellHeight.SM)
             .align(common.FieldTextAlignment.AUTO).inspect(False).filterable(False)
             .sort_by([cb.TableSortByFieldState().display_name(RANK).desc(False)])
             .footer(cb.TableFooterOptions().show(False).reducer(["sum"]))
             .no_value("—"))
    return percent_columns(panel, RATES).override_by_name(TOTAL, [
        model.DynamicConfigValue(id_val="custom.cellOptions",
                                 value={"type": "color-background", "mode": "basic"}),
        model.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
        model.DynamicConfigValue(id_val="thresholds", value=_total_steps())])


def _total_steps() -> dict[str, object]:
    steps = thresholds("red", (0.7 * MAX_POINTS, "orange"), (0.9 * MAX_POINTS, "green")).build()
    return {"mode": "absolute", "steps": [{"color": s.color, "value": s.value}
                                          for s in steps.steps]}


def agencies() -> PanelBuilder:
    return league(1, "Xếp hạng cơ quan theo Quyết định 766", AGENCIES, grid(0, 0, 24, 13),
                  "Điểm = tỷ lệ / chỉ tiêu × điểm tối đa của nhóm (đạt chỉ tiêu: điểm tối đa). "
                  f"Chỉ tiêu: {TARGETS}. "
                  f"Chưa tính nhóm công khai, minh bạch: tối đa {MAX_POINTS} điểm.")


def communes() -> PanelBuilder:
    return league(2, "Xếp hạng xã/phường theo Quyết định 766", COMMUNES, grid(0, 13, 24, 12),
                  "Cùng cách tính điểm như bảng cơ quan, theo xã/phường tiếp nhận hồ sơ.")


PANELS = (agencies, communes)


def build() -> model.Dashboard:
    return dashboard(TITLE, UID, ["ioc", "766"], [commune_variable()],
                     [make() for make in PANELS])
