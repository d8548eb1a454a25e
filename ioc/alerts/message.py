"""The words of an alert notification, in Vietnamese, the same on every channel (e-mail,
Telegram, Zalo, webhook): what (rule and metric), where (scope), how bad (value against
threshold, severity), since when, the dashboard link and, for a firing alert, the one-click
acknowledge link (ioc/alerts/links.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from ioc.core.kpis import CATALOGUE, MEASURES

# metric -> its catalogue label and unit (the built-in kinds' measures included)
METRIC_NAMES = {m.name: m.title for m in (*CATALOGUE, *MEASURES.values())}
SEVERITIES = {"info": "Thông tin", "warning": "Cảnh báo", "critical": "Nghiêm trọng"}
COMPARISONS = {"<": "thấp hơn ngưỡng", "<=": "không vượt quá ngưỡng",
               ">": "vượt ngưỡng", ">=": "bằng hoặc vượt ngưỡng"}


@dataclass(frozen=True)
class Notice:
    """One transition as the message tells it."""

    rule: str
    metric: str
    scope: str
    state: str  # firing | resolved
    severity: str
    value: Decimal | None
    threshold: Decimal
    comparison: str
    at: datetime  # the transition
    since: datetime  # when the episode began: its first pending or firing row
    seq: int = 0  # the transition's alerts.seq (what an acknowledge link names)
    missing: tuple[str, ...] = ()  # the part of the value's inputs not received

    @property
    def shown_value(self) -> str:
        """The value, with what it lacks next to it: never read as a full measurement."""
        notes = f" ({'; '.join(self.missing)})" if self.missing and self.value is not None \
            else ""
        return number(self.value) + notes


@dataclass(frozen=True)
class Text:
    """A composed message: a subject line and the body's lines (links included)."""

    subject: str
    lines: tuple[str, ...]

    @property
    def body(self) -> str:
        return "\n".join(self.lines)


def scope_text(scope: str) -> str:
    if scope == "province":
        return "Toàn tỉnh"
    kind, _, code = scope.partition(":")
    return {"agency": f"Cơ quan/đơn vị {code}", "commune": f"Xã/phường {code}",
            "source": f"Nguồn dữ liệu {code}"}.get(kind, scope)


def when(at: datetime, tz: ZoneInfo) -> str:
    return f"{at.astimezone(tz):%H:%M ngày %d/%m/%Y}"


def number(value: Decimal | None) -> str:
    if value is None:
        return "không có dữ liệu"
    text = f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)
    return text.replace(".", ",")


def compose(notice: Notice, dashboard_url: str, tz: ZoneInfo,
            ack_url: str | None = None) -> Text:
    severity = SEVERITIES.get(notice.severity, notice.severity)
    where = scope_text(notice.scope)
    metric = METRIC_NAMES.get(notice.metric, notice.metric)
    if notice.state == "firing":
        subject = f"[IOC][{severity}] {notice.rule} – {where}"
        lines = [
            "Trung tâm Giám sát, điều hành thông minh (IOC) thông báo cảnh báo:",
            "",
            f"Cảnh báo: {notice.rule}",
            f"Chỉ số: {metric} ({notice.metric})",
            f"Phạm vi: {where}",
            f"Giá trị hiện tại: {notice.shown_value} – "
            f"{COMPARISONS.get(notice.comparison, notice.comparison)} "
            f"{number(notice.threshold)} (điều kiện: {notice.comparison} "
            f"{number(notice.threshold)})",
            f"Mức độ: {severity}",
            f"Bắt đầu từ: {when(notice.since, tz)}",
            f"Cảnh báo lúc: {when(notice.at, tz)}",
        ]
    else:
        subject = f"[IOC][Đã hết cảnh báo] {notice.rule} – {where}"
        lines = [
            "Trung tâm Giám sát, điều hành thông minh (IOC) thông báo cảnh báo đã kết thúc:",
            "",
            f"Cảnh báo: {notice.rule}",
            f"Chỉ số: {metric} ({notice.metric})",
            f"Phạm vi: {where}",
            f"Giá trị hiện tại: {notice.shown_value} (ngưỡng: {notice.comparison} "
            f"{number(notice.threshold)})",
            f"Mức độ: {severity}",
            f"Đã hết cảnh báo lúc: {when(notice.at, tz)}",
        ]
    if dashboard_url:
        lines += ["", f"Xem chi tiết trên bảng điều khiển: {dashboard_url}"]
    if ack_url and notice.state == "firing":
        lines += ["", f"Xác nhận đã tiếp nhận cảnh báo: {ack_url}"]
    return Text(subject, tuple(lines))


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 units, an ellipsis marking the cut."""
    if utf16_len(text) <= limit:
        return text
    while utf16_len(text) > limit - 1:
        text = text[:-max(1, (utf16_len(text) - limit + 1) // 2)]
    return text + "…"
