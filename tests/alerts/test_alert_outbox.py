"""The outbox's finer points on real PostgreSQL and a real SMTP server (aiosmtpd): every
message of an alert says since when the alert holds (reminders too); a firing notice still
queued when the alert is acknowledged or silenced is cancelled, the resolved notice still goes
out; an SMTP server's 5xx refusal fails the row at once, a 4xx one is retried.

The rule `documents.backlog_overdue >= 0` over an empty province always holds (the value is
0), `>= 1` never (test_alert_ack's backlog_rule): the tests switch an alert on and off
without loading data. Times are written out here, not read back from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from ioc.alerts import Rule, evaluate
from ioc.alerts.ack import Ref, acknowledge, silence
from ioc.alerts.deliver import deliver, enqueue_and_deliver
from ioc.core.settings import Settings
from tests.support.alerts import backlog_rule, recipients_file
from tests.support.scenario import VIETNAM
from tests.support.services import query
from tests.support.smtp import Mailbox, SmtpServer, body, config

FIRING = "[IOC][Nghiêm trọng] ton-dong-qua-han – Toàn tỉnh"
RESOLVED = "[IOC][Đã hết cảnh báo] ton-dong-qua-han – Toàn tỉnh"


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    return recipients_file(tmp_path, "ioc-duty-officer: truc-ioc@tinh.vn\n")


def since_line(at: datetime) -> str:
    return f"Bắt đầu từ: {at.astimezone(VIETNAM):%H:%M ngày %d/%m/%Y}"


def outbox_states(settings: Settings) -> list[tuple[str, str, str | None]]:
    return query(settings, "SELECT a.state, o.state, o.last_error FROM alert_outbox o"
                           " JOIN alerts a ON a.seq = o.alert_seq ORDER BY o.id")


@pytest.mark.parametrize("for_", [0, "10 minutes"])
def test_a_reminder_says_when_the_alert_began(
    migrated: Settings, smtp: SmtpServer, recipients: Path, for_: object,
) -> None:
    settings = migrated
    rules = [backlog_rule(quiet="25 minutes", **{"for": for_})]
    t0 = datetime(2026, 11, 18, 9, 0, tzinfo=VIETNAM)  # a Wednesday morning

    def step(at: datetime, rules: list[Rule] = rules) -> list[EmailMessage]:
        evaluate(settings, rules, at)
        enqueue_and_deliver(settings, config(smtp), at, rules, recipients)
        return [m for _, m in smtp.mailbox.take()]

    wait = timedelta(minutes=10) if for_ else timedelta(0)  # pending that long first
    if for_:
        assert step(t0) == []
    first = step(t0 + wait)
    reminders = [m for minutes in (10, 25, 50)
                 for m in step(t0 + wait + timedelta(minutes=minutes))]
    assert [m["Subject"] for m in first + reminders] == [FIRING] * 3
    for message in first + reminders:
        assert since_line(t0) in body(message)
    assert [m["Subject"] for m in step(t0 + timedelta(hours=2), [backlog_rule(holds=False)])
            ] == [RESOLVED]

    # A new episode: its messages count from its own start, not the first episode's.
    t1 = t0 + timedelta(hours=3)
    again = step(t1) + (step(t1 + wait) if for_ else []) + step(t1 + wait + timedelta(minutes=25))
    assert [m["Subject"] for m in again] == [FIRING, FIRING]
    assert all(since_line(t1) in body(m) for m in again)


def test_an_acknowledgement_cancels_the_queued_notice_not_the_resolved_one(
    migrated: Settings, smtp: SmtpServer, recipients: Path,
) -> None:
    """A warning fired on Saturday night waits for Monday 07:30; acknowledged on Sunday, it
    never goes out; the resolved notice on Monday does."""
    settings = migrated
    rules = [backlog_rule(severity="warning", working_hours=True)]
    saturday_night = datetime(2026, 11, 14, 22, 0, tzinfo=VIETNAM)
    monday_open = datetime(2026, 11, 16, 7, 30, tzinfo=VIETNAM)
    assert [t.notify_after for t in evaluate(settings, rules, saturday_night)] == [monday_open]
    assert enqueue_and_deliver(settings, config(smtp), saturday_night, rules, recipients) == []
    [(alert_id,)] = query(settings, "SELECT seq FROM alerts WHERE state = 'firing'")
    sunday = saturday_night + timedelta(hours=12)
    acknowledge(settings, Ref(seq=alert_id), "cli:duty", "đã biết", sunday)

    [cancelled] = deliver(settings, config(smtp), monday_open, rules)
    assert (cancelled.state, cancelled.recipient) == ("cancelled", "truc-ioc@tinh.vn")
    assert cancelled.error == f"acknowledged by cli:duty at {sunday.astimezone(UTC).isoformat()}"
    assert smtp.mailbox.take() == []
    assert outbox_states(settings) == [("firing", "cancelled", cancelled.error)]
    assert deliver(settings, config(smtp), monday_open + timedelta(days=1), rules) == []

    resolved_at = monday_open + timedelta(minutes=30)
    evaluate(settings, [backlog_rule(holds=False)], resolved_at)
    sent = enqueue_and_deliver(settings, config(smtp), resolved_at, rules, recipients)
    assert [d.state for d in sent] == ["sent"]
    assert [m["Subject"] for _, m in smtp.mailbox.take()] == [RESOLVED]


def test_a_silence_cancels_a_notice_waiting_for_a_retry(
    migrated: Settings, smtp: SmtpServer, recipients: Path,
) -> None:
    """The SMTP server is down when the alert fires; it is silenced before the retry: the
    retry sends nothing. When the silence ends the alert fires again, and that goes out,
    saying the alert began at the first firing."""
    settings = migrated
    rules = [backlog_rule(quiet=0)]
    t0 = datetime(2026, 11, 18, 9, 0, tzinfo=VIETNAM)
    evaluate(settings, rules, t0)
    smtp.stop()
    [failed] = enqueue_and_deliver(settings, config(smtp), t0, rules, recipients)
    assert (failed.state, failed.attempts) == ("pending", 1)
    smtp.start()
    [(alert_id,)] = query(settings, "SELECT seq FROM alerts WHERE state = 'firing'")
    until = t0 + timedelta(hours=1)
    silence(settings, Ref(seq=alert_id), until, "key:truc", None, t0 + timedelta(seconds=10))

    [retry] = deliver(settings, config(smtp), t0 + timedelta(minutes=1), rules)
    assert retry.state == "cancelled"
    silenced_at = (t0 + timedelta(seconds=10)).astimezone(UTC)
    assert retry.error == (f"silenced by key:truc at {silenced_at.isoformat()}"
                           f" until {until.astimezone(UTC).isoformat()}")
    assert smtp.mailbox.take() == []

    assert [t.state for t in evaluate(settings, rules, until)] == ["firing"]
    [sent] = enqueue_and_deliver(settings, config(smtp), until, rules, recipients)
    assert sent.state == "sent"
    [(_, message)] = smtp.mailbox.take()
    assert message["Subject"] == FIRING and since_line(t0) in body(message)
    assert [(a, o) for a, o, _ in outbox_states(settings)] == [
        ("firing", "cancelled"), ("firing", "sent")]


@dataclass
class PickyMailbox(Mailbox):
    """Refuses some recipients at RCPT TO with the given reply; counts every refusal."""

    refuse: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: object, session: object, envelope: object,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.refuse.get(address)
        if reply is not None:
            self.refused.append(address)
            return reply
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"


def test_smtp_5xx_fails_the_row_at_once_4xx_is_retried(
    migrated: Settings, smtp: SmtpServer, tmp_path: Path,
) -> None:
    settings = migrated
    smtp.stop()
    mailbox = smtp.mailbox = PickyMailbox(refuse={
        "khong-ton-tai@tinh.vn": "550 5.1.1 <khong-ton-tai@tinh.vn>: mailbox unavailable",
        "day@tinh.vn": "452 4.2.2 mailbox full, try again later"})
    smtp.start()
    path = tmp_path / "r.yaml"
    path.write_text("ioc-duty-officer: [truc-ioc@tinh.vn, khong-ton-tai@tinh.vn,"
                    " day@tinh.vn]\n", encoding="utf-8")
    rules = [backlog_rule()]
    t0 = datetime(2026, 11, 18, 9, 0, tzinfo=VIETNAM)
    evaluate(settings, rules, t0)

    first = enqueue_and_deliver(settings, config(smtp), t0, rules, path)
    assert [(d.recipient, d.state, d.attempts) for d in first] == [
        ("truc-ioc@tinh.vn", "sent", 1), ("khong-ton-tai@tinh.vn", "failed", 1),
        ("day@tinh.vn", "pending", 1)]
    assert "550" in (first[1].error or "") and "mailbox unavailable" in (first[1].error or "")
    assert "452" in (first[2].error or "")
    assert [r for r, _ in mailbox.take()] == ["truc-ioc@tinh.vn"]

    del mailbox.refuse["day@tinh.vn"]  # the mailbox has room again
    later = deliver(settings, config(smtp), t0 + timedelta(seconds=30), rules)
    assert [(d.recipient, d.state, d.attempts) for d in later] == [("day@tinh.vn", "sent", 2)]
    assert deliver(settings, config(smtp), t0 + timedelta(days=1), rules) == []
    assert [r for r, _ in mailbox.take()] == ["day@tinh.vn"]
    assert mailbox.refused == ["khong-ton-tai@tinh.vn", "day@tinh.vn"]  # 550: tried once
