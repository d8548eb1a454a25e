"""Administrative-procedure dossiers (hồ sơ TTHC), drill-down: per agency, per commune/ward, per
day, and the dossiers that are late or due soon.

Every KPI comes from `kpi_dossiers(since, until, unit, agency, former_district, as_of)` and the
`dossier_facts_at(as_of)` flags of ioc/core/kpis.sql, for the dashboard's time range (a
cohort: dossiers received in the period), the chosen commune/ward (`$commune`), agency
(`$agency`) and former district (`$former_district`, dashboards/former_district.py); "All" is
SQL NULL for each. They are as of the range's end, or now when it runs on past it
(variables.AS_OF): late / due soon compare with that moment (due soon: within the
`due_soon_horizon` setting, 24 h by default), as the KPI functions do. The per-agency and
per-commune/ward tables read `kpi_dossiers_by`: the same KPIs for every group in one pass.

"Dossiers received per day" sums the hourly rollup (`rollup_hour`, metric 'received') per
calendar day in Vietnam, `date_trunc('day', bucket, 'Asia/Ho_Chi_Minh')`: the same on plain
PostgreSQL and TimescaleDB, and local midnights (Grafana's `$__timeGroup(bucket, '1d')` would cut
days at UTC midnight, 07:00 in Vietnam). Hours are kept by `$__timeFilter(bucket)`, so the first
and last day of the range may be partial. The rollup has no former district: with one chosen,
the panel counts the chosen dossiers per hour of their anchor time instead (the same buckets).

The list of late and due-soon dossiers shows codes, agency and dates only (the database holds
no personal data, and the panel would show none): ordered by deadline, at most 50 rows.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards import former_district
from dashboards.sdk import (
    DATASOURCE,
    HOURS_LEFT,
    PanelBuilder,
    Sql,
    Tile,
    dashboard,
    grid,
    hours_left,
    hours_left_column,
    kpi_columns,
    kpi_row,
    kpi_sql,
    percent_columns,
    series,
    thresholds,
)
from dashboards.variables import (
    AS_OF,
    DISTRICT,
    LIST_LIMIT,
    PERIOD,
    SCOPE,
    SELECTION,
    scope_variables,
)

UID = "ioc-dossiers"
TITLE = "IOC — Hồ sơ TTHC"
TILE_H, TABLE_H, SERIES_H, LIST_H = 5, 9, 8, 12


# The KPIs of the tables, after the name column(s), titled with their catalogue labels.
COLUMNS = kpi_columns("dossiers.received", "dossiers.on_time_rate", "dossiers.online_rate",
                      "dossiers.late_in_process", "dossiers.due_soon")
RATES = [title for title, column in COLUMNS.items() if column.endswith("_rate")]


def indent(condition: str) -> str:
    """`condition` with its continuation lines indented for a subquery."""
    return condition.replace("\n", "\n      ")


def breakdown(names: dict[str, str], group_by: str, where: str = "") -> str:
    """kpi_dossiers per group of the selection, in one pass (`kpi_dossiers_by`; `names`:
    column title -> group_code / group_name)."""
    columns = {**names, **COLUMNS}
    lines = ",\n       ".join(f'{column} AS "{title}"' for title, column in columns.items())
    return (f"SELECT {lines}\nFROM kpi_dossiers_by({PERIOD}, '{group_by}', $commune::text, "
            f"$agency::text, {DISTRICT}, {AS_OF})\n{where}ORDER BY group_code")


BY_AGENCY = breakdown({"Mã cơ quan": "group_code", "Cơ quan": "group_name"}, "agency")
BY_COMMUNE = breakdown({"Mã xã/phường": "group_code"}, "commune", "WHERE group_code <> ''\n")
BY_PROCEDURE = breakdown({"Mã thủ tục": "group_code", "Thủ tục": "group_name"}, "procedure")

CHOSEN = """($commune::text IS NULL OR $commune::text IN (province_code, commune_code))
        AND ($agency::text IS NULL OR agency_code = $agency::text)"""
RECEIVED_PER_DAY = f"""SELECT date_trunc('day', bucket, 'Asia/Ho_Chi_Minh') AS "time",
       sum(value) AS "Hồ sơ tiếp nhận"
FROM (SELECT bucket, value
      FROM rollup_hour
      WHERE {DISTRICT} IS NULL AND kind = 'dossier' AND metric = 'received'
        AND {CHOSEN}
      UNION ALL
      SELECT time_bucket(INTERVAL '1 hour', anchor_at), 1
      FROM dossier_facts
      WHERE former_district_code = {DISTRICT}
        AND {CHOSEN}) AS received
WHERE $__timeFilter(bucket)
GROUP BY 1
ORDER BY 1"""

LATE_STATE, SOON_STATE = "Quá hạn", "Sắp đến hạn"
LATE_AND_DUE_SOON = f"""SELECT dossier_code AS "Mã hồ sơ",
       procedure_code AS "Mã thủ tục",
       agency_code AS "Mã cơ quan",
       agency_name AS "Cơ quan",
       due_at AS "Hạn giải quyết",
       CASE WHEN late_in_process THEN '{LATE_STATE}' ELSE '{SOON_STATE}' END AS "Tình trạng",
       {hours_left("due_at", AS_OF)} AS "{HOURS_LEFT}"
FROM dossier_facts_at({AS_OF})
WHERE (late_in_process OR due_soon)
  AND {SELECTION}
ORDER BY due_at, dossier_code
LIMIT {LIST_LIMIT}"""


TILES: tuple[Tile, ...] = (
    ("dossiers.received", None, ""),
    ("dossiers.to_handle", None, ""),
    ("dossiers.on_time_rate", None, ""),
    ("dossiers.late_in_process", thresholds("green", (1, "red")), ""),
    ("dossiers.due_soon", thresholds("green", (1, "orange")), "Còn hạn, đến hạn trong 24 giờ tới."),
    ("dossiers.not_yet_due", None, ""),
)


def tiles() -> list[PanelBuilder]:
    return kpi_row(TILES, lambda kpi: kpi_sql(kpi, SCOPE), TILE_H)


def listing(panel_id: int, title: str, sql: str, pos: model.GridPos,
            description: str) -> table.Panel:
    return (table.Panel().id(panel_id).title(title).description(description)
            .datasource(DATASOURCE).with_target(Sql(sql)).grid_pos(pos)
            .show_header(True).cell_height(common.TableCellHeight.SM)
            .align(common.FieldTextAlignment.AUTO).inspect(False).filterable(False)
            .footer(cb.TableFooterOptions().show(False).reducer(["sum"]))
            .no_value("—"))


def kpi_table(panel_id: int, title: str, sql: str, pos: model.GridPos,
              description: str) -> table.Panel:
    return percent_columns(listing(panel_id, title, sql, pos, description), RATES)


def by_agency() -> PanelBuilder:
    return kpi_table(7, "Theo cơ quan", BY_AGENCY, grid(0, TILE_H, 12, TABLE_H),
                     "Hồ sơ tiếp nhận trong khoảng thời gian, theo cơ quan giải quyết.")


def by_commune() -> PanelBuilder:
    return kpi_table(8, "Theo xã/phường", BY_COMMUNE, grid(12, TILE_H, 12, TABLE_H),
                     "Hồ sơ tiếp nhận trong khoảng thời gian, theo xã/phường.")


def by_procedure() -> PanelBuilder:
    return kpi_table(11, "Theo thủ tục", BY_PROCEDURE, grid(0, TILE_H + TABLE_H, 24, TABLE_H),
                     "Hồ sơ tiếp nhận trong khoảng thời gian, theo thủ tục hành chính.")


def received_per_day() -> PanelBuilder:
    return series(9, "Hồ sơ tiếp nhận theo ngày", RECEIVED_PER_DAY,
                  grid(0, TILE_H + 2 * TABLE_H, 24, SERIES_H))


def late_and_due_soon() -> PanelBuilder:
    return hours_left_column(listing(
        10, "Hồ sơ quá hạn và sắp đến hạn", LATE_AND_DUE_SOON,
        grid(0, TILE_H + 2 * TABLE_H + SERIES_H, 24, LIST_H),
        f"Hồ sơ đang giải quyết, theo hạn giải quyết (tối đa {LIST_LIMIT}). "
        "Chỉ mã hồ sơ, mã thủ tục, cơ quan và thời hạn: không có dữ liệu cá nhân."))


TABLES = (by_agency, by_commune, by_procedure, received_per_day, late_and_due_soon)


def build() -> model.Dashboard:
    return dashboard(TITLE, UID, ["ioc", "tthc"], [*scope_variables(), former_district.variable(
        "dossiers")], [*tiles(), *(make() for make in TABLES)])
