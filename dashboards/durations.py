"""Time-to-process distributions: how many items took how long, in fixed buckets.

The buckets are the same for documents and field reports so that the two bar charts read alike;
every bucket is listed, with 0 when nothing fell in it (a bar chart with a missing bar lies).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.sdk import DATASOURCE, Sql, legend

# (label, lower bound in hours, upper bound in hours or None): [lower, upper).
BUCKETS = [("< 4 giờ", 0, 4), ("4–8 giờ", 4, 8), ("8–24 giờ", 8, 24), ("1–3 ngày", 24, 72),
           ("3–7 ngày", 72, 168), ("≥ 7 ngày", 168, None)]
BUCKET_COLUMN = "Thời gian"


def _values() -> str:
    rows = [f"({i}, '{label}', {low}, {'NULL' if high is None else high})"
            for i, (label, low, high) in enumerate(BUCKETS, start=1)]
    return ",\n                           ".join(rows)


def distribution_sql(hours: str, source: str, where: str, key: str, count_title: str) -> str:
    """Items of `source` matching `where`, counted per bucket of `hours` (an SQL expression).
    Each item's bucket is computed once (`width_bucket` over the lower bounds) and the counts
    joined to the buckets: joining every item to every bucket evaluated `hours` six times an
    item (0.1 s for 30 days of field reports, bench/panels.py)."""
    bounds = ", ".join(str(low) for _, low, _ in BUCKETS[1:])
    return f"""WITH b(ord, label, low, high) AS (VALUES {_values()})
SELECT b.label AS "{BUCKET_COLUMN}", coalesce(x.items, 0) AS "{count_title}"
FROM b
LEFT JOIN (SELECT width_bucket(hours, ARRAY[{bounds}]) + 1 AS ord, count({key}) AS items
           FROM (SELECT {key}, {hours} AS hours
                 FROM {source}
                 WHERE {where.replace(chr(10), chr(10) + '                   ')}) y
           WHERE hours >= {BUCKETS[0][1]}
           GROUP BY 1) x
       ON x.ord = b.ord
ORDER BY b.ord"""


def distribution_panel(panel_id: int, title: str, sql: str, pos: model.GridPos,
                       description: str) -> barchart.Panel:
    """A bar per bucket, in bucket order (the query's order, x axis = the bucket label)."""
    return (barchart.Panel().id(panel_id).title(title).description(description)
            .datasource(DATASOURCE).with_target(Sql(sql)).grid_pos(pos)
            .x_field(BUCKET_COLUMN).orientation(common.VizOrientation.VERTICAL)
            .show_value(common.VisibilityMode.AUTO).fill_opacity(80).bar_width(0.8)
            .stacking(common.StackingMode.NONE).legend(legend()).decimals(0)
            .no_value("—"))
