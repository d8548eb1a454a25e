"""Alert e-mails end to end on real PostgreSQL and a real SMTP server (aiosmtpd): scenario
data makes a rule fire, the outbox queues one row per recipient address, delivery sends each
exactly once, retries while the server is down, waits for office hours for warnings; and the
worker's timer evaluates the rules by itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ioc.alerts import Rule, evaluate
from ioc.alerts.deliver import deliver, enqueue_and_deliver
from ioc.core.db import migrate
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from tests.support import scenario
from tests.support.alerts import recipients_file
from tests.support.services import (
    WorkerProcess,
    isolated_settings,
    query,
    wait_until,
)
from tests.support.smtp import DASHBOARD, SmtpServer, body, config
from tests.support.store import load

VIETNAM = scenario.VIETNAM
RECIPIENTS = ("chairman: [chu-tich@tinh.vn, van-phong@tinh.vn]\n"
              "ioc-duty-officer: truc-ioc@tinh.vn\n")


@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.build(seed=43, dossiers=60, documents=10, reports=30, malformed=False)


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    return recipients_file(tmp_path, RECIPIENTS)


def overdue_rule(**fields: object) -> Rule:
    base: dict[str, object] = {
        "name": "phan-anh-qua-han", "metric": "field_reports.overdue", "scope": "province",
        "comparison": ">=", "threshold": 0, "window": "last 60 days", "for": 0,
        "severity": "critical", "recipients": ["chairman", "ioc-duty-officer"],
    }
    base.update(fields)
    return Rule.model_validate(base)


def outbox(settings: Settings) -> list[tuple]:
    return query(settings, "SELECT recipient, state, attempts, next_attempt_at FROM alert_outbox"
                           " ORDER BY id")


ADDRESSES = {"chu-tich@tinh.vn", "van-phong@tinh.vn", "truc-ioc@tinh.vn"}


def test_firing_then_resolved_mail_each_recipient_once(
    settings: Settings, sc: scenario.Scenario, smtp: SmtpServer, recipients: Path,
) -> None:
    migrate(settings)
    load(settings, sc)
    overdue = sc.expected_report_kpis()["overdue"]
    assert overdue > 0, "the scenario needs overdue reports"
    rules = [overdue_rule(threshold=overdue)]
    now = datetime.now(UTC).replace(microsecond=0)
    assert [t.state for t in evaluate(settings, rules, now)] == ["firing"]

    sent = enqueue_and_deliver(settings, config(smtp), now, rules, recipients)
    assert sorted(d.recipient for d in sent) == sorted(ADDRESSES)
    mails = smtp.mailbox.take()
    assert sorted(r for r, _ in mails) == sorted(ADDRESSES)
    for rcpt, message in mails:
        assert message["To"] == rcpt
        assert message["Subject"] == "[IOC][Nghiêm trọng] phan-anh-qua-han – Toàn tỉnh"
        text = body(message)
        assert "Cảnh báo: phan-anh-qua-han" in text
        assert "Chỉ số: Phản ánh quá hạn (field_reports.overdue)" in text
        assert "Phạm vi: Toàn tỉnh" in text
        assert f"Giá trị hiện tại: {overdue} – bằng hoặc vượt ngưỡng {overdue}" in text
        assert "Mức độ: Nghiêm trọng" in text
        local = now.astimezone(VIETNAM)
        assert f"Bắt đầu từ: {local:%H:%M ngày %d/%m/%Y}" in text
        assert DASHBOARD in text

    # Exactly once: delivering (and queuing) again, now or later, sends nothing.
    assert enqueue_and_deliver(settings, config(smtp), now, rules, recipients) == []
    later = now + timedelta(minutes=5)
    assert evaluate(settings, rules, later) == []
    assert enqueue_and_deliver(settings, config(smtp), later, rules, recipients) == []
    assert smtp.mailbox.take() == []
    assert {state for _, state, _, _ in outbox(settings)} == {"sent"}

    # The condition stops holding: one "resolved" mail per address.
    raised = [overdue_rule(threshold=overdue + 1)]
    resolved_at = now + timedelta(minutes=6)
    assert [t.state for t in evaluate(settings, raised, resolved_at)] == ["resolved"]
    assert len(enqueue_and_deliver(settings, config(smtp), resolved_at, raised,
                                   recipients)) == 3
    mails = smtp.mailbox.take()
    assert sorted(r for r, _ in mails) == sorted(ADDRESSES)
    for _, message in mails:
        assert message["Subject"] == "[IOC][Đã hết cảnh báo] phan-anh-qua-han – Toàn tỉnh"
        assert f"(ngưỡng: >= {overdue + 1})" in body(message)
        assert DASHBOARD in body(message)
    assert enqueue_and_deliver(settings, config(smtp), resolved_at, raised, recipients) == []
    assert smtp.mailbox.take() == []
    assert len(outbox(settings)) == 6


def test_smtp_down_keeps_the_row_pending_then_sends_once(
    settings: Settings, sc: scenario.Scenario, smtp: SmtpServer, tmp_path: Path,
) -> None:
    migrate(settings)
    load(settings, sc)
    recipients = tmp_path / "one.yaml"
    recipients.write_text("ioc-duty-officer: [truc-ioc@tinh.vn]\n", encoding="utf-8")
    rules = [overdue_rule(recipients=["ioc-duty-officer"])]
    now = datetime.now(UTC).replace(microsecond=0)
    evaluate(settings, rules, now)

    smtp.stop()
    result = enqueue_and_deliver(settings, config(smtp), now, rules, recipients)
    assert [(d.state, d.attempts) for d in result] == [("pending", 1)]
    [(recipient, state, attempts, next_attempt_at)] = outbox(settings)
    assert (recipient, state, attempts) == ("truc-ioc@tinh.vn", "pending", 1)
    assert next_attempt_at > now
    assert deliver(settings, config(smtp), now, rules) == []  # not due yet

    second = deliver(settings, config(smtp), next_attempt_at, rules)  # still down
    assert [(d.state, d.attempts) for d in second] == [("pending", 2)]
    [(_, _, _, third_at)] = outbox(settings)
    assert third_at - next_attempt_at > next_attempt_at - now  # backing off

    smtp.start()
    assert [d.state for d in deliver(settings, config(smtp), third_at, rules)] == ["sent"]
    assert deliver(settings, config(smtp), third_at + timedelta(hours=1), rules) == []
    mails = smtp.mailbox.take()
    assert [r for r, _ in mails] == ["truc-ioc@tinh.vn"]
    assert outbox(settings)[0][1:3] == ("sent", 3)


def test_a_warning_outside_office_hours_waits_a_critical_does_not(
    settings: Settings, sc: scenario.Scenario, smtp: SmtpServer, recipients: Path,
) -> None:
    migrate(settings)
    load(settings, sc)
    rules = [overdue_rule(name="canh-bao", severity="warning", working_hours=True,
                          recipients=["ioc-duty-officer"]),
             overdue_rule(name="nghiem-trong", severity="critical", working_hours=True,
                          recipients=["chairman"])]
    today = datetime.now(VIETNAM).date()
    saturday = today + timedelta(days=(5 - today.weekday()) % 7 or 7)
    night = datetime(saturday.year, saturday.month, saturday.day, 22, 0, tzinfo=VIETNAM)
    monday = datetime.combine(saturday + timedelta(days=2), datetime.min.time(), VIETNAM)
    opening = monday.replace(hour=7, minute=30)
    assert {t.rule for t in evaluate(settings, rules, night)} == {"canh-bao", "nghiem-trong"}

    sent = enqueue_and_deliver(settings, config(smtp), night, rules, recipients)
    assert sorted(d.recipient for d in sent) == ["chu-tich@tinh.vn", "van-phong@tinh.vn"]
    assert deliver(settings, config(smtp), opening - timedelta(minutes=1), rules) == []
    assert sorted(r for r, _ in smtp.mailbox.take()) == ["chu-tich@tinh.vn", "van-phong@tinh.vn"]
    at_opening = deliver(settings, config(smtp), opening, rules)
    assert [d.recipient for d in at_opening] == ["truc-ioc@tinh.vn"]
    [(rcpt, message)] = smtp.mailbox.take()
    assert rcpt == "truc-ioc@tinh.vn"
    assert message["Subject"] == "[IOC][Cảnh báo] canh-bao – Toàn tỉnh"
    assert "Bắt đầu từ: 22:00 ngày" in body(message)


def test_the_worker_timer_evaluates_and_mails(
    broker: object, postgres: object, sc: scenario.Scenario, smtp: SmtpServer,
    recipients: Path, tmp_path: Path,
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "name: phan-anh-qua-han\nmetric: field_reports.overdue\nscope: province\n"
        "comparison: '>='\nthreshold: 0\nwindow: last 60 days\nfor: 0\nseverity: critical\n"
        "recipients: [ioc-duty-officer]\n", encoding="utf-8")
    settings = isolated_settings(  # type: ignore[arg-type]
        broker, postgres, alert_rules=rules_file, alert_evaluate_seconds=1,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_from="ioc@tinh.vn",
        dashboard_url=DASHBOARD, alert_recipients=recipients)
    migrate(settings)
    asyncio.run(ensure_topics(settings))
    load(settings, sc)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: query(settings, "SELECT count(*) FROM alerts")[0][0] > 0, 60,
                   "the worker's timer to write a transition", worker.log)
        wait_until(lambda: bool(smtp.mailbox.messages), 30, "the alert e-mail", worker.log)
        assert query(settings, "SELECT rule, scope, state FROM alerts") == [
            ("phan-anh-qua-han", "province", "firing")]
    finally:
        worker.stop()
    assert [r for r, _ in smtp.mailbox.take()] == ["truc-ioc@tinh.vn"]
