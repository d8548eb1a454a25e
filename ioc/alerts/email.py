"""Alert e-mails in Vietnamese, sent with the standard library's smtplib (in a thread when
called from async code: see ioc/alerts/deliver.py). The words are ioc/alerts/message.py's,
the same on every channel.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from ioc.alerts.message import (  # noqa: F401  (METRIC_NAMES...: moved, still importable)
    METRIC_NAMES,
    SEVERITIES,
    Notice,
    Text,
    scope_text,
)
from ioc.alerts.message import compose as compose_text
from ioc.alerts.transport import SendError
from ioc.core.settings import Settings

# Long header lines are not folded: Python's folder drops a space next to an encoded word
# (a subject "a – Toàn tỉnh" arrives as "a– Toàn tỉnh").
POLICY = default_policy.clone(max_line_length=998)
FOOTER = "Thư này được gửi tự động, xin không trả lời."


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


def build(text: Text, sender: str, to: str, notice: Notice) -> EmailMessage:
    """The e-mail of a composed text (ioc/alerts/message.py)."""
    mail = EmailMessage(policy=POLICY)
    mail["Subject"] = text.subject
    mail["From"] = sender
    mail["To"] = to
    mail["Date"] = format_datetime(notice.at)
    mail["Message-ID"] = make_msgid(domain="ioc")
    mail.set_content("\n".join([*text.lines, "", FOOTER]) + "\n", charset="utf-8")
    return mail


def compose(notice: Notice, sender: str, to: str, dashboard_url: str, tz: ZoneInfo,
            ack_url: str | None = None) -> EmailMessage:
    return build(compose_text(notice, dashboard_url, tz, ack_url), sender, to, notice)


def refusal(exc: smtplib.SMTPException | OSError) -> SendError:
    """What a failed send means for the outbox row. A 5xx reply refusing the sender, the
    recipient (550 unknown mailbox...) or the message is permanent: retrying cannot help.
    4xx replies (greylisting, mailbox full...), a refused greeting or login (the server or
    our settings, not this message) and connection errors are transient."""
    codes: list[int] = []
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
    elif isinstance(exc, smtplib.SMTPResponseException) and not isinstance(
            exc, smtplib.SMTPConnectError | smtplib.SMTPAuthenticationError):
        codes = [exc.smtp_code]
    permanent = bool(codes) and all(500 <= code < 600 for code in codes)
    return SendError(f"SMTP {type(exc).__name__}: {exc}"[:500], permanent=permanent)


def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Send one message; raises SendError (`refusal`) when it was not accepted."""
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username:
                smtp.login(config.username, config.password)
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise refusal(exc) from None
