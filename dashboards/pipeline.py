"""Pipeline health: is the stream flowing, are the workers and connectors alive, what was refused?

Event counts come from `kind_counts_minute` and `kind_counts_hour` (ioc/core/migrations/
0025_kind_counts.*.sql: counts per kind and source only, tables the worker keeps on plain
PostgreSQL, real-time continuous aggregates on TimescaleDB), bucketed by the events'
`occurred_at`, through `event_counts` (migrations 0017, 0025): the minutes of the time range,
the whole hours read from the hourly counts when the panel's buckets are whole hours (long
ranges: 60 times fewer rows, the same sums).
Rates are events per minute averaged over Grafana's `$__interval` (at least one minute).
Workers come from `worker_status` (the heartbeat each worker writes, streams/status.py); a
worker counts as alive while its heartbeat is younger than 15 s (the API's `heartbeat_limit`
with the default 5 s heartbeat). Restarts come from `worker_starts` (migration 0019, one row
per process start): a start within the time range of an instance id that had started before,
each one counted (a worker restarted twice counts twice; a first start is not a restart).

Dead letters come from the `dead_letters` table (migration 0016, written by the worker's
store_dead_letters agent): every dead letter of the workers, the connectors and `ioc import`,
once, by when it was dead-lettered within the time range; per reason and origin (the source
topic or connector) with the exact last time, and the most recent ones with their error and
key. Never the payload: the table does not hold it.

Connectors come from `connector_status` (ioc/core/migrations/0013_connector_status.sql, written by
each connector, connectors/status.py): health, why, last success, last record, silent since.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.sdk import (
    DATASOURCE,
    PanelBuilder,
    Sql,
    big_number,
    dashboard,
    grid,
    series,
    thresholds,
)

UID = "ioc-pipeline"
TITLE = "IOC — Sức khỏe hệ thống"
HEARTBEAT_LIMIT_S = 15
STAT_W, STAT_H, SERIES_H, TABLE_H, REASONS_W = 4, 5, 10, 9, 10
RECENT_LIMIT = 50
# Dead-letter reasons: streams/storing.py's and the connectors' (connectors/base.py).
REASONS = {"invalid_json": "JSON không hợp lệ", "invalid_event": "Sự kiện không hợp lệ",
           "rejected_by_database": "CSDL từ chối", "unmappable": "Không chuyển đổi được"}
# connectors/status.py's health.
HEALTH = {"ok": "Bình thường", "degraded": "Đang thử lại", "silent": "Im lặng",
          "stopped": "Đã dừng"}
KINDS = {"dossier": "Hồ sơ", "document": "Văn bản", "field_report": "Phản ánh"}
PLACE = "Phân vùng/offset trên chủ đề thư lỗi"
HEALTH_COLORS = {"ok": "green", "degraded": "orange", "silent": "orange", "stopped": "red"}


# The minute counts of the time range, `event_counts` (migrations 0017, 0025): whole hours
# from `kind_counts_hour` when the buckets are whole hours (or for a total), the same sums.
RANGE = "$__timeFrom()::timestamptz, $__timeTo()::timestamptz"
COUNTED = f"event_counts({RANGE}, $__interval_ms % 3600000 = 0)"


def per_minute(column: str) -> str:
    """Events per minute per `column` (kind, source), averaged over `$__interval` buckets."""
    return f"""SELECT $__timeGroupAlias(bucket, $__interval), {column} AS metric,
       round(sum(events) * 60000.0 / greatest($__interval_ms, 60000), 2) AS value
FROM {COUNTED}
GROUP BY 1, 2
ORDER BY 1, 2"""


EVENTS_TOTAL = f"""SELECT coalesce(sum(events), 0) AS value
FROM event_counts({RANGE}, true)"""
WORKERS_ALIVE = f"""SELECT count(*) FILTER (
           WHERE heartbeat_at > now() - INTERVAL '{HEARTBEAT_LIMIT_S} seconds') AS value
FROM worker_status"""
HEARTBEAT_AGE = """SELECT round(extract(epoch FROM now() - max(heartbeat_at))::numeric, 1) AS value
FROM worker_status"""
DEAD_LETTERS = """SELECT count(*) AS value
FROM dead_letters
WHERE $__timeFilter(at)"""
RESTARTS = """SELECT count(*) AS value
FROM worker_starts s
WHERE $__timeFilter(s.started_at)
  AND EXISTS (SELECT 1 FROM worker_starts p
              WHERE p.instance_id = s.instance_id AND p.started_at < s.started_at)"""
CONNECTORS_NOT_OK = """SELECT count(*) FILTER (WHERE health <> 'ok') AS value
FROM connector_status"""
WORKERS = f"""SELECT w.instance_id AS "Tiến trình",
       w.started_at AS "Khởi động lúc",
       (SELECT count(*) FROM worker_starts s
        WHERE s.instance_id = w.instance_id AND $__timeFilter(s.started_at)
          AND EXISTS (SELECT 1 FROM worker_starts p
                      WHERE p.instance_id = s.instance_id AND p.started_at < s.started_at))
           AS "Khởi động lại",
       w.heartbeat_at AS "Nhịp tim gần nhất",
       round(extract(epoch FROM now() - w.heartbeat_at)::numeric, 1) AS "Tuổi nhịp tim (giây)",
       CASE WHEN w.heartbeat_at > now() - INTERVAL '{HEARTBEAT_LIMIT_S} seconds'
            THEN 'Hoạt động' ELSE 'Mất tín hiệu' END AS "Trạng thái",
       (SELECT coalesce(sum(n::bigint), 0)
        FROM jsonb_each_text(w.counters -> 'events_stored') AS e(topic, n)) AS "Sự kiện đã lưu",
       (SELECT coalesce(sum(n::bigint), 0)
        FROM jsonb_each_text(w.counters -> 'dead_letters') AS e(topic, n)) AS "Thư lỗi"
FROM worker_status w
ORDER BY w.instance_id"""


def case(column: str, labels: dict[str, str]) -> str:
    """`column`'s Vietnamese label (the code itself when unknown)."""
    whens = "\n".join(f"            WHEN '{code}' THEN '{label}'" for code, label in labels.items())
    return f"CASE {column}\n{whens}\n            ELSE {column} END"


DEAD_LETTER_REASONS = f"""SELECT reason AS "Mã lý do",
       {case("reason", REASONS)} AS "Lý do",
       origin AS "Nguồn",
       count(*) AS "Thư lỗi",
       max(at) AS "Gần nhất"
FROM dead_letters
WHERE $__timeFilter(at)
GROUP BY reason, origin
ORDER BY 4 DESC, 1, 3"""
RECENT_DEAD_LETTERS = f"""SELECT at AS "Thời điểm",
       origin AS "Nguồn",
       {case("reason", REASONS)} AS "Lý do",
       error AS "Lỗi",
       message_key AS "Khóa",
       payload_bytes AS "Kích thước (byte)",
       dead_letter_partition || '/' || dead_letter_offset AS "{PLACE}"
FROM dead_letters
WHERE $__timeFilter(at)
ORDER BY at DESC, origin_key
LIMIT {RECENT_LIMIT}"""
CONNECTORS = f"""SELECT connector AS "Trình kết nối",
       {case("kind", KINDS)} AS "Loại",
       {case("health", HEALTH)} AS "Trạng thái",
       reason AS "Lý do",
       last_success_at AS "Thành công gần nhất",
       last_record_at AS "Bản ghi gần nhất",
       silent_since AS "Im lặng từ",
       updated_at AS "Cập nhật lúc"
FROM connector_status
ORDER BY CASE health WHEN 'stopped' THEN 0 WHEN 'silent' THEN 1 WHEN 'degraded' THEN 2
                     ELSE 3 END, connector"""


# The top row, left to right: panel id, title, query, colours, unit, description.
STATS: tuple[tuple[int, str, str, db.ThresholdsConfig | None, str, str], ...] = (
    (1, "Sự kiện trong khoảng thời gian", EVENTS_TOTAL, None, "none",
     "Sự kiện hợp lệ đã lưu, theo thời điểm xảy ra."),
    (2, "Tiến trình xử lý hoạt động", WORKERS_ALIVE, thresholds("red", (1, "green")), "none",
     f"Nhịp tim trong {HEARTBEAT_LIMIT_S} giây gần nhất."),
    (3, "Nhịp tim gần nhất", HEARTBEAT_AGE, thresholds("green", (HEARTBEAT_LIMIT_S, "red")), "s",
     "Số giây từ nhịp tim mới nhất của các tiến trình xử lý."),
    (4, "Thư lỗi trong khoảng thời gian", DEAD_LETTERS, thresholds("green", (1, "orange")),
     "none", "Sự kiện và bản ghi bị từ chối (tiến trình xử lý, trình kết nối, nhập tệp), mỗi "
     "thư lỗi một lần."),
    (11, "Tiến trình khởi động lại", RESTARTS, thresholds("green", (1, "orange")), "none",
     "Số lần khởi động lại trong khoảng thời gian (khởi động của một tiến trình đã từng chạy; "
     "mỗi lần một)."),
    (12, "Trình kết nối bất thường", CONNECTORS_NOT_OK, thresholds("green", (1, "red")), "none",
     "Đang thử lại, im lặng hoặc đã dừng."),
)


def stats() -> list[PanelBuilder]:
    return [big_number(panel_id, title, sql, grid(i * STAT_W, 0, STAT_W, STAT_H), steps=steps,
                       unit=unit, decimals=1 if unit == "s" else 0, description=about)
            for i, (panel_id, title, sql, steps, unit, about) in enumerate(STATS)]


def by_kind() -> PanelBuilder:
    return (series(5, "Sự kiện mỗi phút theo loại", per_minute("kind"),
                   grid(0, STAT_H, 12, SERIES_H))
            .draw_style(common.GraphDrawStyle.LINE).fill_opacity(10))


def by_source() -> PanelBuilder:
    return (series(6, "Sự kiện mỗi phút theo nguồn", per_minute("source"),
                   grid(12, STAT_H, 12, SERIES_H))
            .draw_style(common.GraphDrawStyle.LINE).fill_opacity(10))


def listing(panel_id: int, title: str, sql: str, pos: model.GridPos, no_value: str,
            description: str) -> table.Panel:
    return (table.Panel().id(panel_id).title(title).description(description)
            .datasource(DATASOURCE).with_target(Sql(sql)).grid_pos(pos)
            .show_header(True).cell_height(common.TableCellHeight.SM)
            .align(common.FieldTextAlignment.AUTO).inspect(False).filterable(False)
            .no_value(no_value))


def coloured(labels: dict[str, str]) -> list[model.DynamicConfigValue]:
    """A column whose cell is coloured by its value (label -> colour)."""
    return [model.DynamicConfigValue(id_val="custom.cellOptions",
                                     value={"type": "color-background", "mode": "basic"}),
            model.DynamicConfigValue(id_val="mappings", value=[{
                "type": "value", "options": {
                    label: {"color": color, "index": i}
                    for i, (label, color) in enumerate(labels.items())}}])]


def workers() -> PanelBuilder:
    return (listing(7, "Tiến trình xử lý (worker)", WORKERS,
                    grid(0, STAT_H + SERIES_H, 12, TABLE_H), "—",
                    "Khởi động lúc: lần khởi động của tiến trình đang chạy. Khởi động lại: "
                    "số lần trong khoảng thời gian.")
            .override_by_name("Trạng thái", coloured({"Hoạt động": "green",
                                                      "Mất tín hiệu": "red"})))


def connectors() -> PanelBuilder:
    return (listing(10, "Trình kết nối", CONNECTORS, grid(12, STAT_H + SERIES_H, 12, TABLE_H),
                    "Chưa có trình kết nối nào chạy",
                    "Trạng thái do mỗi trình kết nối ghi; im lặng: không có bản ghi mới lâu "
                    "hơn ngưỡng của nó.")
            .override_by_name("Trạng thái", coloured(
                {HEALTH[h]: color for h, color in HEALTH_COLORS.items()})))


def dead_letter_reasons() -> PanelBuilder:
    return listing(8, "Thư lỗi theo lý do và nguồn", DEAD_LETTER_REASONS,
                   grid(0, STAT_H + SERIES_H + TABLE_H, REASONS_W, TABLE_H), "Không có thư lỗi",
                   "Trong khoảng thời gian; nguồn: chủ đề Kafka hoặc trình kết nối.")


def recent_dead_letters() -> PanelBuilder:
    return listing(9, "Thư lỗi gần đây", RECENT_DEAD_LETTERS,
                   grid(REASONS_W, STAT_H + SERIES_H + TABLE_H, 24 - REASONS_W, TABLE_H),
                   "Không có thư lỗi",
                   f"Mới nhất trước (tối đa {RECENT_LIMIT}). Không có nội dung thư: chỉ lý do, "
                   "lỗi, khóa và kích thước; nội dung ở lại chủ đề thư lỗi.")


PANELS = (by_kind, by_source, workers, connectors, dead_letter_reasons, recent_dead_letters)


def build() -> model.Dashboard:
    return dashboard(TITLE, UID, ["ioc", "ops"], [], [*stats(), *(make() for make in PANELS)],
                     since="now-6h", refresh="30s", intervals=("10s", "30s", "1m", "5m"))
