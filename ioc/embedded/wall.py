"""The terminal wall of `ioc demo`: what the IOC room's screens show, refreshed each second.

Reads only the KPI functions and views (the same the dashboards read), never raw events,
and shows no personal data (there is none in the database to show).
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from ioc.core.db import connect
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings

WORST_AGENCIES = """
SELECT k.agency_code, d.agency_name, k.to_handle, k.on_time_rate, k.online_rate,
       k.late_in_process, k.due_soon
FROM kpi_dossiers_by_agency k
JOIN (SELECT agency_code, max(agency_name) AS agency_name FROM dossiers GROUP BY 1) d
     USING (agency_code)
WHERE k.to_handle > 0
ORDER BY k.on_time_rate NULLS LAST, k.online_rate NULLS LAST
LIMIT %s
"""
OPEN_REPORTS = """
SELECT coalesce(service_group, service_code) AS category, count(*) FILTER (WHERE is_open) AS open,
       count(*) FILTER (WHERE overdue) AS overdue
FROM field_report_facts GROUP BY 1 HAVING count(*) FILTER (WHERE is_open) > 0
ORDER BY 2 DESC LIMIT %s
"""
STORED = """
SELECT coalesce(sum(n::bigint), 0) AS stored
FROM worker_status, jsonb_each_text(counters -> 'events_stored') AS e(topic, n)
"""


@dataclass
class WallData:
    at: datetime
    kpis: dict[str, dict[str, Any]]
    agencies: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    stored: int
    lag: int | None
    published_per_s: float = 0.0
    stored_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def read_wall(settings: Settings, lag: int | None, rows: int = 6) -> WallData:
    kpis = read_kpis(settings)
    with connect(settings, row_factory=dict_row) as conn:
        agencies = conn.execute(WORST_AGENCIES, (rows,)).fetchall()
        reports = conn.execute(OPEN_REPORTS, (rows,)).fetchall()
        stored = conn.execute(STORED).fetchone()
    return WallData(at=datetime.now(ZoneInfo(settings.timezone)), kpis=kpis, agencies=agencies,
                    reports=reports, stored=int(stored["stored"]) if stored else 0, lag=lag)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} %"


def _tile(title: str, value: str, caption: str = "") -> Panel:
    return Panel(f"[bold]{value}[/bold]\n[dim]{caption}[/dim]", title=title, expand=True)


def render(data: WallData) -> RenderableType:
    d, doc, rep = data.kpis["dossiers"], data.kpis["documents"], data.kpis["field_reports"]
    tiles = Table.grid(expand=True)
    for _ in range(5):
        tiles.add_column(ratio=1)
    tiles.add_row(
        _tile("Đúng hạn (on time)", _pct(d["on_time_rate"]),
              f"trễ {d['finished_late'] + d['late_in_process']} · sắp trễ {d['due_soon']}"),
        _tile("Trực tuyến (online)", _pct(d["online_rate"]), f"{d['received']} hồ sơ"),
        _tile("Số hóa (digitized)", _pct(d["digitized_rate"])),
        _tile("Thanh toán TT (paid online)", _pct(d["paid_online_rate"])),
        _tile("Hài lòng (satisfaction)", _pct(d["satisfaction_rate"])),
    )
    tiles.add_row(
        _tile("Văn bản ký số (signed)", _pct(doc["signed_rate"]), f"{doc['outgoing']} văn bản đi"),
        _tile("Văn bản tồn (backlog)", str(doc["backlog"]), f"quá hạn {doc['backlog_overdue']}"),
        _tile("Phản ánh mở (open)", str(rep["open"]), f"quá hạn {rep['overdue']}"),
        _tile("Phản ánh đã xử lý", str(rep["resolved"]),
              f"trung vị {rep['median_hours_to_resolve'] or '—'} giờ"),
        _tile("Luồng (pipeline)", f"{data.stored_per_s:.0f} ev/s",
              f"gửi {data.published_per_s:.0f} ev/s · lag "
              f"{'—' if data.lag is None else data.lag}"),
    )
    agencies = Table(title="Cơ quan cần chú ý (worst agencies)", expand=True)
    agencies.add_column("Cơ quan", ratio=3, no_wrap=True, overflow="ellipsis")
    for column in ("Hồ sơ", "Đúng hạn", "Trực tuyến", "Trễ", "Sắp trễ"):
        agencies.add_column(column, ratio=1, no_wrap=True)
    for a in data.agencies:
        agencies.add_row(a["agency_name"] or a["agency_code"], str(a["to_handle"]),
                         _pct(a["on_time_rate"]), _pct(a["online_rate"]),
                         str(a["late_in_process"]), str(a["due_soon"]))
    reports = Table(title="Phản ánh hiện trường đang mở (open field reports)", expand=True)
    reports.add_column("Lĩnh vực", ratio=3, no_wrap=True, overflow="ellipsis")
    for column in ("Đang mở", "Quá hạn"):
        reports.add_column(column, ratio=1, no_wrap=True)
    for r in data.reports:
        reports.add_row(r["category"], str(r["open"]), str(r["overdue"]))
    lists = Table.grid(expand=True)
    lists.add_column(ratio=3)
    lists.add_column(ratio=2)
    lists.add_row(agencies, reports)
    title = f"Trung tâm IOC — {data.at:%d/%m/%Y %H:%M:%S}"
    return Panel(Group(tiles, lists, *data.notes), title=title, border_style="cyan")
