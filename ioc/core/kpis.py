"""The KPI catalogue: every metric once, with its SQL column, label, unit, direction and target.

`ioc kpis`, the alert rules and messages, the dashboards, the Grafana alert export and the
demo wall read this table; the formulas are in kpis.sql beside it (README, "Adding a KPI").
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row

from ioc.core.db import connect
from ioc.core.settings import Settings

Unit = Literal["", "%", "giờ", "phút"]  # "": a count
Better = Literal["higher", "lower"] | None  # None: a volume, neither better


@dataclass(frozen=True)
class Input:
    """Part of a KPI's inputs that may not have been received: a count column of the KPI's
    function and what every reader says then. `lacking` "none": the part is missing when the
    count is 0 (none received for the selection); "counted": the count is of what the value
    could not see, missing when > 0, and `{n}` in the note is that count."""

    column: str
    missing: str  # Vietnamese, shown next to the value
    lacking: Literal["none", "counted"] = "none"

    def note(self, row: Mapping[str, Any]) -> str | None:
        """What `row` (the KPI function's result) lacks of this part, or None."""
        count = row.get(self.column)
        if self.lacking == "none":
            return None if count else self.missing
        return self.missing.replace("{n}", str(count)) if count else None


# Citizens' evaluations arrive on a feed of their own (docs/domain.md): without them the
# satisfaction rate counts lateness alone and must not read as a measured satisfaction.
EVALUATIONS = Input("evaluated", "chưa có dữ liệu đánh giá")
# Outgoing copies without attachment bytes: the signed rate leaves them out of its base.
SIGNATURES = Input("outgoing_signed_unknown",
                   "{n} văn bản đi chưa xác định ký số, không có tệp đính kèm", "counted")


@dataclass(frozen=True)
class Kpi:
    """One column of a KPI function's result."""

    name: str  # what alert rules call it: `<family>.<column>`
    function: str  # the SQL function of kpis.sql that computes it
    column: str
    label: str  # Vietnamese, the one label every reader shows
    unit: Unit = ""
    better: Better = None
    target_766: float | None = None  # Decision 766's target (docs/domain.md, "Ratings")
    wall_target: float | None = None  # the monitor's own target where 766 sets none
    warn: float | None = None  # the wall is red past this, orange up to the target
    # Inputs beyond the KPI's own rows. With no input at all a KPI is NULL (its SQL); with
    # one of these missing its value stands, and `missing` says which part it lacks.
    inputs: tuple[Input, ...] = ()

    @property
    def family(self) -> str:
        """The state table whose rows it counts, which alert scopes list (`dossiers`...)."""
        return self.name.partition(".")[0]

    @property
    def target(self) -> float | None:
        return self.target_766 if self.target_766 is not None else self.wall_target

    @property
    def title(self) -> str:
        """The label with its unit, where the value is shown without one (alerts)."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def shown(self, value: object) -> str:
        """A value with its unit (rates with two decimals), as the wall and `ioc kpis` show it."""
        if value is None:
            return "—"
        return f"{value:.2f} %" if self.unit == "%" else f"{value} {self.unit}".rstrip()

    def missing(self, row: Mapping[str, Any]) -> list[str]:
        """What the value lacks in `row` (its function's result): the inputs none of which
        was received, or the count it could not see. Nothing for a value that is None (no
        input at all)."""
        if row.get(self.column) is None:
            return []
        return [note for i in self.inputs if (note := i.note(row)) is not None]

    def shown_in(self, row: Mapping[str, Any]) -> str:
        """The value of `row` as `shown`, with what it lacks: `94.96 % (chưa có dữ liệu...)`."""
        notes = self.missing(row)
        text = self.shown(row.get(self.column))
        return f"{text} ({'; '.join(notes)})" if notes else text

    def target_text(self) -> str:
        """`≥ 99 %`, or "" without a target."""
        if self.target is None:
            return ""
        sign = "≥" if self.better == "higher" else "≤"
        return f"{sign} {self.target:g}{f' {self.unit}' if self.unit else ''}"


@dataclass(frozen=True)
class Measure:
    """A value an alert kind measures itself (ioc/alerts/kinds.py), not a KPI column."""

    name: str
    label: str
    unit: Unit = ""

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


D, DOC, R = "kpi_dossiers", "kpi_documents", "kpi_field_reports"
CATALOGUE: tuple[Kpi, ...] = (
    Kpi("dossiers.received", D, "received", "Hồ sơ tiếp nhận"),
    Kpi("dossiers.to_handle", D, "to_handle", "Hồ sơ phải giải quyết"),
    Kpi("dossiers.finished", D, "finished", "Hồ sơ đã giải quyết"),
    Kpi("dossiers.finished_on_time", D, "finished_on_time", "Hồ sơ giải quyết đúng hạn"),
    Kpi("dossiers.finished_late", D, "finished_late", "Hồ sơ giải quyết quá hạn",
        better="lower"),
    Kpi("dossiers.in_process", D, "in_process", "Hồ sơ đang giải quyết"),
    Kpi("dossiers.late_in_process", D, "late_in_process", "Hồ sơ đang giải quyết quá hạn",
        better="lower"),
    Kpi("dossiers.due_soon", D, "due_soon", "Hồ sơ sắp đến hạn", better="lower"),
    Kpi("dossiers.not_yet_due", D, "not_yet_due", "Hồ sơ chưa đến hạn"),
    Kpi("dossiers.online", D, "online", "Hồ sơ nộp trực tuyến"),
    Kpi("dossiers.digitized", D, "digitized", "Hồ sơ được số hóa"),
    Kpi("dossiers.with_fee", D, "with_fee", "Hồ sơ có phí, lệ phí"),
    Kpi("dossiers.paid_online", D, "paid_online", "Hồ sơ thanh toán trực tuyến"),
    Kpi("dossiers.dissatisfied_or_late", D, "dissatisfied_or_late",
        "Hồ sơ không hài lòng, khiếu nại hoặc quá hạn", better="lower", inputs=(EVALUATIONS,)),
    Kpi("dossiers.evaluated", D, "evaluated", "Hồ sơ có đánh giá của người dân"),
    Kpi("dossiers.on_time_rate", D, "on_time_rate", "Tỷ lệ hồ sơ đúng hạn", "%", "higher",
        target_766=99, warn=95),
    Kpi("dossiers.online_rate", D, "online_rate", "Tỷ lệ nộp trực tuyến", "%", "higher",
        target_766=80, warn=60),
    Kpi("dossiers.digitized_rate", D, "digitized_rate", "Tỷ lệ số hóa hồ sơ", "%", "higher",
        target_766=90, warn=70),
    Kpi("dossiers.paid_online_rate", D, "paid_online_rate", "Tỷ lệ thanh toán trực tuyến", "%",
        "higher", wall_target=80, warn=60),
    Kpi("dossiers.satisfaction_rate", D, "satisfaction_rate", "Tỷ lệ hài lòng", "%", "higher",
        target_766=95, warn=85, inputs=(EVALUATIONS,)),
    Kpi("documents.documents", DOC, "documents", "Văn bản đến và đi"),
    Kpi("documents.incoming", DOC, "incoming", "Văn bản đến"),
    Kpi("documents.outgoing", DOC, "outgoing", "Văn bản đi"),
    Kpi("documents.outgoing_signed", DOC, "outgoing_signed", "Văn bản đi đã ký số"),
    # Outgoing copies without attachment bytes: the part the signed rate cannot see.
    Kpi("documents.outgoing_signed_unknown", DOC, "outgoing_signed_unknown",
        "Văn bản đi chưa xác định ký số", better="lower"),
    Kpi("documents.completed", DOC, "completed", "Văn bản đã hoàn thành"),
    Kpi("documents.completed_on_time", DOC, "completed_on_time",
        "Văn bản hoàn thành đúng hạn"),
    Kpi("documents.backlog", DOC, "backlog", "Văn bản đến tồn đọng", better="lower"),
    Kpi("documents.backlog_overdue", DOC, "backlog_overdue", "Văn bản đến tồn đọng quá hạn",
        better="lower"),
    Kpi("documents.signed_rate", DOC, "signed_rate", "Tỷ lệ văn bản đi ký số", "%", "higher",
        wall_target=95, warn=80, inputs=(SIGNATURES,)),
    Kpi("documents.on_time_rate", DOC, "on_time_rate", "Tỷ lệ văn bản xử lý đúng hạn", "%",
        "higher", wall_target=95, warn=85),
    Kpi("field_reports.reports", R, "reports", "Phản ánh tiếp nhận"),
    Kpi("field_reports.open", R, "open", "Phản ánh đang xử lý", better="lower"),
    Kpi("field_reports.resolved", R, "resolved", "Phản ánh đã giải quyết"),
    Kpi("field_reports.duplicate", R, "duplicate", "Phản ánh trùng lặp"),
    Kpi("field_reports.overdue", R, "overdue", "Phản ánh quá hạn", better="lower"),
    Kpi("field_reports.median_hours_to_resolve", R, "median_hours_to_resolve",
        "Thời gian giải quyết phản ánh, trung vị", "giờ", "lower"),
)
KPIS: dict[str, Kpi] = {kpi.name: kpi for kpi in CATALOGUE}
# Values the alert kinds measure themselves (ioc/alerts/kinds.py; due_soon reads as the KPI).
MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("field_reports.surge", "Phản ánh trong giờ qua (tăng đột biến)"),
    Measure("sources.silent_minutes", "Thời gian không nhận được dữ liệu từ nguồn", "phút"),
)}
# Family -> its KPI function, in the catalogue's order.
FUNCTIONS: dict[str, str] = {kpi.family: kpi.function for kpi in CATALOGUE}


def find(function: str, column: str) -> Kpi:
    """The entry of one result column."""
    return next(k for k in CATALOGUE if k.function == function and k.column == column)


def read_kpis(settings: Settings, since: datetime | None = None, until: datetime | None = None,
              unit: str | None = None, agency: str | None = None,
              as_of: datetime | None = None) -> dict[str, dict[str, Any]]:
    """{"dossiers": {...}, "documents": {...}, "field_reports": {...}} for the period and scope,
    as of `as_of`; without it, as of the period's end when that is past, else now (a closed
    period's figures do not move as time passes: docs/domain.md, "As of a moment")."""
    params = {"since": since or "-infinity", "until": until or "infinity",
              "unit": unit, "agency": agency, "as_of": as_of}
    result: dict[str, dict[str, Any]] = {}
    with connect(settings, row_factory=dict_row) as conn:
        for name, function in FUNCTIONS.items():
            query = sql.SQL(
                "SELECT * FROM {}(%(since)s::timestamptz, %(until)s::timestamptz,"
                " %(unit)s::text, %(agency)s::text, NULL::text,"
                " coalesce(%(as_of)s::timestamptz, least(%(until)s::timestamptz, now())))"
            ).format(sql.Identifier(function))
            row = conn.execute(query, params).fetchone() or {}
            result[name] = {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
    return result


def missing_inputs(result: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """{KPI name: what it lacks} for `read_kpis`'s result: the KPIs whose value stands on
    part of its inputs only (`Kpi.missing`)."""
    found = {}
    for kpi in CATALOGUE:
        row = result.get(kpi.family)
        notes = kpi.missing(row) if row is not None and kpi.column in row else []
        if notes:
            found[kpi.name] = notes
    return found
