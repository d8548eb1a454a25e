"""Official documents (văn bản), drill-down: incoming and outgoing per period, the backlog and
its overdue part, the digital-signature rate, per agency, how long processing took, and the
overdue and due-soon documents.

Counts and rates come from `kpi_documents(since, until, unit, agency, former_district, as_of)`
and the flags of `document_facts_at(as_of)` (ioc/core/kpis.sql) for the dashboard's time range (a
cohort: documents first seen in the period), the chosen commune/ward (`$commune`), agency
(`$agency`) and former district (`$former_district`, dashboards/former_district.py); "All" is
SQL NULL for each; the per-agency table reads `kpi_documents_by`: the same
KPIs for every agency in one pass. Backlog: incoming documents not rejected, completed or
recalled; overdue: in the backlog and past their deadline, as of the range's end or now when
it runs on past it (variables.AS_OF); due soon: in
the backlog, deadline within the `due_soon_horizon` setting (24 h by default), as for dossiers.

"Incoming and outgoing" sums the hourly rollup (`rollup_hour`, kind 'document') per period of
`$trend` in Vietnam's calendar (dashboards/trend.py); the first and last period may be partial.
The rollup has no former district: with one chosen, the panel counts the chosen documents per
hour of their anchor time instead (the same buckets).
Processing time: from first seen to the "completed" (06) status message, completed documents
only. The overdue and due-soon list shows identifiers, agency and dates only (metadata: the
database keeps no subject, content or attachment of a document), with the hours left.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards import former_district, sdk
from dashboards.dossiers import listing
from dashboards.durations import distribution_panel, distribution_sql
from dashboards.trend import period, trend_variable
from dashboards.variables import (
    AS_OF,
    DISTRICT,
    LIST_LIMIT,
    PERIOD,
    SCOPE,
    SELECTION,
    scope_variables,
)

UID = "ioc-documents"
TITLE = "IOC — Văn bản"
TILE_H, ROW_H, TABLE_H, LIST_H = 5, 9, 9, 12


# The KPIs of the table, after the agency columns, titled with their catalogue labels.
COLUMNS = sdk.kpi_columns("documents.incoming", "documents.outgoing", "documents.signed_rate",
                          "documents.completed", "documents.on_time_rate", "documents.backlog",
                          "documents.backlog_overdue", notes=True)
RATES = [title for title, column in COLUMNS.items() if column.endswith("_rate")]
# QCVN 102:2016 business status codes of the documents still in the backlog.
STATUS_LABELS = {"01": "Đã đến", "03": "Đã tiếp nhận", "04": "Đã phân công",
                 "05": "Đang xử lý", "13": "Đề nghị thu hồi", "16": "Từ chối thu hồi"}


def _columns() -> str:
    columns = {"Mã cơ quan": "group_code", "Cơ quan": "group_name", **COLUMNS}
    return ",\n       ".join(f'{column} AS "{title}"' for title, column in columns.items())


# kpi_documents per agency of the selection, in one pass (`kpi_documents_by`).
BY_AGENCY = f"""SELECT {_columns()}
FROM kpi_documents_by({PERIOD}, 'agency', $commune::text, $agency::text, {DISTRICT}, {AS_OF})
ORDER BY group_code"""

CHOSEN = """($commune::text IS NULL OR $commune::text IN (province_code, commune_code))
        AND ($agency::text IS NULL OR agency_code = $agency::text)"""
IN_AND_OUT = f"""SELECT {period("bucket")} AS "time",
       coalesce(sum(value) FILTER (WHERE metric = 'incoming'), 0) AS "Văn bản đến",
       coalesce(sum(value) FILTER (WHERE metric = 'outgoing'), 0) AS "Văn bản đi"
FROM (SELECT bucket, metric, value
      FROM rollup_hour
      WHERE {DISTRICT} IS NULL AND kind = 'document' AND metric IN ('incoming', 'outgoing')
        AND {CHOSEN}
      UNION ALL
      SELECT time_bucket(INTERVAL '1 hour', anchor_at), direction, 1
      FROM document_facts
      WHERE former_district_code = {DISTRICT} AND direction IN ('incoming', 'outgoing')
        AND {CHOSEN}) AS moved
WHERE $__timeFilter(bucket)
GROUP BY 1
ORDER BY 1"""

PROCESSING_TIME = distribution_sql(
    "extract(epoch FROM completed_at - anchor_at) / 3600", f"document_facts_at({AS_OF})",
    f"completed AND {SELECTION}", "document_id", "Văn bản")

_STATUS = "\n".join(f"            WHEN '{code}' THEN '{label}'"
                    for code, label in STATUS_LABELS.items())
LATE_AND_DUE_SOON = f"""SELECT document_id AS "Mã văn bản",
       code_notation AS "Số, ký hiệu",
       agency_code AS "Mã cơ quan",
       agency_name AS "Cơ quan",
       deadline AS "Hạn xử lý",
       CASE coalesce(status, '01')
{_STATUS}
            ELSE status END AS "Trạng thái",
       {sdk.hours_left("deadline", AS_OF)} AS "{sdk.HOURS_LEFT}"
FROM document_facts_at({AS_OF})
WHERE in_backlog AND deadline < {AS_OF} + (SELECT ioc_due_soon_horizon())
  AND {SELECTION}
ORDER BY deadline, document_id
LIMIT {LIST_LIMIT}"""


TILES: tuple[sdk.Tile, ...] = (
    ("documents.incoming", None, ""),
    ("documents.outgoing", None, ""),
    ("documents.signed_rate", None, ""),
    ("documents.on_time_rate", None,
     "Văn bản đã hoàn thành trước hạn xử lý (hoặc không có hạn)."),
    ("documents.backlog", sdk.thresholds("green", (1, "orange")),
     "Văn bản đến chưa hoàn thành, không bị từ chối hay thu hồi."),
    ("documents.backlog_overdue", sdk.thresholds("green", (1, "red")), ""),
)


def tiles() -> list[sdk.PanelBuilder]:
    return sdk.kpi_row(TILES, lambda kpi: sdk.kpi_sql(kpi, SCOPE), TILE_H)


def in_and_out() -> sdk.PanelBuilder:
    return sdk.series(7, "Văn bản đến và đi theo chu kỳ", IN_AND_OUT,
                      sdk.grid(0, TILE_H, 16, ROW_H))


def processing_time() -> sdk.PanelBuilder:
    return distribution_panel(
        8, "Thời gian xử lý văn bản", PROCESSING_TIME, sdk.grid(16, TILE_H, 8, ROW_H),
        "Văn bản đã hoàn thành: từ khi đến đến khi hoàn thành (trạng thái 06).")


def by_agency() -> sdk.PanelBuilder:
    return sdk.percent_columns(listing(9, "Theo cơ quan", BY_AGENCY,
                                       sdk.grid(0, TILE_H + ROW_H, 24, TABLE_H),
                                       "Văn bản trong khoảng thời gian, theo cơ quan."), RATES)


def late_and_due_soon() -> sdk.PanelBuilder:
    return sdk.hours_left_column(listing(
        10, "Văn bản đến quá hạn và sắp đến hạn", LATE_AND_DUE_SOON,
        sdk.grid(0, TILE_H + ROW_H + TABLE_H, 24, LIST_H),
        f"Văn bản tồn đọng đã quá hạn hoặc sắp đến hạn xử lý, theo hạn (tối đa {LIST_LIMIT}). "
        "Chỉ số hiệu, cơ quan và thời hạn: không có nội dung văn bản."))


PANELS = (in_and_out, processing_time, by_agency, late_and_due_soon)


def build() -> model.Dashboard:
    variables = [*scope_variables(), former_district.variable("documents"), trend_variable()]
    return sdk.dashboard(TITLE, UID, ["ioc", "van-ban"], variables,
                         [*tiles(), *(make() for make in PANELS)])
