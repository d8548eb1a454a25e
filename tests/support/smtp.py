"""A real SMTP server (aiosmtpd) on a free port for the alert e-mail tests, and what it got."""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller

from ioc.alerts.email import SmtpConfig
from tests.support.services import free_port

DASHBOARD = "https://ioc.phutho.gov.vn/dashboards/canh-bao"


@dataclass
class Mailbox:
    """What the SMTP server received: (envelope recipient, parsed message)."""

    messages: list[tuple[str, EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)  # type: ignore[attr-defined]
        with self.lock:
            for rcpt in envelope.rcpt_tos:  # type: ignore[attr-defined]
                self.messages.append((rcpt, message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def take(self) -> list[tuple[str, EmailMessage]]:
        with self.lock:
            taken, self.messages[:] = list(self.messages), []
        return taken


class SmtpServer:
    """aiosmtpd on a free port; `stop()` and `start()` again stand for an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = Mailbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A running SMTP server, stopped after the test."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def config(smtp: SmtpServer) -> SmtpConfig:
    """The alert mailer's settings, pointed at that server."""
    return SmtpConfig(host="127.0.0.1", port=smtp.port, sender="ioc@tinh.vn",
                      dashboard_url=DASHBOARD, timeout=5)


def body(message: EmailMessage) -> str:
    """The plain-text part of a message."""
    part = message.get_body(("plain",))
    assert part is not None
    return part.get_content()

