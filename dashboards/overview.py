"""The provincial overview wall: the big numbers of the province, one glance, dark room.

Every number comes from the KPI functions of ioc/core/migrations/0003_kpis.sql for the dashboard's
time range (a cohort: what was received in the period) and the chosen commune/ward
(`$commune`) and agency (`$agency`); "All" is SQL NULL (the whole province, every agency).
Aggregates only, and the map of field reports (dashboards/reportmap.py): codes, category,
status and place, no personal data.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.reportmap import map_panel, points_sql
from dashboards.sdk import PanelBuilder, big_number, grid, series, thresholds
from dashboards.variables import agency_variable, commune_variable

UID = "ioc-overview"
TITLE = "IOC — Tổng quan toàn tỉnh"
SCOPE = "$__timeFrom()::timestamptz, $__timeTo()::timestamptz, $commune::text, $agency::text"
TILE_H, ROW2_H, SERIES_H, SERIES_W = 7, 6, 12, 14



def kpi(function: str, column: str) -> str:
    return f"SELECT {column} AS value FROM {function}({SCOPE})"


def rate_steps(target: float, warn: float) -> db.ThresholdsConfig:
    """Red below `warn`, orange up to the target, green from the target on."""
    return thresholds("red", (warn, "orange"), (target, "green"))


def on_time() -> PanelBuilder:
    return big_number(1, "Tỷ lệ hồ sơ đúng hạn", kpi("kpi_dossiers", "on_time_rate"),
                      grid(0, 0, 4, TILE_H), unit="percent", decimals=1,
                      steps=rate_steps(99, 95), description="Chỉ tiêu: ≥ 99 %")


def online() -> PanelBuilder:
    return big_number(2, "Tỷ lệ nộp trực tuyến", kpi("kpi_dossiers", "online_rate"),
                      grid(4, 0, 4, TILE_H), unit="percent", decimals=1,
                      steps=rate_steps(80, 60), description="Chỉ tiêu: ≥ 80 %")


def digitized() -> PanelBuilder:
    return big_number(3, "Tỷ lệ số hóa hồ sơ", kpi("kpi_dossiers", "digitized_rate"),
                      grid(8, 0, 4, TILE_H), unit="percent", decimals=1,
                      steps=rate_steps(90, 70), description="Chỉ tiêu: ≥ 90 %")


def paid_online() -> PanelBuilder:
    return big_number(4, "Tỷ lệ thanh toán trực tuyến", kpi("kpi_dossiers", "paid_online_rate"),
                      grid(12, 0, 4, TILE_H), unit="percent", decimals=1,
                      steps=rate_steps(80, 60), description="Chỉ tiêu: ≥ 80 %")


def satisfaction() -> PanelBuilder:
    return big_number(5, "Mức độ hài lòng", kpi("kpi_dossiers", "satisfaction_rate"),
                      grid(16, 0, 4, TILE_H), unit="percent", decimals=1,
                      steps=rate_steps(95, 85),
                      description="Quyết định 766/QĐ-TTg. Chỉ tiêu: ≥ 95 %")


def received() -> PanelBuilder:
    return big_number(6, "Hồ sơ tiếp nhận", kpi("kpi_dossiers", "received"),
                      grid(20, 0, 4, TILE_H))


def signed_rate() -> PanelBuilder:
    return big_number(7, "Tỷ lệ văn bản đi ký số", kpi("kpi_documents", "signed_rate"),
                      grid(0, TILE_H, 6, ROW2_H), unit="percent", decimals=1,
                      steps=rate_steps(95, 80), description="Chỉ tiêu: ≥ 95 %")


def signed() -> PanelBuilder:
    return big_number(8, "Văn bản đi đã ký số", kpi("kpi_documents", "outgoing_signed"),
                      grid(6, TILE_H, 6, ROW2_H))


def reports_open() -> PanelBuilder:
    return big_number(9, "Phản ánh đang xử lý", kpi("kpi_field_reports", "open"),
                      grid(12, TILE_H, 6, ROW2_H), steps=thresholds("green", (1, "orange")))


def reports_overdue() -> PanelBuilder:
    return big_number(10, "Phản ánh quá hạn", kpi("kpi_field_reports", "overdue"),
                      grid(18, TILE_H, 6, ROW2_H), steps=thresholds("green", (1, "red")))


RECEIVED_PER_HOUR = """SELECT $__timeGroupAlias(bucket, 1h), sum(value) AS "Hồ sơ tiếp nhận"
FROM rollup_hour
WHERE $__timeFilter(bucket) AND kind = 'dossier' AND metric = 'received'
  AND ($commune::text IS NULL OR $commune::text IN (province_code, commune_code))
  AND ($agency::text IS NULL OR agency_code = $agency::text)
GROUP BY 1
ORDER BY 1"""
REPORT_POINTS = points_sql(
    """anchor_at >= $__timeFrom()::timestamptz AND anchor_at < $__timeTo()::timestamptz
  AND ($commune::text IS NULL OR $commune::text IN (province_code, commune_code))
  AND ($agency::text IS NULL OR agency_code = $agency::text)""")


def received_per_hour() -> PanelBuilder:
    return series(11, "Hồ sơ tiếp nhận theo giờ", RECEIVED_PER_HOUR,
                  grid(0, TILE_H + ROW2_H, SERIES_W, SERIES_H))


def reports_map() -> PanelBuilder:
    return map_panel(12, "Bản đồ phản ánh hiện trường", REPORT_POINTS,
                     grid(SERIES_W, TILE_H + ROW2_H, 24 - SERIES_W, SERIES_H),
                     "Phản ánh tiếp nhận trong khoảng thời gian; màu theo tình trạng (đỏ: quá "
                     "hạn), lĩnh vực khi trỏ vào điểm.")


PANELS = (on_time, online, digitized, paid_online, satisfaction, received, signed_rate, signed,
          reports_open, reports_overdue, received_per_hour, reports_map)


def build() -> model.Dashboard:
    board = (db.Dashboard(TITLE).uid(UID).tags(["ioc", "wall"]).timezone("Asia/Ho_Chi_Minh")
             .time("now-30d", "now").refresh("30s").week_start("monday").readonly()
             .timepicker(db.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m"]))
             .with_variable(commune_variable()).with_variable(agency_variable()))
    for panel in PANELS:
        board = board.with_panel(panel())
    return board.build()
