"""Alert e-mails in Vietnamese, sent with the standard library's smtplib (in a thread when
called from async code: see ioc/alerts/deliver.py).

A message says what (rule and metric), where (scope), how bad (value against threshold,
severity), since when, and links to the dashboard.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from ioc.settings import Settings

METRIC_NAMES = {
    "dossiers.on_time_rate": "Tỷ lệ hồ sơ giải quyết đúng hạn (%)",
    "dossiers.online_rate": "Tỷ lệ hồ sơ nộp trực tuyến (%)",
    "dossiers.digitized_rate": "Tỷ lệ hồ sơ được số hóa (%)",
    "dossiers.paid_online_rate": "Tỷ lệ thanh toán trực tuyến (%)",
    "dossiers.satisfaction_rate": "Tỷ lệ hài lòng của người dân (%)",
    "dossiers.late_in_process": "Số hồ sơ đang xử lý quá hạn",
    "dossiers.due_soon": "Số hồ sơ sắp đến hạn",
    "dossiers.received": "Số hồ sơ tiếp nhận",
    "documents.backlog": "Số văn bản tồn đọng",
    "documents.backlog_overdue": "Số văn bản tồn đọng quá hạn",
    "documents.signed_rate": "Tỷ lệ văn bản ký số (%)",
    "field_reports.open": "Số phản ánh hiện trường chưa xử lý",
    "field_reports.overdue": "Số phản ánh hiện trường quá hạn",
    "field_reports.median_hours_to_resolve": "Thời gian xử lý phản ánh (trung vị, giờ)",
}
SEVERITIES = {"info": "Thông tin", "warning": "Cảnh báo", "critical": "Nghiêm trọng"}
# Long header lines are not folded: Python's folder drops a space next to an encoded word
# (a subject "a – Toàn tỉnh" arrives as "a– Toàn tỉnh").
POLICY = default_policy.clone(max_line_length=998)
COMPARISONS = {"<": "thấp hơn ngưỡng", "<=": "không vượt quá ngưỡng",
               ">": "vượt ngưỡng", ">=": "bằng hoặc vượt ngưỡng"}


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send. `host` empty: e-mail is not configured."""

    host: str = ""
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    sender: str = "ioc@localhost"
    timeout: float = 10.0
    dashboard_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(host=settings.smtp_host, port=settings.smtp_port,
                   username=settings.smtp_username, password=settings.smtp_password,
                   starttls=settings.smtp_starttls, sender=settings.smtp_from,
                   dashboard_url=settings.dashboard_url)


@dataclass(frozen=True)
class Notice:
    """One transition as the e-mail tells it."""

    rule: str
    metric: str
    scope: str
    state: str  # firing | resolved
    severity: str
    value: Decimal | None
    threshold: Decimal
    comparison: str
    at: datetime  # the transition
    since: datetime  # firing: when the condition started (the pending row, or `at`)


def scope_text(scope: str) -> str:
    if scope == "province":
        return "Toàn tỉnh"
    kind, _, code = scope.partition(":")
    return {"agency": f"Cơ quan/đơn vị {code}", "commune": f"Xã/phường {code}"}.get(kind, scope)


def _when(at: datetime, tz: ZoneInfo) -> str:
    return f"{at.astimezone(tz):%H:%M ngày %d/%m/%Y}"


def _number(value: Decimal | None) -> str:
    if value is None:
        return "không có dữ liệu"
    text = f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)
    return text.replace(".", ",")


def compose(notice: Notice, sender: str, to: str, dashboard_url: str,
            tz: ZoneInfo) -> EmailMessage:
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
            f"Giá trị hiện tại: {_number(notice.value)} – "
            f"{COMPARISONS.get(notice.comparison, notice.comparison)} "
            f"{_number(notice.threshold)} (điều kiện: {notice.comparison} "
            f"{_number(notice.threshold)})",
            f"Mức độ: {severity}",
            f"Bắt đầu từ: {_when(notice.since, tz)}",
            f"Cảnh báo lúc: {_when(notice.at, tz)}",
        ]
    else:
        subject = f"[IOC][Đã hết cảnh báo] {notice.rule} – {where}"
        lines = [
            "Trung tâm Giám sát, điều hành thông minh (IOC) thông báo cảnh báo đã kết thúc:",
            "",
            f"Cảnh báo: {notice.rule}",
            f"Chỉ số: {metric} ({notice.metric})",
            f"Phạm vi: {where}",
            f"Giá trị hiện tại: {_number(notice.value)} (ngưỡng: {notice.comparison} "
            f"{_number(notice.threshold)})",
            f"Mức độ: {severity}",
            f"Đã hết cảnh báo lúc: {_when(notice.at, tz)}",
        ]
    if dashboard_url:
        lines += ["", f"Xem chi tiết trên bảng điều khiển: {dashboard_url}"]
    lines += ["", "Thư này được gửi tự động, xin không trả lời."]
    message = EmailMessage(policy=POLICY)
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(notice.at)
    message["Message-ID"] = make_msgid(domain="ioc")
    message.set_content("\n".join(lines) + "\n", charset="utf-8")
    return message


def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Send one message; raises OSError or smtplib.SMTPException when it was not accepted."""
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.username:
            smtp.login(config.username, config.password)
        smtp.send_message(message)
