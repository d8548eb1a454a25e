"""Citizen field reports (phản ánh hiện trường), drill-down: open and overdue, per category and
per commune/ward, the trend, how long resolving took, the overdue and due-soon reports and the
map.

Every count reads `field_report_facts` (ioc/core/kpis.sql), with the flags the
`kpi_field_reports` function counts, for the dashboard's time range (a cohort: reports
requested in the period), the chosen commune/ward (`$commune`), agency (`$agency`), category
(`$category`, the Open311 `service_code`) and former district (`$former_district`,
dashboards/former_district.py); "All" is SQL NULL. The KPI function has no category
argument, so the panels count the same flags themselves (COUNTS mirrors it column for column).
Open, resolved and overdue are as of the range's end, or now when it runs on past it
(`field_report_facts_at`, variables.AS_OF); due soon: open, expected within the
`due_soon_horizon` setting (24 h by default), as for dossiers. Time to resolve: from the
request to the update that fixed or closed the report.

Reports the API could not place in a commune/ward (ioc/core/geography.py) have an empty commune
code: the per-commune table and the lists name them "Chưa xác định" (not determined), and the last
row counts and lists them for the duty officer, who assigns them through the API
(POST /open311/v2/requests/{id}/commune.json).

"New and resolved" counts reports per period of `$trend` (dashboards/trend.py): new by request
time, resolved by resolution time, each within the time range. No panel shows who reported:
the database holds no name, phone or e-mail, and the lists and the map show codes, category,
place and dates only.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards import former_district, sdk, variables
from dashboards.dossiers import indent, listing
from dashboards.durations import distribution_panel, distribution_sql
from dashboards.reportmap import map_panel, points_sql, status_label
from dashboards.trend import period, trend_variable
from dashboards.variables import AS_OF, LIST_LIMIT, scope_variables
from ioc.core.kpis import KPIS, Kpi

UID = "ioc-field-reports"
TITLE = "IOC — Phản ánh hiện trường"
TILE_H, TABLE_H, ROW_H, MAP_H = 5, 9, 9, 14
UNASSIGNED = "Chưa xác định"  # the commune/ward of a report not placed yet
# SQL: the commune/ward column as the panels show it.
COMMUNE = f"CASE WHEN commune_code = '' THEN '{UNASSIGNED}' ELSE commune_code END"

# One index probe per category (`ioc_categories()`, migration 0028), not every report.
CATEGORIES = """SELECT service_code AS __value,
       coalesce(service_name, service_code) || ' (' || service_code || ')' AS __text
FROM ioc_categories()
ORDER BY 1"""

# Commune/ward, agency, category and former district (no time): what every panel filters on.
CHOSEN = f"""{variables.CHOSEN}
  AND ($category::text IS NULL OR service_code = $category::text)"""
SELECTION = f"""anchor_at >= $__timeFrom()::timestamptz AND anchor_at < $__timeTo()::timestamptz
  AND {CHOSEN}"""

FACTS = f"field_report_facts_at({AS_OF})"  # the reports as they stood at the range's end
# kpi_field_reports column -> its aggregate over `field_report_facts`, as the function computes
# it (the function has no category argument); titled with the catalogue's labels.
COUNTS = {
    "reports": "count(*)",
    "open": "count(*) FILTER (WHERE is_open)",
    "overdue": "count(*) FILTER (WHERE overdue)",
    "resolved": "count(*) FILTER (WHERE resolved)",
    "duplicate": "count(*) FILTER (WHERE is_duplicate)",
    "median_hours_to_resolve": ("round((percentile_cont(0.5) WITHIN GROUP "
                                "(ORDER BY resolve_seconds) / 3600)::numeric, 2)"),
}
MEDIAN = KPIS["field_reports.median_hours_to_resolve"].label


def counts(names: dict[str, str], group: str | None) -> str:
    """COUNTS over the selection, per `group` (the `names` columns lead) or for all of it."""
    columns = {**names, **{KPIS[f"field_reports.{c}"].label: sql for c, sql in COUNTS.items()}}
    lines = ",\n       ".join(f'{sql} AS "{title}"' for title, sql in columns.items())
    grouped = f"\nGROUP BY {group}\nORDER BY {group}" if group else ""
    return f"SELECT {lines}\nFROM {FACTS}\nWHERE {SELECTION}{grouped}"


def tile_sql(kpi: Kpi) -> str:
    return f'SELECT {COUNTS[kpi.column]} AS value\nFROM {FACTS}\nWHERE {SELECTION}'


BY_CATEGORY = counts({"Mã lĩnh vực": "service_code", "Lĩnh vực": "max(service_name)",
                      "Nhóm": "max(service_group)"}, "service_code")
BY_COMMUNE = counts({"Mã xã/phường": COMMUNE}, "commune_code")

NEW_AND_RESOLVED = f"""SELECT "time",
       count(*) FILTER (WHERE what = 'new') AS "Phản ánh mới",
       count(*) FILTER (WHERE what = 'resolved') AS "Đã giải quyết"
FROM (SELECT {period("anchor_at")} AS "time", 'new' AS what
      FROM field_report_facts
      WHERE $__timeFilter(anchor_at)
        AND {indent(CHOSEN)}
      UNION ALL
      SELECT {period("resolved_at")}, 'resolved'
      FROM field_report_facts
      WHERE resolved AND $__timeFilter(resolved_at)
        AND {indent(CHOSEN)}) x
GROUP BY 1
ORDER BY 1"""

TIME_TO_RESOLVE = distribution_sql("resolve_seconds / 3600", FACTS,
                                   f"resolved AND {SELECTION}", "service_request_id", "Phản ánh")

LATE_AND_DUE_SOON = f"""SELECT service_request_id AS "Mã phản ánh",
       coalesce(service_name, service_code) AS "Lĩnh vực",
       {COMMUNE} AS "Mã xã/phường",
       agency_code AS "Mã cơ quan",
       expected_datetime AS "Hạn xử lý",
       {status_label(overdue_first=False).replace(chr(10), chr(10) + '       ')} AS "Tình trạng",
       {sdk.hours_left("expected_datetime", AS_OF)} AS "{sdk.HOURS_LEFT}"
FROM {FACTS}
WHERE is_open AND expected_datetime < {AS_OF} + (SELECT ioc_due_soon_horizon())
  AND {SELECTION}
ORDER BY expected_datetime, service_request_id
LIMIT {LIST_LIMIT}"""

POINTS = points_sql(SELECTION)

UNASSIGNED_COUNT = f"""SELECT count(*) AS value
FROM field_report_facts
WHERE commune_code = ''
  AND {SELECTION}"""

# Oldest first: the duty officer's queue.
UNASSIGNED_LIST = f"""SELECT service_request_id AS "Mã phản ánh",
       coalesce(service_name, service_code) AS "Lĩnh vực",
       requested_datetime AS "Tiếp nhận",
       agency_code AS "Mã cơ quan",
       {status_label().replace(chr(10), chr(10) + '       ')} AS "Tình trạng",
       lat AS "Vĩ độ",
       long AS "Kinh độ"
FROM field_report_facts
WHERE commune_code = ''
  AND {SELECTION}
ORDER BY anchor_at, service_request_id
LIMIT {LIST_LIMIT}"""


def category_variable() -> db.QueryVariable:
    return sdk.query_variable("category", "Lĩnh vực", CATEGORIES, all_value="NULL")


TILES: tuple[sdk.Tile, ...] = (
    ("field_reports.reports", None, "Phản ánh tiếp nhận trong khoảng thời gian."),
    ("field_reports.open", sdk.thresholds("green", (1, "orange")), ""),
    ("field_reports.overdue", sdk.thresholds("green", (1, "red")),
     "Đang xử lý, đã qua thời hạn dự kiến."),
    ("field_reports.resolved", None, ""),
    ("field_reports.median_hours_to_resolve", None,
     "Từ khi tiếp nhận đến khi khắc phục hoặc đóng."),
    ("field_reports.duplicate", None, ""),
)


def tiles() -> list[sdk.PanelBuilder]:
    return sdk.kpi_row(TILES, tile_sql, TILE_H)


def table(panel_id: int, title: str, sql: str, pos: model.GridPos,
          description: str) -> sdk.PanelBuilder:
    return listing(panel_id, title, sql, pos, description).override_by_name(MEDIAN, [
        model.DynamicConfigValue(id_val="decimals", value=2)])


def by_category() -> sdk.PanelBuilder:
    return table(7, "Theo lĩnh vực", BY_CATEGORY, sdk.grid(0, TILE_H, 12, TABLE_H),
                 "Phản ánh tiếp nhận trong khoảng thời gian, theo lĩnh vực (service_code).")


def by_commune() -> sdk.PanelBuilder:
    return table(8, "Theo xã/phường", BY_COMMUNE, sdk.grid(12, TILE_H, 12, TABLE_H),
                 "Phản ánh tiếp nhận trong khoảng thời gian, theo xã/phường.")


def new_and_resolved() -> sdk.PanelBuilder:
    return sdk.series(9, "Phản ánh mới và đã giải quyết theo chu kỳ", NEW_AND_RESOLVED,
                      sdk.grid(0, TILE_H + TABLE_H, 16, ROW_H))


def time_to_resolve() -> sdk.PanelBuilder:
    return distribution_panel(10, "Thời gian giải quyết", TIME_TO_RESOLVE,
                              sdk.grid(16, TILE_H + TABLE_H, 8, ROW_H),
                              "Phản ánh đã khắc phục hoặc đóng: từ khi tiếp nhận đến khi xong.")


def late_and_due_soon() -> sdk.PanelBuilder:
    return sdk.hours_left_column(listing(
        11, "Phản ánh quá hạn và sắp đến hạn", LATE_AND_DUE_SOON,
        sdk.grid(0, TILE_H + TABLE_H + ROW_H, 12, MAP_H),
        f"Phản ánh đang xử lý đã quá hạn hoặc sắp đến hạn, theo hạn (tối đa {LIST_LIMIT}). "
        "Không có dữ liệu cá nhân: mã, lĩnh vực, nơi và thời hạn."))


def reports_map() -> sdk.PanelBuilder:
    return map_panel(12, "Bản đồ phản ánh", POINTS,
                     sdk.grid(12, TILE_H + TABLE_H + ROW_H, 12, MAP_H),
                     "Mỗi điểm là một phản ánh, màu theo tình trạng (đỏ: quá hạn).")


def unassigned_count() -> sdk.PanelBuilder:
    return sdk.big_number(13, f"{UNASSIGNED} xã/phường", UNASSIGNED_COUNT,
                          sdk.grid(0, TILE_H + TABLE_H + ROW_H + MAP_H, 4, TABLE_H),
                          steps=sdk.thresholds("green", (1, "orange")),
                          description="Phản ánh tiếp nhận trong khoảng thời gian mà chưa xác định"
                                      " được xã/phường: trực ban phân công qua API.")


def unassigned_list() -> sdk.PanelBuilder:
    return listing(14, f"Phản ánh {UNASSIGNED.lower()} xã/phường", UNASSIGNED_LIST,
                   sdk.grid(4, TILE_H + TABLE_H + ROW_H + MAP_H, 20, TABLE_H),
                   "Phản ánh chưa có xã/phường (không có mã xã, tên xã trong địa chỉ hay ranh"
                   f" giới chứa tọa độ), cũ nhất trước (tối đa {LIST_LIMIT}). Trực ban phân công"
                   " bằng POST /open311/v2/requests/{id}/commune.json.")


PANELS = (by_category, by_commune, new_and_resolved, time_to_resolve, late_and_due_soon,
          reports_map, unassigned_count, unassigned_list)


def build() -> model.Dashboard:
    return sdk.dashboard(TITLE, UID, ["ioc", "phan-anh"],
                         [*scope_variables(), category_variable(),
                          former_district.variable("field_reports"), trend_variable()],
                         [*tiles(), *(make() for make in PANELS)])
