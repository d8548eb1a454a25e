"""Alert delivery on every channel at once, on real PostgreSQL: e-mail through a real SMTP
server (aiosmtpd), and the Telegram Bot API, the Zalo OA API and a webhook receiver as real
local HTTP servers. Telegram and Zalo cannot run here, so their servers are fakes that speak
their wire formats (Bot API `POST /bot<token>/sendMessage` answering `{"ok": ...}`, 429 with
`parameters.retry_after`; Zalo `POST /v3.0/oa/message/cs` with header `access_token`
answering `{"error": 0 | code, ...}`); the webhook receiver checks the HMAC signature with the
standard library on its own, as a real receiver would (all three: tests/support/receivers.py).

Transitions are written into `alerts` directly (evaluation is test_alerts' and
test_alert_delivery's business): each test knows exactly which messages must arrive.
"""

from __future__ import annotations

import email
import html
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from aiosmtpd.controller import Controller

from ioc.alerts import Rule, telegram, webhook, zalo
from ioc.alerts.deliver import configured, deliver, enqueue_and_deliver
from ioc.alerts.email import SmtpConfig
from ioc.alerts.message import Text
from ioc.alerts.recipients import Address, RecipientsError, load, resolver
from ioc.core.db import migrate
from ioc.core.settings import Settings
from tests.support.alerts import DEFAULTS, recipients_file
from tests.support.receivers import (
    BOT_TOKEN,
    SECRET,
    ZALO_TOKEN,
    Receiver,
    Request,
    Telegram,
    Zalo,
    received,
    signature_valid,
)
from tests.support.services import free_port, query

VIETNAM = "Asia/Ho_Chi_Minh"
RULES = [Rule.model_validate({
    "name": "phan-anh-qua-han", "metric": "field_reports.overdue", "scope": "province",
    "comparison": ">=", "threshold": 5, "window": "last 60 days", "for": "15m",
    "severity": "critical", "recipients": ["chairman", "ioc-duty-officer"]})]
DASHBOARD = "https://ioc.phutho.gov.vn/d/canh-bao?orgId=1&var-scope=province"
CHATS = {-1001234567, "@truc_ioc"}
ZALO_USER = "8437261905123"
MAILS = {"chu-tich@tinh.vn", "truc-ioc@tinh.vn"}


@dataclass
class Mailbox:
    messages: list[tuple[str, EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)  # type: ignore[attr-defined]
        for rcpt in envelope.rcpt_tos:  # type: ignore[attr-defined]
            self.messages.append((rcpt, message))  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class Services:
    telegram: Telegram
    zalo: Zalo
    hook: Receiver
    mailbox: Mailbox
    smtp_port: int


@pytest.fixture
def services() -> Iterator[Services]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    running = Services(Telegram("telegram").start(), Zalo("zalo").start(),
                       Receiver("webhook").start(), mailbox, port)
    yield running
    for service in (running.telegram, running.zalo, running.hook):
        if service.hold is not None:
            service.hold.set()
        service.stop()
    controller.stop()


@pytest.fixture
def channel_settings(settings: Settings, services: Services) -> Settings:
    migrate(settings)
    return settings.model_copy(update={
        "telegram_bot_token": BOT_TOKEN, "telegram_api_url": services.telegram.url,
        "zalo_access_token": ZALO_TOKEN,
        "zalo_api_url": f"{services.zalo.url}/v3.0/oa/message/cs",
        "alert_webhook_secret": SECRET, "dashboard_url": DASHBOARD,
        "public_api_url": "https://ioc.phutho.gov.vn/api", "alert_link_secret": "link-secret",
        "timezone": VIETNAM})


@pytest.fixture
def recipients(tmp_path: Path, services: Services) -> Path:
    return recipients_file(
        tmp_path,
        "webhooks:\n"
        f"  dieu-hanh: {services.hook.url}/hooks/ioc\n"
        f'chairman: [chu-tich@tinh.vn, "telegram:-1001234567", "zalo:{ZALO_USER}",'
        ' "webhook:dieu-hanh"]\n'
        "ioc-duty-officer:\n"
        "  - truc-ioc@tinh.vn\n"
        "  - telegram:@truc_ioc\n")


def smtp(services: Services) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=services.smtp_port, sender="ioc@tinh.vn",
                      dashboard_url=DASHBOARD, timeout=5)


def transition(settings: Settings, at: datetime, state: str, value: int | None,
               threshold: int = 5) -> int:
    [(seq,)] = query(
        settings,
        "INSERT INTO alerts (at, rule, scope, state, value, threshold, comparison, severity,"
        " recipients, notify_after) VALUES (%s, 'phan-anh-qua-han', 'province', %s, %s, %s,"
        " '>=', 'critical', %s, %s) RETURNING seq",
        (at, state, value, threshold, ["chairman", "ioc-duty-officer"],
         at if state == "firing" else None))
    return seq


def outbox(settings: Settings) -> dict[tuple[str, str], tuple[str, int, datetime, str | None]]:
    rows = query(settings, "SELECT channel, recipient, state, attempts, next_attempt_at,"
                           " last_error FROM alert_outbox ORDER BY id")
    return {(c, r): (s, a, n, e) for c, r, s, a, n, e in rows}


def chat(request: Request) -> int | str:
    return request.json()["chat_id"]


def test_each_recipient_gets_one_message_per_transition_on_each_channel(
    channel_settings: Settings, services: Services, recipients: Path,
) -> None:
    settings = channel_settings
    now = datetime.now(UTC).replace(microsecond=0)
    pending_at = now - timedelta(minutes=20)
    transition(settings, pending_at, "pending", 7)
    seq = transition(settings, now, "firing", 7)

    sent = enqueue_and_deliver(settings, smtp(services), now, RULES, recipients)
    assert Counter((d.channel, d.state) for d in sent) == {
        ("email", "sent"): 2, ("telegram", "sent"): 2, ("zalo", "sent"): 1,
        ("webhook", "sent"): 1}
    since = f"{pending_at.astimezone(ZoneInfo(VIETNAM)):%H:%M ngày %d/%m/%Y}"
    what = "Chỉ số: Phản ánh quá hạn (field_reports.overdue)"
    how_bad = "Giá trị hiện tại: 7 – bằng hoặc vượt ngưỡng 5"
    ack = f"https://ioc.phutho.gov.vn/api/alerts/{seq}/ack?exp="

    # Telegram: one message per chat, HTML-escaped: what, where, how bad, since when, links.
    assert received(services.telegram) == {"-1001234567": 1, "@truc_ioc": 1}
    assert {chat(r) for r in services.telegram.accepted} == CHATS  # numbers stay numbers
    for request in services.telegram.accepted:
        body = request.json()
        assert body["parse_mode"] == "HTML"
        text = body["text"]
        assert text.startswith("<b>[IOC][Nghiêm trọng] phan-anh-qua-han – Toàn tỉnh</b>\n")
        for line in (what, "Phạm vi: Toàn tỉnh", how_bad, "Mức độ: Nghiêm trọng",
                     f"Bắt đầu từ: {since}", ack):
            assert line in text
        assert DASHBOARD.replace("&", "&amp;") in text and DASHBOARD not in text
    # Zalo: the same words, plain text, to the OA user, with the access token header.
    [zalo_request] = services.zalo.accepted
    assert zalo_request.headers["access_token"] == ZALO_TOKEN
    body = zalo_request.json()
    assert body["recipient"] == {"user_id": ZALO_USER}
    text = body["message"]["text"]
    assert text.startswith("[IOC][Nghiêm trọng] phan-anh-qua-han – Toàn tỉnh\n")
    for line in (what, how_bad, f"Bắt đầu từ: {since}", DASHBOARD, ack):
        assert line in text
    # Webhook: the signed JSON of the transition; a changed body or an old timestamp fails.
    [hook] = services.hook.accepted
    assert hook.path == "/hooks/ioc" and signature_valid(hook)
    event = hook.json()
    assert {k: event[k] for k in ("alert_id", "rule", "metric", "scope", "state", "severity",
                                  "value", "threshold", "comparison")} == {
        "alert_id": seq, "rule": "phan-anh-qua-han", "metric": "field_reports.overdue",
        "scope": "province", "state": "firing", "severity": "critical", "value": "7",
        "threshold": "5", "comparison": ">="}
    assert datetime.fromisoformat(event["since"]) == pending_at
    assert datetime.fromisoformat(event["at"]) == now
    assert event["delivery_id"] == hook.headers["x-ioc-delivery"]
    assert how_bad in event["text"] and event["ack_url"].startswith(ack)
    tampered = Request(hook.path, hook.headers, hook.body.replace(b'"value":"7"', b'"value":"1"'))
    assert tampered.body != hook.body and not signature_valid(tampered)
    stamp, sig = hook.headers["x-ioc-timestamp"], hook.headers["x-ioc-signature"]
    assert webhook.verify(SECRET, stamp, hook.body, sig)
    assert not webhook.verify(SECRET, stamp, tampered.body, sig)
    assert not webhook.verify("another-secret", stamp, hook.body, sig)
    assert not webhook.verify(SECRET, stamp, hook.body, sig, now=int(stamp) + 3600)  # replay
    # E-mail: as before, now with the acknowledge link too.
    assert sorted(r for r, _ in services.mailbox.messages) == sorted(MAILS)
    assert ack in services.mailbox.messages[0][1].get_body(("plain",)).get_content()

    # A restart (a new round now, and one later) sends nothing again.
    assert enqueue_and_deliver(settings, smtp(services), now, RULES, recipients) == []
    assert deliver(settings, smtp(services), now + timedelta(hours=2), RULES) == []

    # Resolved: one more message each, then never a repeat.
    resolved_at = now + timedelta(minutes=10)
    transition(settings, resolved_at, "resolved", 3)
    assert len(enqueue_and_deliver(settings, smtp(services), resolved_at, RULES,
                                   recipients)) == 6
    assert enqueue_and_deliver(settings, smtp(services), resolved_at, RULES, recipients) == []
    assert received(services.telegram) == {"-1001234567": 2, "@truc_ioc": 2}
    assert len(services.telegram.requests) == 4
    assert received(services.zalo) == {ZALO_USER: 2} and len(services.zalo.requests) == 2
    assert [r.json()["state"] for r in services.hook.requests] == ["firing", "resolved"]
    assert len(received(services.hook)) == 2  # two deliveries, one each
    resolved_text = services.zalo.requests[1].json()["message"]["text"]
    assert resolved_text.startswith("[IOC][Đã hết cảnh báo] phan-anh-qua-han – Toàn tỉnh")
    assert "/ack?" not in resolved_text  # nothing left to acknowledge
    assert Counter(r for r, _ in services.mailbox.messages) == {m: 2 for m in MAILS}
    rows = outbox(settings)
    assert len(query(settings, "SELECT 1 FROM alert_outbox")) == 12
    assert {state for state, *_ in rows.values()} == {"sent"}


def test_a_failing_channel_does_not_hold_up_the_others_and_retries_back_off(
    channel_settings: Settings, services: Services, recipients: Path,
) -> None:
    settings = channel_settings
    now = datetime.now(UTC).replace(microsecond=0)
    transition(settings, now, "firing", 9)
    flood = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
             "parameters": {"retry_after": 7}}
    services.telegram.failures.append((429, flood, {}))
    services.zalo.failures.extend([(500, {"error": -1, "message": "Internal"}, {})] * 50)
    services.hook.failures.append((503, {"error": "busy"}, {}))

    first = enqueue_and_deliver(settings, smtp(services), now, RULES, recipients)
    # E-mail is not held up; Telegram's first chat is told to wait 7 s, so its other chat
    # waits for the next round; Zalo and the webhook are retried after the backoff (30 s).
    assert Counter((d.channel, d.state) for d in first) == {
        ("email", "sent"): 2, ("telegram", "pending"): 1, ("zalo", "pending"): 1,
        ("webhook", "pending"): 1}
    assert len(services.mailbox.messages) == 2
    rows = outbox(settings)
    [flooded] = [r for (c, r), (_, a, _, _) in rows.items() if c == "telegram" and a == 1]
    assert rows[("telegram", flooded)][2] == now + timedelta(seconds=7)  # retry_after honoured
    assert "429" in rows[("telegram", flooded)][3]
    assert rows[("zalo", ZALO_USER)][:3] == ("pending", 1, now + timedelta(seconds=30))
    assert "HTTP 500" in rows[("zalo", ZALO_USER)][3]

    # 6 s later: the other chat goes; the flooded one is not due yet.
    second = deliver(settings, smtp(services), now + timedelta(seconds=6), RULES)
    assert [(d.channel, d.state) for d in second] == [("telegram", "sent")]
    assert received(services.telegram) == {c: 1 for c in {"-1001234567", "@truc_ioc"}
                                           if c != flooded}
    # At 7 s it goes too.
    third = deliver(settings, smtp(services), now + timedelta(seconds=7), RULES)
    assert [(d.channel, d.recipient, d.state) for d in third] == [("telegram", flooded, "sent")]
    # At 30 s the webhook is retried and accepted; Zalo fails again, backing off further.
    fourth = deliver(settings, smtp(services), now + timedelta(seconds=30), RULES)
    assert sorted((d.channel, d.state, d.attempts) for d in fourth) == [
        ("webhook", "sent", 2), ("zalo", "pending", 2)]
    rows = outbox(settings)
    assert rows[("zalo", ZALO_USER)][2] == now + timedelta(seconds=30 + 60)
    assert deliver(settings, smtp(services), now + timedelta(seconds=89), RULES) == []

    assert received(services.telegram) == {"-1001234567": 1, "@truc_ioc": 1}
    assert len(services.hook.requests) == 2 and len(received(services.hook)) == 1
    assert services.zalo.accepted == [] and len(services.zalo.requests) == 2
    assert len(services.mailbox.messages) == 2


def test_a_permanent_error_fails_the_row_at_once_with_the_reason(
    channel_settings: Settings, services: Services, tmp_path: Path,
) -> None:
    settings = channel_settings
    path = tmp_path / "r.yaml"
    path.write_text(f"chairman: [telegram:-100999, zalo:{ZALO_USER}, "
                    f"webhook:{services.hook.url}/gone]\nioc-duty-officer: telegram:-100888\n",
                    encoding="utf-8")
    now = datetime.now(UTC).replace(microsecond=0)
    transition(settings, now, "firing", 9)
    services.telegram.failures.append(
        (403, {"ok": False, "error_code": 403,
               "description": "Forbidden: bot was kicked from the supergroup chat"}, {}))
    services.zalo.failures.append((200, {"error": -213, "message": "User has not followed OA"},
                                   {}))
    services.hook.failures.append((404, {"error": "no such hook"}, {}))

    result = enqueue_and_deliver(settings, None, now, RULES, path)
    assert Counter((d.channel, d.state) for d in result) == {
        ("telegram", "failed"): 1, ("telegram", "sent"): 1, ("zalo", "failed"): 1,
        ("webhook", "failed"): 1}
    rows = outbox(settings)
    failed = {key: error for key, (state, _, _, error) in rows.items() if state == "failed"}
    assert len(failed) == 3
    assert any("403" in e and "kicked" in e for (c, _), e in failed.items() if c == "telegram")
    assert failed[("zalo", ZALO_USER)].startswith("Zalo -213")
    assert "HTTP 404" in failed[("webhook", f"{services.hook.url}/gone")]
    assert all(BOT_TOKEN not in e and ZALO_TOKEN not in e for e in failed.values())
    # Failed rows are not tried again.
    assert deliver(settings, None, now + timedelta(days=1), RULES) == []
    assert len(services.telegram.requests) == 2 and len(services.zalo.requests) == 1


def test_a_crash_between_sending_and_marking_sends_again_with_the_same_delivery_id(
    channel_settings: Settings, services: Services, tmp_path: Path,
) -> None:
    """The deliverer dies (its database session is killed) after the receiver got the POST
    but before the row was marked: the row is still pending, the next round sends it again
    with the same X-IOC-Delivery, so the receiver can drop the repeat; nothing is lost."""
    settings = channel_settings
    path = tmp_path / "r.yaml"
    path.write_text(f"chairman: webhook:{services.hook.url}/hooks/ioc\n", encoding="utf-8")
    now = datetime.now(UTC).replace(microsecond=0)
    transition(settings, now, "firing", 9)
    services.hook.hold = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            enqueue_and_deliver(settings, None, now, RULES, path)
        except BaseException as exc:
            crashed.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert services.hook.received.wait(10), "the webhook was not called"
    table = f"{settings.database_schema}.alert_outbox"
    [(killed,)] = query(settings, "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                                  " WHERE relation = %s::regclass AND pid <> pg_backend_pid()",
                        (table,))
    assert killed == 1
    services.hook.hold.set()
    worker.join(15)
    assert not worker.is_alive()
    assert crashed and isinstance(crashed[0], psycopg.OperationalError)
    assert [(s, a) for s, a, _, _ in outbox(settings).values()] == [("pending", 0)]

    services.hook.hold = None
    again = deliver(settings, None, now, RULES)
    assert [(d.channel, d.state) for d in again] == [("webhook", "sent")]
    first, second = services.hook.requests
    assert first.headers["x-ioc-delivery"] == second.headers["x-ioc-delivery"]
    assert first.body == second.body and signature_valid(second)
    assert len(received(services.hook)) == 1  # one message, once repeats are dropped
    assert deliver(settings, None, now + timedelta(hours=1), RULES) == []
    assert len(services.hook.requests) == 2


def test_recipients_file_old_and_new_forms_and_clear_errors(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("chairman: [chu-tich@tinh.vn, van-phong@tinh.vn]\n"
                   "ioc-duty-officer: truc-ioc@tinh.vn\n", encoding="utf-8")
    resolve = resolver(load(old))
    assert resolve("chairman") == [Address("email", "chu-tich@tinh.vn"),
                                   Address("email", "van-phong@tinh.vn")]
    assert resolve("ioc-duty-officer:000.00.12.H25") == [Address("email", "truc-ioc@tinh.vn")]
    assert resolve("ai-do@tinh.vn") == [Address("email", "ai-do@tinh.vn")]
    assert resolve("telegram:-42") == [Address("telegram", "-42")]
    assert resolve("unknown-role") == []

    new = tmp_path / "new.yaml"
    new.write_text("webhooks:\n  ops: https://ops.tinh.vn/hook?k=1\n"
                   "chairman:\n  - email:chu-tich@tinh.vn\n  - telegram:@kenh_ioc\n"
                   "  - zalo:123456\n  - webhook:ops\n  - webhook:http://10.0.0.5:8080/h\n",
                   encoding="utf-8")
    assert load(new)["chairman"] == [
        Address("email", "chu-tich@tinh.vn"), Address("telegram", "@kenh_ioc"),
        Address("zalo", "123456"), Address("webhook", "https://ops.tinh.vn/hook?k=1"),
        Address("webhook", "http://10.0.0.5:8080/h")]

    bad = tmp_path / "bad.yaml"
    bad.write_text("webhooks:\n  ops: ftp://x\n"
                   "chairman: [telegram:abc, zalo:x1, webhook:nope, chu-tich]\n"
                   "telegram: [a@b.vn]\nagency-head: []\n", encoding="utf-8")
    with pytest.raises(RecipientsError) as caught:
        load(bad)
    errors = caught.value.errors
    assert errors[0] == "webhooks: ops: 'ftp://x' is not an http(s) URL"
    assert errors[1].startswith("chairman[0]: 'telegram:abc': telegram: needs a numeric chat id")
    assert errors[2].startswith("chairman[1]: 'zalo:x1': zalo: needs a numeric user id")
    assert errors[3].startswith("chairman[2]: 'webhook:nope': not an http(s) URL nor a webhook")
    assert errors[4].startswith("chairman[3]: 'chu-tich' is not an address: use an e-mail")
    assert errors[5] == "telegram: a channel's name cannot be a recipient's"
    assert errors[6].startswith("agency-head: one address or a list of them")
    assert len(errors) == 7 and str(bad) in str(caught.value)

    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text("chairman: [webhook:https://h.vn/x?a=1, a@b.vn]\n", encoding="utf-8")
    with pytest.raises(RecipientsError,
                       match=r"not valid YAML at line 1, column 34: .*; quote addresses"):
        load(unquoted)


def test_the_shipped_recipients_file_loads() -> None:
    table = load(DEFAULTS / "recipients.yaml")
    assert table["chairman"] and all(a.channel in ("email", "telegram", "zalo", "webhook")
                                     for addresses in table.values() for a in addresses)


def test_long_messages_fit_telegram_and_zalo_and_only_set_channels_count(
    settings: Settings,
) -> None:
    body = ("Phạm vi: <Xã/phường> & " * 400).strip()  # 9 200 characters, HTML-special ones
    text = Text("[IOC][Nghiêm trọng] a & b", (body,))
    tg = telegram.html_text(text)
    shown = html.unescape(re.sub(r"</?b>", "", tg))  # what Telegram counts after parsing
    assert len(shown.encode("utf-16-le")) // 2 <= 4096 and shown.endswith("…")
    assert shown.startswith("[IOC][Nghiêm trọng] a & b\n\nPhạm vi: <Xã/phường> & ")
    assert "<Xã" not in tg and "&lt;Xã/phường&gt; &amp; " in tg
    assert tg.startswith("<b>[IOC][Nghiêm trọng] a &amp; b</b>\n\n")
    short = Text("s", ("ngắn",))
    assert telegram.html_text(short) == "<b>s</b>\n\nngắn"
    zalo_text = zalo.plain_text(text)
    assert len(zalo_text) <= 2000 and zalo_text.endswith("…")
    assert zalo.plain_text(short) == "s\n\nngắn"

    assert configured(settings, None) == set()
    only_telegram = settings.model_copy(update={"telegram_bot_token": BOT_TOKEN})
    assert configured(only_telegram, SmtpConfig.from_settings(only_telegram)) == {"telegram"}
    every = only_telegram.model_copy(update={"zalo_access_token": "z", "smtp_host": "mail",
                                             "alert_webhook_secret": "s"})
    assert configured(every, SmtpConfig.from_settings(every)) == {
        "email", "telegram", "zalo", "webhook"}
