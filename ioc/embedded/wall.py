"""The terminal wall of `ioc demo`: what the IOC room's screens show, refreshed each second.

Reads only the KPI functions (the same the dashboards read), never raw events, names them by
the KPI catalogue, and shows no personal data (there is none in the database to show). It shows
the KPIs as of a moment: now, or the simulator's clock while `ioc demo` replays history.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from ioc.core.db import connect
from ioc.core.kpis import KPIS, read_kpis
from ioc.core.settings import Settings

WORST_AGENCIES = """
SELECT k.group_code AS agency_code, d.agency_name, k.to_handle, k.on_time_rate, k.online_rate,
       k.late_in_process, k.due_soon
FROM kpi_dossiers_by('-infinity', 'infinity', 'agency', as_of => %(as_of)s) k
JOIN (SELECT agency_code, max(agency_name) AS agency_name FROM dossiers GROUP BY 1) d
     ON d.agency_code = k.group_code
WHERE k.to_handle > 0
ORDER BY k.on_time_rate NULLS LAST, k.online_rate NULLS LAST
LIMIT %(rows)s
"""
OPEN_REPORTS = """
SELECT coalesce(service_group, service_code) AS category, count(*) FILTER (WHERE is_open) AS open,
       count(*) FILTER (WHERE overdue) AS overdue
FROM field_report_facts_at(%(as_of)s) GROUP BY 1 HAVING count(*) FILTER (WHERE is_open) > 0
ORDER BY 2 DESC LIMIT %(rows)s
"""
AGENCY_COLUMNS = ("dossiers.to_handle", "dossiers.on_time_rate", "dossiers.online_rate",
                  "dossiers.late_in_process", "dossiers.due_soon")
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


def read_wall(settings: Settings, lag: int | None, rows: int = 6,
              as_of: datetime | None = None) -> WallData:
    """All time, as of `as_of` (default: now)."""
    at = (as_of or datetime.now(UTC)).astimezone(ZoneInfo(settings.timezone))
    kpis = read_kpis(settings, as_of=at)
    params = {"as_of": at, "rows": rows}
    with connect(settings, row_factory=dict_row) as conn:
        agencies = conn.execute(WORST_AGENCIES, params).fetchall()
        reports = conn.execute(OPEN_REPORTS, params).fetchall()
        stored = conn.execute(STORED).fetchone()
    return WallData(at=at, kpis=kpis, agencies=agencies, reports=reports,
                    stored=int(stored["stored"]) if stored else 0, lag=lag)


def _tile(title: str, value: str, caption: str = "") -> Panel:
    return Panel(f"{title}\n[bold]{value}[/bold]\n[dim]{caption}[/dim]", expand=True)


def _kpi(data: WallData, name: str, caption: str = "") -> Panel:
    """A KPI's tile; a value standing on part of its inputs says which part is missing."""
    kpi = KPIS[name]
    return _tile(kpi.label, kpi.shown_in(data.kpis[kpi.family]), caption)


def render(data: WallData) -> RenderableType:
    d, doc, rep = data.kpis["dossiers"], data.kpis["documents"], data.kpis["field_reports"]
    median = KPIS["field_reports.median_hours_to_resolve"].shown(rep["median_hours_to_resolve"])
    tiles = Table.grid(expand=True)
    for _ in range(5):
        tiles.add_column(ratio=1)
    tiles.add_row(
        _kpi(data, "dossiers.on_time_rate",
             f"trễ {d['finished_late'] + d['late_in_process']} · sắp trễ {d['due_soon']}"),
        _kpi(data, "dossiers.online_rate", f"{d['received']} hồ sơ"),
        _kpi(data, "dossiers.digitized_rate"),
        _kpi(data, "dossiers.paid_online_rate"),
        _kpi(data, "dossiers.satisfaction_rate"),
    )
    tiles.add_row(
        _kpi(data, "documents.signed_rate", f"{doc['outgoing']} văn bản đi"),
        _kpi(data, "documents.backlog", f"quá hạn {doc['backlog_overdue']}"),
        _kpi(data, "field_reports.open", f"quá hạn {rep['overdue']}"),
        _kpi(data, "field_reports.resolved", f"trung vị {median}"),
        _tile("Luồng sự kiện", f"{data.stored_per_s:.0f} ev/s",
              f"gửi {data.published_per_s:.0f} ev/s · lag "
              f"{'—' if data.lag is None else data.lag}"),
    )
    agencies = Table(title="Cơ quan cần chú ý (worst agencies)", expand=True)
    agencies.add_column("Cơ quan", ratio=2, no_wrap=True, overflow="ellipsis")
    for name in AGENCY_COLUMNS:
        agencies.add_column(KPIS[name].label, ratio=1)
    for a in data.agencies:
        agencies.add_row(a["agency_name"] or a["agency_code"],
                         *(KPIS[name].shown(a[KPIS[name].column]) for name in AGENCY_COLUMNS))
    reports = Table(title="Phản ánh hiện trường đang mở (open field reports)", expand=True)
    reports.add_column("Lĩnh vực", ratio=3, no_wrap=True, overflow="ellipsis")
    for name in ("field_reports.open", "field_reports.overdue"):
        reports.add_column(KPIS[name].label, ratio=1)
    for r in data.reports:
        reports.add_row(r["category"], str(r["open"]), str(r["overdue"]))
    lists = Table.grid(expand=True)
    lists.add_column(ratio=3)
    lists.add_column(ratio=2)
    lists.add_row(agencies, reports)
    title = f"Trung tâm IOC — {data.at:%d/%m/%Y %H:%M:%S}"
    return Panel(Group(tiles, lists, *data.notes), title=title, border_style="cyan")
