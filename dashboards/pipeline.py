"""Pipeline health: is the stream flowing, and are the workers alive?

Event counts come from `event_counts_minute` (ioc/migrations/0002_timeseries.*.sql: a table the
worker keeps on plain PostgreSQL, a real-time continuous aggregate on TimescaleDB), bucketed by
the events' `occurred_at`. Rates are events per minute averaged over Grafana's `$__interval`
(at least one minute). Workers come from `worker_status` (the heartbeat each worker writes,
streams/status.py); a worker counts as alive while its heartbeat is younger than 15 s (the API's
`heartbeat_limit` with the default 5 s heartbeat). Dead letters themselves are not stored in the
database yet: only the workers' counters since they started are shown.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.sdk import DATASOURCE, PanelBuilder, Sql, big_number, grid, series, thresholds

UID = "ioc-pipeline"
TITLE = "IOC — Sức khỏe hệ thống"
HEARTBEAT_LIMIT_S = 15
STAT_H, SERIES_H, TABLE_H = 5, 10, 10


def per_minute(column: str) -> str:
    """Events per minute per `column` (kind, source), averaged over `$__interval` buckets."""
    return f"""SELECT $__timeGroupAlias(bucket, $__interval), {column} AS metric,
       round(sum(events) * 60000.0 / greatest($__interval_ms, 60000), 2) AS value
FROM event_counts_minute
WHERE $__timeFilter(bucket)
GROUP BY 1, 2
ORDER BY 1, 2"""


EVENTS_TOTAL = """SELECT coalesce(sum(events), 0) AS value
FROM event_counts_minute
WHERE $__timeFilter(bucket)"""
WORKERS_ALIVE = f"""SELECT count(*) FILTER (
           WHERE heartbeat_at > now() - INTERVAL '{HEARTBEAT_LIMIT_S} seconds') AS value
FROM worker_status"""
HEARTBEAT_AGE = """SELECT round(extract(epoch FROM now() - max(heartbeat_at))::numeric, 1) AS value
FROM worker_status"""
DEAD_LETTERS = """SELECT coalesce(sum(n::bigint), 0) AS value
FROM worker_status, jsonb_each_text(counters -> 'dead_letters') AS e(topic, n)"""
WORKERS = f"""SELECT w.instance_id AS "Tiến trình",
       w.started_at AS "Khởi động lúc",
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


def events_total() -> PanelBuilder:
    return big_number(1, "Sự kiện trong khoảng thời gian", EVENTS_TOTAL, grid(0, 0, 6, STAT_H),
                      description="Sự kiện hợp lệ đã lưu, theo thời điểm xảy ra.")


def workers_alive() -> PanelBuilder:
    return big_number(2, "Tiến trình xử lý hoạt động", WORKERS_ALIVE, grid(6, 0, 6, STAT_H),
                      steps=thresholds("red", (1, "green")),
                      description=f"Nhịp tim trong {HEARTBEAT_LIMIT_S} giây gần nhất.")


def heartbeat_age() -> PanelBuilder:
    return big_number(3, "Nhịp tim gần nhất", HEARTBEAT_AGE, grid(12, 0, 6, STAT_H), unit="s",
                      decimals=1,
                      steps=thresholds("green", (HEARTBEAT_LIMIT_S, "red")),
                      description="Số giây từ nhịp tim mới nhất của các tiến trình xử lý.")


def dead_letters() -> PanelBuilder:
    return big_number(4, "Thư lỗi (từ khi khởi động)", DEAD_LETTERS, grid(18, 0, 6, STAT_H),
                      steps=thresholds("green", (1, "orange")),
                      description="Bộ đếm của các tiến trình đang chạy; thư lỗi chưa được lưu "
                                  "vào cơ sở dữ liệu.")


def by_kind() -> PanelBuilder:
    return (series(5, "Sự kiện mỗi phút theo loại", per_minute("kind"),
                   grid(0, STAT_H, 12, SERIES_H))
            .draw_style(common.GraphDrawStyle.LINE).fill_opacity(10))


def by_source() -> PanelBuilder:
    return (series(6, "Sự kiện mỗi phút theo nguồn", per_minute("source"),
                   grid(12, STAT_H, 12, SERIES_H))
            .draw_style(common.GraphDrawStyle.LINE).fill_opacity(10))


def workers() -> PanelBuilder:
    return (table.Panel().id(7).title("Tiến trình xử lý (worker)").datasource(DATASOURCE)
            .with_target(Sql(WORKERS)).grid_pos(grid(0, STAT_H + SERIES_H, 24, TABLE_H))
            .show_header(True).cell_height(common.TableCellHeight.SM)
            .align(common.FieldTextAlignment.AUTO).inspect(False).filterable(False)
            .no_value("—")
            .override_by_name("Trạng thái", [
                model.DynamicConfigValue(id_val="custom.cellOptions",
                                         value={"type": "color-background", "mode": "basic"}),
                model.DynamicConfigValue(id_val="mappings", value=[{
                    "type": "value", "options": {
                        "Hoạt động": {"color": "green", "index": 0},
                        "Mất tín hiệu": {"color": "red", "index": 1}}}])]))


PANELS = (events_total, workers_alive, heartbeat_age, dead_letters, by_kind, by_source, workers)


def build() -> model.Dashboard:
    board = (db.Dashboard(TITLE).uid(UID).tags(["ioc", "ops"]).timezone("Asia/Ho_Chi_Minh")
             .time("now-6h", "now").refresh("30s").week_start("monday").readonly()
             .timepicker(db.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m"])))
    for panel in PANELS:
        board = board.with_panel(panel())
    return board.build()
