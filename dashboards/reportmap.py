"""The map of field reports: one point per report, coloured by status, category in the tooltip.

Shared by the wall (dashboards/overview.py) and the field-report drill-down. Points carry the
report's code, category, status and coordinates only: the reporter's data is not in the
database, and the address is not shown. "Overdue" is its own colour: an open report past its
expected date, as the `overdue` flag of `field_report_facts_at` (ioc/core/kpis.sql), as of
the time range's end (or now).
"""

from __future__ import annotations

from typing import TypeVar

from grafana_foundation_sdk.builders import geomap
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomodel

from dashboards.sdk import DATASOURCE, Sql
from dashboards.variables import AS_OF

STATUS_COLUMN, CATEGORY_COLUMN, CODE_COLUMN = "Tình trạng", "Lĩnh vực", "Mã phản ánh"
POINTS_LIMIT = 5000
OVERDUE = "Quá hạn"
# Open311 / FixMyStreet status -> label; the colour of each label on the map.
STATUS_LABELS = {"open": "Mới", "investigating": "Đang xác minh", "in_progress": "Đang xử lý",
                 "fixed": "Đã khắc phục", "closed": "Đã đóng", "duplicate": "Trùng lặp"}
COLOURS = {OVERDUE: "red", "Mới": "orange", "Đang xác minh": "yellow", "Đang xử lý": "blue",
           "Đã khắc phục": "green", "Đã đóng": "dark-green", "Trùng lặp": "gray"}


def status_label(overdue_first: bool = True) -> str:
    """SQL: the status label of a `field_report_facts` row (with `overdue_first`, overdue open
    reports are labelled overdue)."""
    whens = [f"WHEN status = '{code}' THEN '{label}'" for code, label in STATUS_LABELS.items()]
    if overdue_first:
        whens.insert(0, f"WHEN overdue THEN '{OVERDUE}'")
    return "CASE " + "\n     ".join(whens) + "\n     ELSE status END"


def points_sql(where: str) -> str:
    """Newest reports first (at most POINTS_LIMIT) among those `where` selects, with a place,
    as they stood at the time range's end (AS_OF)."""
    return f"""SELECT lat AS latitude,
       long AS longitude,
       {status_label().replace(chr(10), chr(10) + '       ')} AS "{STATUS_COLUMN}",
       coalesce(service_name, service_code) AS "{CATEGORY_COLUMN}",
       service_request_id AS "{CODE_COLUMN}"
FROM field_report_facts_at({AS_OF})
WHERE lat IS NOT NULL AND long IS NOT NULL
  AND {where}
ORDER BY anchor_at DESC, service_request_id
LIMIT {POINTS_LIMIT}"""


T = TypeVar("T")


class _Built(cogbuilder.Builder[T]):
    """An SDK model the SDK has no builder for, handed over as it is."""

    def __init__(self, value: T) -> None:
        self._internal = value

    def build(self) -> T:
        return self._internal


MARKERS = common.MapLayerOptions(
    type_val="markers", name="Phản ánh", tooltip=True,
    location=common.FrameGeometrySource(mode=common.FrameGeometrySourceMode.COORDS,
                                        latitude="latitude", longitude="longitude"),
    config={"showLegend": True,
            "style": {"color": {"field": STATUS_COLUMN, "fixed": "dark-green"},
                      "opacity": 0.8, "size": {"fixed": 6, "min": 2, "max": 15},
                      "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"}}})
BASEMAP = common.MapLayerOptions(type_val="default", name="Bản đồ nền")


def map_panel(panel_id: int, title: str, sql: str, pos: model.GridPos,
              description: str) -> geomap.Panel:
    """Markers at (latitude, longitude), coloured by the status label's value mapping."""
    mapping = {"type": "value", "options": {
        label: {"color": colour, "index": i} for i, (label, colour) in enumerate(COLOURS.items())}}
    return (geomap.Panel().id(panel_id).title(title).description(description)
            .datasource(DATASOURCE).with_target(Sql(sql)).grid_pos(pos)
            .basemap(_Built(BASEMAP)).layers([_Built(MARKERS)])
            .view(_Built(geomodel.MapViewConfig(id_val="fit", zoom=9, max_zoom=15)))
            .controls(_Built(geomodel.ControlsOptions(show_zoom=True, mouse_wheel_zoom=False,
                                                      show_attribution=True)))
            .tooltip(_Built(geomodel.TooltipOptions(mode=geomodel.TooltipMode.DETAILS)))
            .override_by_name(STATUS_COLUMN, [
                model.DynamicConfigValue(id_val="mappings", value=[mapping])]))
