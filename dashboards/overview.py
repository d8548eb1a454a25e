"""The provincial overview wall: the big numbers of the province, one glance, dark room.

Every number comes from the KPI functions of ioc/core/kpis.sql for the dashboard's
time range (a cohort: what was received in the period) and the chosen commune/ward
(`$commune`) and agency (`$agency`); "All" is SQL NULL (the whole province, every agency).
Aggregates only, and the map of field reports (dashboards/reportmap.py): codes, category,
status and place, no personal data.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.reportmap import map_panel, points_sql
from dashboards.sdk import PanelBuilder, dashboard, grid, kpi_sql, kpi_tile, series, thresholds
from dashboards.variables import AS_OF, PERIOD, scope_variables
from ioc.core.kpis import KPIS

UID = "ioc-overview"
TITLE = "IOC — Tổng quan toàn tỉnh"
SCOPE = f"{PERIOD}, $commune::text, $agency::text, NULL::text, {AS_OF}"
TILE_H, ROW2_H, SERIES_H, SERIES_W = 7, 6, 12, 14

# The big numbers: catalogue KPI, place, and the colours of a KPI without a target.
TILES: tuple[tuple[str, model.GridPos, db.ThresholdsConfig | None], ...] = (
    ("dossiers.on_time_rate", grid(0, 0, 4, TILE_H), None),
    ("dossiers.online_rate", grid(4, 0, 4, TILE_H), None),
    ("dossiers.digitized_rate", grid(8, 0, 4, TILE_H), None),
    ("dossiers.paid_online_rate", grid(12, 0, 4, TILE_H), None),
    ("dossiers.satisfaction_rate", grid(16, 0, 4, TILE_H), None),
    ("dossiers.received", grid(20, 0, 4, TILE_H), None),
    ("documents.signed_rate", grid(0, TILE_H, 6, ROW2_H), None),
    ("documents.outgoing_signed", grid(6, TILE_H, 6, ROW2_H), None),
    ("field_reports.open", grid(12, TILE_H, 6, ROW2_H), thresholds("green", (1, "orange"))),
    ("field_reports.overdue", grid(18, TILE_H, 6, ROW2_H), thresholds("green", (1, "red"))),
)


def tiles() -> list[PanelBuilder]:
    return [kpi_tile(panel_id, KPIS[name], kpi_sql(KPIS[name], SCOPE), pos, steps=steps)
            for panel_id, (name, pos, steps) in enumerate(TILES, start=1)]


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


PANELS = (received_per_hour, reports_map)


def build() -> model.Dashboard:
    return dashboard(TITLE, UID, ["ioc", "wall"], scope_variables(),
                     [*tiles(), *(make() for make in PANELS)], refresh="30s",
                     intervals=("10s", "30s", "1m", "5m"))
