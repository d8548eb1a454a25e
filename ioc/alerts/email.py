"""Alert e-mails in Vietnamese, sent with the standard library's smtplib (in a thread when
called from async code: see ioc/alerts/deliver.py). The words are ioc/alerts/message.py's,
the same on every channel. The channel (Email) sends through the SmtpConfig it is given, not
the settings alone: deliver.py takes one, so a test or a one-off run picks its own server.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid

import httpx

from ioc.alerts.message import Notice, Text
from ioc.alerts.transport import Outgoing, Sender, SendError
from ioc.core.settings import Settings

# Long header lines are not folded: Python's folder drops a space next to an encoded word
# (a subject "a – Toàn tỉnh" arrives as "a– Toàn tỉnh").
POLICY = default_policy.clone(max_line_length=998)
FOOTER = "Thư này được gửi tự động, xin không trả lời."


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send: the smtp_* settings (from_settings; their defaults are the
    settings') or a server of one's own. `host` empty: e-mail is not configured."""

    host: str
    port: int
    sender: str
    username: str = ""  # empty: no login
    password: str = ""
    starttls: bool = False
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


@dataclass(frozen=True)
class Email:
    """The e-mail channel (ioc/alerts/transport.py Channel) on one SMTP config; None or an
    empty host: e-mail is not configured, whatever the settings say."""

    config: SmtpConfig | None

    def configured(self, settings: Settings) -> bool:
        return self.config is not None and bool(self.config.host)

    def sender(self, settings: Settings, http: httpx.Client) -> Sender:
        config = self.config
        if config is None:
            raise ValueError("e-mail is not configured")

        def send_email(out: Outgoing) -> None:
            send(config, build(out.text, config.sender, out.target, out.notice))
        return send_email
