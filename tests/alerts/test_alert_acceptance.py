"""Alerts end to end, issue 6's acceptance: the seeded province simulator publishes into the
real broker, a real `ioc worker` process stores the events and its alert timer evaluates a
rule written here, and delivers to a real SMTP server (aiosmtpd) and to local HTTP servers
speaking the Telegram Bot API, the Zalo OA API and the signed webhook (tests/support/receivers.py:
Telegram and Zalo cannot run here). The acknowledgement goes through the real API (uvicorn).

The data is a closed cohort (Simulator `arrivals_until`): one Monday of the province seven to
eight weeks ago, its dossiers lived to their end, so every dossier is decided and the on-time
rates do not move with the clock. The simulator's planted bad agencies (`bad_agencies`) are
late on 10-15 % of their dossiers, the others on at most 0.2 %; the run is aligned on a local
Monday, so the same seed gives the same dossiers whatever day the test runs. Ground truth: the
simulator's own list, and the on-time rate recomputed here from the published messages
(docs/domain.md's definition), never read from the database's KPI functions.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.simulator import TOPICS, VIETNAM, Message, Simulator
from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.core.db import migrate
from ioc.core.events import parse_event
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from ioc.embedded.broker import Broker
from ioc.embedded.servers import Postgres
from tests.support.receivers import BOT_TOKEN, SECRET, ZALO_TOKEN, Receiver, Telegram, Zalo
from tests.support.services import (
    ServedApps,
    WorkerProcess,
    isolated_settings,
    publish,
    query,
    wait_until,
)
from tests.support.smtp import SmtpServer

SEED, RATE = 11, 0.3  # ~9,500 messages; three planted bad agencies
THRESHOLD = Decimal(95)
QUIET = 4  # seconds between reminders
RULE = "ho-so-dung-han-theo-co-quan"
ZALO_USER = "8437261905123"
HEAD_MAIL, DUTY_MAIL = "lanh-dao@tinh.vn", "truc-ioc@tinh.vn"
HEAD_CHAT, DUTY_CHAT = "-1001234567", "@truc_ioc"
ACK_ID = re.compile(r"/alerts/(\d+)/ack\?")
DONE = (3, 7, 8)  # refused, withdrawn, cancelled: not to handle


def cohort() -> tuple[Simulator, list[Message]]:
    """One Monday's arrivals, seven to eight weeks back, lived on for six weeks."""
    local = datetime.now(VIETNAM)
    monday = (local - timedelta(days=local.weekday() + 49)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    simulator = Simulator(seed=SEED, rate=RATE, start=monday,
                          arrivals_until=monday + timedelta(days=1))
    return simulator, simulator.advance(monday + timedelta(days=42))


def dossiers(messages: list[Message]) -> dict[str, tuple[dict[str, Any], Message]]:
    """Each dossier's newest valid event (what the state table ends with) and its message."""
    newest: dict[str, tuple[dict[str, Any], Message]] = {}
    for message in messages:
        topic, _, value = message
        if topic != "dossiers":
            continue
        try:
            parse_event(value, TOPICS[topic])
        except ValueError:
            continue  # malformed on purpose: dead-lettered
        event = json.loads(value)
        code = event["payload"]["dossier_code"]
        old = newest.get(code)
        if old is None or event["occurred_at"] >= old[0]["occurred_at"]:
            newest[code] = (event, message)
    return newest


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def late(payload: dict[str, Any]) -> bool:
    return (payload["status"] in (9, 10)
            and moment(payload["finished_at"]) > moment(payload["due_at"]))


def on_time_rates(events: list[dict[str, Any]]) -> dict[str, tuple[Decimal, int, int]]:
    """agency -> (on-time rate in %, rounded like the KPI, dossiers to handle, late ones)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        payload = event["payload"]
        if payload["status"] in DONE:
            continue
        counts[event["agency"]["code"]][0] += 1
        counts[event["agency"]["code"]][1] += late(payload)
    return {agency: ((Decimal(100) * (n - k) / n).quantize(Decimal("0.01"), ROUND_HALF_UP),
                     n, k) for agency, (n, k) in counts.items()}


def catch_up(newest: dict[str, tuple[dict[str, Any], Message]], agency: str, count: int,
             ) -> list[Message]:
    """`count` more dossiers of `agency` finished on time: copies (new code, new event id) of
    the last event of one of its own on-time dossiers."""
    [(template, _)] = [v for v in newest.values() if v[0]["agency"]["code"] == agency
                       and v[0]["payload"]["status"] == 10 and not late(v[0]["payload"])][:1]
    out = []
    for i in range(count):
        event = json.loads(json.dumps(template))
        code = f"{template['payload']['dossier_code']}-BS{i:03d}"
        event["event_id"] = str(uuid.uuid4())
        event["payload"]["dossier_code"] = code
        out.append(("dossiers", code.encode(), json.dumps(event, ensure_ascii=False).encode()))
    return out


class Channels:
    """The four receivers, and who got which message: (channel, recipient, scope, state, id)
    with id the transition's alerts.seq (webhook: alert_id; the others: the acknowledge link,
    firing only)."""

    def __init__(self) -> None:
        self.telegram, self.zalo = Telegram("telegram").start(), Zalo("zalo").start()
        self.hook = Receiver("webhook").start()

    def stop(self) -> None:
        for service in (self.telegram, self.zalo, self.hook):
            service.stop()

    @property
    def hook_url(self) -> str:
        return f"{self.hook.url}/hooks/ioc"


def told(subject: str, text: str) -> tuple[str, str, int | None]:
    """(scope, state, transition id) of a message's words."""
    scope = "agency:" + subject.rsplit("Cơ quan/đơn vị ", 1)[1].split()[0].strip()
    state = "resolved" if "[Đã hết cảnh báo]" in subject else "firing"
    link = ACK_ID.search(text)
    return scope, state, int(link.group(1)) if link else None


def deliveries(channels: Channels, smtp_server: SmtpServer) -> Counter[tuple]:
    got: Counter[tuple] = Counter()
    for request in list(channels.telegram.accepted):
        body = request.json()
        subject, _, text = body["text"].partition("\n")
        got[("telegram", str(body["chat_id"]),
             *told(re.sub(r"</?b>", "", subject), text))] += 1
    for request in list(channels.zalo.accepted):
        body = request.json()
        subject, _, text = body["message"]["text"].partition("\n")
        got[("zalo", body["recipient"]["user_id"], *told(subject, text))] += 1
    for request in list(channels.hook.accepted):
        event = request.json()
        got[("webhook", channels.hook_url, event["scope"], event["state"],
             event["alert_id"] if event["state"] == "firing" else None)] += 1
    with smtp_server.mailbox.lock:
        mails = list(smtp_server.mailbox.messages)
    for rcpt, message in mails:
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        got[("email", rcpt, *told(str(message["Subject"]), text))] += 1
    return got


def addresses(channels: Channels) -> set[tuple[str, str]]:
    return {("email", HEAD_MAIL), ("email", DUTY_MAIL), ("telegram", HEAD_CHAT),
            ("telegram", DUTY_CHAT), ("zalo", ZALO_USER), ("webhook", channels.hook_url)}


@pytest.fixture
def channels() -> Iterator[Channels]:
    running = Channels()
    yield running
    running.stop()


def transitions(settings: Settings) -> list[tuple[int, str, str, Decimal | None, datetime]]:
    return query(settings, "SELECT seq, scope, state, value, at FROM alerts WHERE rule = %s"
                           " ORDER BY at, seq", (RULE,))


def test_planted_agencies_fire_are_told_once_per_channel_ack_stops_reminders_recovery_resolves(
    broker: Broker, postgres: Postgres, smtp: SmtpServer, channels: Channels,
    serve_app: ServedApps, tmp_path: Path,
) -> None:
    simulator, messages = cohort()
    bad = set(simulator.bad_agencies)
    newest = dossiers(messages)
    events = [event for event, _ in newest.values()]
    assert all(e["payload"]["status"] in (10, *DONE) for e in events)  # every one decided
    rates = on_time_rates(events)
    breaching = {agency for agency, (rate, _, _) in rates.items() if rate < THRESHOLD}
    assert breaching == bad and len(bad) == 3  # the seed plants three, clearly apart
    scopes = {f"agency:{code}" for code in bad}

    rules_dir = tmp_path / "rules"  # written once the events are stored
    recipients = tmp_path / "recipients.yaml"
    recipients.write_text(
        f"webhooks:\n  dieu-hanh: {channels.hook_url}\n"
        f'agency-head: [{HEAD_MAIL}, "telegram:{HEAD_CHAT}", "zalo:{ZALO_USER}"]\n'
        f'ioc-duty-officer: [{DUTY_MAIL}, "telegram:{DUTY_CHAT}", "webhook:dieu-hanh"]\n',
        encoding="utf-8")
    settings = isolated_settings(
        broker, postgres, alert_rules=rules_dir, alert_evaluate_seconds=1,
        alert_recipients=recipients, smtp_host="127.0.0.1", smtp_port=smtp.port,
        smtp_from="ioc@tinh.vn", telegram_bot_token=BOT_TOKEN,
        telegram_api_url=channels.telegram.url, zalo_access_token=ZALO_TOKEN,
        zalo_api_url=f"{channels.zalo.url}/v3.0/oa/message/cs", alert_webhook_secret=SECRET,
        dashboard_url="https://ioc.tinh.vn/d/canh-bao", public_api_url="https://ioc.tinh.vn/api",
        alert_link_secret="link-secret-" + "x" * 20)
    migrate(settings)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(publish(settings, messages))
        valid = simulator.stats.valid_events
        wait_until(lambda: query(settings, "SELECT count(*) FROM events")[0][0] == valid, 90,
                   f"{valid} events stored", worker.log)

        rules_dir.mkdir()
        draft = rules_dir / "rule.tmp"
        draft.write_text(
            f"name: {RULE}\nmetric: dossiers.on_time_rate\nscope: each agency\n"
            f"comparison: '<'\nthreshold: {THRESHOLD}\nwindow: last 60 days\n"
            f"for: 2 seconds\nquiet: {QUIET} seconds\nseverity: critical\n"
            "working_hours: false\nrecipients: ['agency-head:{agency}', ioc-duty-officer]\n",
            encoding="utf-8")
        draft.rename(rules_dir / "rule.yaml")  # the worker never reads half a file

        # (a) Exactly the planted agencies fire, each at the rate computed here.
        def firing() -> set[str]:
            return {s for _, s, state, _, _ in transitions(settings) if state == "firing"}
        wait_until(lambda: firing() == scopes, 30, "the planted agencies to fire", worker.log)
        rows = transitions(settings)
        assert {scope for _, scope, _, _, _ in rows} == scopes  # no other agency, not even pending
        for _, scope, _, value, _ in rows:
            assert value == rates[scope.removeprefix("agency:")][0]

        # (c) Once its messages are in, acknowledge one through the API; the others go on
        # being reminded.
        acked = min(scopes)
        alert_id = min(seq for seq, s, state, _, _ in rows if s == acked and state == "firing")
        wait_until(lambda: sum(n for key, n in deliveries(channels, smtp).items()
                               if key[2:] == (acked, "firing", alert_id)) == 6, 30,
                   "the first messages of the alert", worker.log)
        api = serve_app(create_app(settings))
        _, secret = create_key(settings, "truc-ban", ["alerts:ack"])
        answer = api.post(f"/alerts/{alert_id}/ack", json={"note": "đang xử lý"},
                          headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["alert"]["state"] == "acknowledged"
        [(acked_at,)] = query(settings, "SELECT at FROM alerts WHERE state = 'acknowledged'")

        def reminded(scope: str) -> int:
            return sum(1 for _, s, state, _, at in transitions(settings)
                       if s == scope and state == "firing" and at > acked_at)
        others = scopes - {acked}
        wait_until(lambda: all(reminded(s) >= 3 for s in others), 40,
                   f"three reminders {QUIET} s apart for the unacknowledged alerts", worker.log)
        assert reminded(acked) == 0  # more than three quiet periods, no reminder

        # (d) The planted agencies catch up: dossiers finished on time, until each is at or
        # above the threshold again (n + extra - late >= 95 % of n + extra).
        extra = {a: int(20 * rates[a][2] - rates[a][1]) + 1 for a in bad}
        asyncio.run(publish(settings, [m for a in sorted(bad) for m in catch_up(newest, a,
                                                                                extra[a])]))

        def resolved() -> set[str]:
            return {s for _, s, state, _, _ in transitions(settings) if state == "resolved"}
        wait_until(lambda: resolved() == scopes, 30, "the alerts to resolve", worker.log)
        for _, scope, state, value, _ in transitions(settings):
            if state == "resolved":
                agency = scope.removeprefix("agency:")
                n, k = rates[agency][1] + extra[agency], rates[agency][2]
                expected = (Decimal(100) * (n - k) / n).quantize(Decimal("0.01"), ROUND_HALF_UP)
                assert value == expected >= THRESHOLD

        # (b) Every transition told once to every address on every channel, nothing more.
        # A reminder written just before the acknowledgement and not sent yet is cancelled.
        rows = transitions(settings)
        cancelled = set(query(settings, "SELECT alert_seq, channel, recipient FROM alert_outbox"
                                        " WHERE state = 'cancelled'"))
        assert {(s, at <= acked_at) for seq, s, _, _, at in rows
                if seq in {c[0] for c in cancelled}} <= {(acked, True)}
        fired = [(seq, scope) for seq, scope, state, _, _ in rows if state == "firing"]
        expected = Counter({(channel, rcpt, scope, "firing", seq): 1
                            for seq, scope in fired for channel, rcpt in addresses(channels)
                            if (seq, channel, rcpt) not in cancelled})
        expected.update({(channel, rcpt, scope, "resolved", None): 1
                         for scope in scopes for channel, rcpt in addresses(channels)})
        wait_until(lambda: deliveries(channels, smtp) == expected, 30,
                   f"{sum(expected.values())} messages", lambda: (
                       f"{sorted(set(expected) ^ set(deliveries(channels, smtp)))}\n"
                       f"{worker.log()}"))
    finally:
        worker.stop()
    assert deliveries(channels, smtp) == expected  # none more while the worker stopped
    outbox = Counter(state for state, in query(settings, "SELECT state FROM alert_outbox"))
    assert outbox == Counter({"sent": sum(expected.values()),
                              "cancelled": len(cancelled)}) - Counter()
    assert len(channels.hook.requests) == len(channels.hook.accepted)  # all signed right
    # Every message of an episode, reminders too, says it began with its pending row.
    began = {scope: at for _, scope, state, _, at in reversed(rows) if state == "pending"}
    assert began.keys() == scopes
    for request in channels.hook.accepted:
        event = request.json()
        assert moment(event["since"]) == began[event["scope"]], event
