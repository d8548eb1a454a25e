"""Acknowledge, silence and quiet reminders of alerts, on real PostgreSQL (and TimescaleDB for
the migration), a real SMTP server (aiosmtpd, tests/support/smtp.py) and the API served by
uvicorn. The rule `documents.backlog_overdue >= 0` over an empty province always holds (the
value is 0), `>= 1` never: the tests switch an alert on and off without loading data.

Expected reminder times are computed here from the evaluation grid and `quiet` (written out),
never read back from what the evaluator wrote.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from ioc.alerts import Rule, evaluate
from ioc.alerts.ack import AlertConflict, AlertNotFound, Ref, acknowledge, silence
from ioc.alerts.deliver import enqueue_and_deliver
from ioc.alerts.links import ack_link
from ioc.alerts.outbox import enqueue
from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.cli.alerts import app as alerts_app
from ioc.core.db import connect, migrate
from ioc.core.settings import Settings, get_settings
from tests.support.alerts import backlog_rule, recipients_file
from tests.support.services import ServedApps, query
from tests.support.smtp import SmtpServer, config
from tests.support.timescaledb import TimescaleServer

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
RECIPIENTS = "ioc-duty-officer: truc-ioc@tinh.vn\n"
SECRET = "a" * 32
PUBLIC = "http://ioc-api.tinh.vn"


def states(settings: Settings) -> list[tuple[str, datetime]]:
    return [(s, at) for s, at in query(settings, "SELECT state, at FROM alerts ORDER BY at, seq")]


def first_id(settings: Settings) -> int:
    return query(settings, "SELECT min(seq) FROM alerts WHERE state = 'firing'")[0][0]


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    return recipients_file(tmp_path, RECIPIENTS)


# --- reminders --------------------------------------------------------------------------------

def test_reminders_come_every_quiet_period_while_firing(migrated: Settings) -> None:
    settings = migrated
    rules = [backlog_rule()]  # quiet 25 minutes
    t0 = datetime(2026, 11, 18, 9, 0, tzinfo=VIETNAM)  # a Wednesday, office hours
    grid = [t0 + timedelta(minutes=7 * i) for i in range(30)]  # every 7 minutes, 3 h 23 min
    fired = []
    for now in grid:
        fired += [(t.previous, t.state, t.at) for t in evaluate(settings, rules, now)]
        assert evaluate(settings, rules, now) == []  # same now twice: nothing new
    # On a 7-minute grid the first time >= last + 25 minutes is last + 28 minutes.
    expected = [("ok", "firing", t0)] + [("firing", "firing", t0 + timedelta(minutes=28 * k))
                                        for k in range(1, 8)]
    assert fired == expected
    assert [at for _, at in states(settings)] == [t0 + timedelta(minutes=28 * k)
                                                  for k in range(8)]
    # Each reminder is queued like the first firing: one outbox row each.
    with connect(settings) as conn:
        assert enqueue(conn, lambda role: ["truc-ioc@tinh.vn"], grid[-1]) == 8


def test_reminders_wait_for_office_hours_and_never_pile_up(migrated: Settings) -> None:
    settings = migrated
    rules = [backlog_rule(severity="warning", working_hours=True, quiet="4 hours")]
    friday_night = datetime(2026, 11, 20, 22, 0, tzinfo=VIETNAM)
    hours = [friday_night + timedelta(hours=h) for h in range(0, 71)]  # until Monday 20:00
    written = [t for now in hours for t in evaluate(settings, rules, now)]
    monday_open = datetime(2026, 11, 23, 7, 30, tzinfo=VIETNAM)
    # The first message is due Monday 07:30; reminders every 4 h after that, on the hour grid.
    assert [(t.at, t.notify_after) for t in written] == [
        (friday_night, monday_open),
        (datetime(2026, 11, 23, 12, 0, tzinfo=VIETNAM), datetime(2026, 11, 23, 12, 0,
                                                                  tzinfo=VIETNAM)),
        (datetime(2026, 11, 23, 16, 0, tzinfo=VIETNAM), datetime(2026, 11, 23, 16, 0,
                                                                  tzinfo=VIETNAM)),
        (datetime(2026, 11, 23, 20, 0, tzinfo=VIETNAM), datetime(2026, 11, 24, 7, 30,
                                                                  tzinfo=VIETNAM)),
    ]


# --- acknowledge and silence ------------------------------------------------------------------

def test_ack_stops_reminders_and_the_resolved_mail_still_goes(
    migrated: Settings, smtp: SmtpServer, recipients: Path,
) -> None:
    settings = migrated
    rules = [backlog_rule()]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)

    def mails() -> list[str]:
        return [m["Subject"] for _, m in smtp.mailbox.take()]

    def step(at: datetime, rules: list[Rule] = rules) -> list[str]:
        evaluate(settings, rules, at)
        enqueue_and_deliver(settings, config(smtp), at, rules, recipients)
        return mails()

    firing = "[IOC][Nghiêm trọng] ton-dong-qua-han – Toàn tỉnh"
    assert step(t0) == [firing]
    assert step(t0 + timedelta(minutes=20)) == []
    assert step(t0 + timedelta(minutes=25)) == [firing]  # the reminder
    alert_id = first_id(settings)

    done = acknowledge(settings, Ref(seq=alert_id), "cli:duty", "đang xử lý",
                       t0 + timedelta(minutes=30))
    assert done.changed and done.alert.state == "acknowledged"
    assert (done.alert.id, done.alert.since) == (alert_id, t0)
    again = acknowledge(settings, Ref(rule="ton-dong-qua-han", scope="province"), "cli:x",
                        None, t0 + timedelta(minutes=31))
    assert not again.changed and again.alert.actor == "cli:duty"
    assert [s for s, _ in states(settings)] == ["firing", "firing", "acknowledged"]

    for minutes in (50, 75, 100, 200):  # still firing, well past `quiet`: no reminder
        assert step(t0 + timedelta(minutes=minutes)) == []
    assert [s for s, _ in states(settings)] == ["firing", "firing", "acknowledged"]

    resolved = step(t0 + timedelta(minutes=210), [backlog_rule(holds=False)])
    assert resolved == ["[IOC][Đã hết cảnh báo] ton-dong-qua-han – Toàn tỉnh"]
    assert query(settings, "SELECT state FROM alerts ORDER BY at DESC, seq DESC LIMIT 1") == [
        ("resolved",)]
    with pytest.raises(AlertConflict, match="already resolved"):
        acknowledge(settings, Ref(seq=alert_id), "cli:duty", None, t0 + timedelta(hours=4))
    with pytest.raises(AlertNotFound):
        acknowledge(settings, Ref(seq=alert_id + 1000), "cli:duty", None, t0)

    # The same rule fires again: a new alert, the old id still refers to the resolved one.
    step(t0 + timedelta(minutes=220))
    with pytest.raises(AlertConflict, match="already resolved"):
        acknowledge(settings, Ref(seq=alert_id), "cli:duty", None, t0 + timedelta(hours=4))
    new = acknowledge(settings, Ref(rule="ton-dong-qua-han", scope="province"), "cli:duty",
                      None, t0 + timedelta(minutes=221))
    assert new.alert.id != alert_id and new.alert.since == t0 + timedelta(minutes=220)


def test_silence_holds_messages_until_it_ends(
    migrated: Settings, smtp: SmtpServer, recipients: Path,
) -> None:
    settings = migrated
    rules = [backlog_rule(quiet="10 minutes")]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    evaluate(settings, rules, t0)
    enqueue_and_deliver(settings, config(smtp), t0, rules, recipients)  # sent before silence
    alert_id = first_id(settings)
    with pytest.raises(ValueError, match="end after now"):
        silence(settings, Ref(seq=alert_id), t0, "cli:duty", None, t0 + timedelta(minutes=1))
    until = t0 + timedelta(minutes=45)
    done = silence(settings, Ref(seq=alert_id), until, "cli:duty", "bảo trì",
                   t0 + timedelta(minutes=1))
    assert (done.alert.state, done.alert.silenced_until, done.alert.note) == (
        "silenced", until, "bảo trì")
    for minutes in (11, 22, 33, 44):  # reminders would be due: silenced
        assert evaluate(settings, rules, t0 + timedelta(minutes=minutes)) == []
    back = evaluate(settings, rules, until)
    assert [(t.previous, t.state) for t in back] == [("silenced", "firing")]
    assert evaluate(settings, rules, until + timedelta(minutes=9)) == []
    assert [t.state for t in evaluate(settings, rules, until + timedelta(minutes=10))] == [
        "firing"]  # the quiet cadence again
    enqueue_and_deliver(settings, config(smtp), until + timedelta(minutes=10), rules,
                        recipients)
    assert len(smtp.mailbox.take()) == 3  # first firing, end of silence, one reminder

    # Silenced, then resolved during the silence: the resolved message goes out.
    silence(settings, Ref(seq=alert_id), until + timedelta(hours=2), "cli:duty", None,
            until + timedelta(minutes=11))
    later = until + timedelta(minutes=20)
    assert [(t.previous, t.state) for t in evaluate(settings, [backlog_rule(holds=False)],
                                                    later)] == [("silenced", "resolved")]
    enqueue_and_deliver(settings, config(smtp), later, rules, recipients)
    assert [m["Subject"] for _, m in smtp.mailbox.take()] == [
        "[IOC][Đã hết cảnh báo] ton-dong-qua-han – Toàn tỉnh"]


def test_a_person_acting_after_the_evaluation_time_wins(migrated: Settings) -> None:
    """An evaluation whose `now` is older than an acknowledgement leaves that alert alone."""
    settings = migrated
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    evaluate(settings, [backlog_rule()], t0)
    acknowledge(settings, Ref(seq=first_id(settings)), "cli:duty", None,
                t0 + timedelta(minutes=10))
    assert evaluate(settings, [backlog_rule(holds=False)], t0 + timedelta(minutes=5)) == []
    assert [t.previous for t in evaluate(settings, [backlog_rule(holds=False)],
                                         t0 + timedelta(minutes=11))] == ["acknowledged"]


# --- the API ----------------------------------------------------------------------------------

@pytest.fixture
def api(migrated: Settings, serve_app: ServedApps) -> tuple[Settings, httpx.Client]:
    settings = migrated.model_copy(update={"alert_link_secret": SECRET,
                                           "public_api_url": PUBLIC})
    return settings, serve_app(create_app(settings))


def key(settings: Settings, *scopes: str) -> dict[str, str]:
    _, secret = create_key(settings, f"k-{uuid.uuid4().hex[:8]}", list(scopes))
    return {"Authorization": f"Bearer {secret}"}


def test_api_lists_acknowledges_and_silences(api: tuple[Settings, httpx.Client]) -> None:
    settings, client = api
    ack_key, read_key = key(settings, "alerts:ack"), key(settings, "alerts:read")
    other = key(settings, "reports:update")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    evaluate(settings, [backlog_rule(), backlog_rule(name="thu-hai")], t0)
    ids = dict(query(settings, "SELECT rule, seq FROM alerts"))

    assert client.get("/alerts").status_code == 401
    assert client.get("/alerts", headers=other).status_code == 403
    assert client.post(f"/alerts/{ids['thu-hai']}/ack").status_code == 401
    assert client.post(f"/alerts/{ids['thu-hai']}/ack", headers=read_key).status_code == 403
    listed = client.get("/alerts", headers=read_key)
    assert listed.status_code == 200
    assert sorted((a["id"], a["rule"], a["scope"], a["state"], a["value"],
                   datetime.fromisoformat(a["since"])) for a in listed.json()) == sorted(
        (seq, rule, "province", "firing", "0", t0) for rule, seq in ids.items())

    assert client.post("/alerts/987654/ack", headers=ack_key).status_code == 404
    bad = client.post(f"/alerts/{ids['thu-hai']}/silence", headers=ack_key,
                      json={"duration": "soon"})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "duration"]]
    missing = client.post(f"/alerts/{ids['thu-hai']}/silence", headers=ack_key, json={})
    assert [e["loc"] for e in missing.json()["detail"]] == [["body", "duration"]]
    long_note = client.post(f"/alerts/{ids['thu-hai']}/ack", headers=ack_key,
                            json={"note": "x" * 1001})
    assert long_note.status_code == 422
    assert [e["loc"] for e in long_note.json()["detail"]] == [["body", "note"]]

    acked = client.post(f"/alerts/{ids['thu-hai']}/ack", headers=ack_key,
                        json={"note": "đang xử lý"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["changed"] is True
    assert acked.json()["alert"]["state"] == "acknowledged"
    assert acked.json()["alert"]["note"] == "đang xử lý"
    assert acked.json()["alert"]["actor"].startswith("key:k-")
    assert client.post(f"/alerts/{ids['thu-hai']}/ack",
                       headers=ack_key).json()["changed"] is False

    before = datetime.now(UTC)
    silenced = client.post(f"/alerts/{ids['ton-dong-qua-han']}/silence", headers=ack_key,
                           json={"duration": "2h", "note": "bảo trì"})
    assert silenced.status_code == 200, silenced.text
    until = datetime.fromisoformat(silenced.json()["alert"]["silenced_until"])
    assert before + timedelta(hours=2) <= until <= datetime.now(UTC) + timedelta(hours=2)
    assert {a["rule"]: a["state"] for a in client.get("/alerts", headers=read_key).json()} == {
        "ton-dong-qua-han": "silenced", "thu-hai": "acknowledged"}

    evaluate(settings, [backlog_rule(holds=False), backlog_rule(holds=False, name="thu-hai")],
             datetime.now(UTC))
    assert client.get("/alerts", headers=read_key).json() == []
    conflict = client.post(f"/alerts/{ids['thu-hai']}/ack", headers=ack_key)
    assert conflict.status_code == 409 and "resolved" in conflict.json()["detail"]
    assert client.post(f"/alerts/{ids['thu-hai']}/silence", headers=ack_key,
                       json={"duration": 600}).status_code == 409


def test_signed_link_acknowledges_once(api: tuple[Settings, httpx.Client]) -> None:
    settings, client = api
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    evaluate(settings, [backlog_rule(), backlog_rule(name="thu-hai")], t0)
    ids = dict(query(settings, "SELECT rule, seq FROM alerts"))
    link = ack_link(settings, ids["ton-dong-qua-han"], datetime.now(UTC))
    assert link is not None and link.startswith(f"{PUBLIC}/alerts/{ids['ton-dong-qua-han']}/ack?")
    parts = urlsplit(link)
    exp, sig = parse_qs(parts.query)["exp"][0], parse_qs(parts.query)["sig"][0]
    path = parts.path

    tampered = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert client.get(path, params={"exp": exp, "sig": tampered}).status_code == 403
    assert client.get(path, params={"exp": int(exp) + 60, "sig": sig}).status_code == 403
    assert client.get(path).status_code == 403
    other_id = f"/alerts/{ids['thu-hai']}/ack"
    assert client.get(other_id, params={"exp": exp, "sig": sig}).status_code == 403
    assert query(settings, "SELECT count(*) FROM alerts WHERE state = 'acknowledged'") == [(0,)]

    # GET only asks to confirm (mail scanners prefetch links); its button POSTs the link.
    page = client.get(path, params={"exp": exp, "sig": sig})
    assert page.status_code == 200 and 'method="post"' in page.text
    assert query(settings, "SELECT count(*) FROM alerts WHERE state = 'acknowledged'") == [(0,)]
    first = client.post(path, params={"exp": exp, "sig": sig})
    assert first.status_code == 200
    assert 'lang="vi"' in first.text and "Đã xác nhận cảnh báo" in first.text
    assert "ton-dong-qua-han – Toàn tỉnh" in first.text
    second = client.post(path, params={"exp": exp, "sig": sig})
    assert second.status_code == 200 and "đã được xác nhận trước đó" in second.text
    assert query(settings, "SELECT rule, actor FROM alerts WHERE state = 'acknowledged'") == [
        ("ton-dong-qua-han", "liên kết trong tin cảnh báo")]

    old = ack_link(settings, ids["thu-hai"], datetime.now(UTC) - timedelta(days=8))
    assert old is not None
    assert client.get(old.removeprefix(PUBLIC)).status_code == 410
    assert client.post(old.removeprefix(PUBLIC)).status_code == 410
    unknown = ack_link(settings, 987654, datetime.now(UTC))
    assert unknown is not None and client.post(unknown.removeprefix(PUBLIC)).status_code == 404

    evaluate(settings, [backlog_rule(holds=False)], datetime.now(UTC))
    gone = client.post(path, params={"exp": exp, "sig": sig})
    assert gone.status_code == 409 and "đã hết" in gone.text

    no_secret = settings.model_copy(update={"alert_link_secret": ""})
    assert ack_link(no_secret, ids["thu-hai"], datetime.now(UTC)) is None


# --- the command line -------------------------------------------------------------------------

def test_cli_list_ack_silence(migrated: Settings, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = migrated
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "- name: ton-dong-qua-han\n  metric: documents.backlog_overdue\n  scope: province\n"
        "  comparison: '>='\n  threshold: 0\n  window: last 60 days\n  for: 0\n"
        "  severity: critical\n  recipients: [ioc-duty-officer]\n"
        "- name: thu-hai\n  metric: documents.backlog_overdue\n  scope: province\n"
        "  comparison: '>='\n  threshold: 0\n  window: last 60 days\n  for: 0\n"
        "  severity: critical\n  recipients: [ioc-duty-officer]\n", encoding="utf-8")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    evaluate(settings, [backlog_rule(), backlog_rule(name="thu-hai")], t0)
    ids = dict(query(settings, "SELECT rule, seq FROM alerts"))
    for name, value in settings.as_env().items():
        if name.startswith("IOC_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    run = CliRunner().invoke
    try:
        listed = run(alerts_app, ["list", "--rules", str(rules_file)])
        acked = run(alerts_app, ["ack", str(ids["thu-hai"]), "--note", "đang xử lý"])
        by_name = run(alerts_app, ["silence", "ton-dong-qua-han/province", "--for", "2h"])
        bad_for = run(alerts_app, ["silence", str(ids["thu-hai"]), "--for", "soon"])
        unknown = run(alerts_app, ["ack", "987654"])
        after = run(alerts_app, ["list", "--rules", str(rules_file)])
        evaluate(settings, [backlog_rule(holds=False)], datetime.now(UTC))
        resolved = run(alerts_app, ["ack", str(ids["ton-dong-qua-han"])])
    finally:
        get_settings.cache_clear()
    since = t0.astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M")
    assert listed.exit_code == 0, listed.output
    for rule, seq in ids.items():
        assert f"  firing province since {since}, value 0, id {seq}" in listed.output, rule
    assert acked.exit_code == 0, acked.output
    assert f"acknowledged {ids['thu-hai']}: thu-hai province" in acked.output
    assert by_name.exit_code == 0, by_name.output
    assert f"silenced {ids['ton-dong-qua-han']}: ton-dong-qua-han province until" in (
        by_name.output)
    assert bad_for.exit_code == 1 and "--for:" in bad_for.output
    assert unknown.exit_code == 1 and "no alert with id 987654" in unknown.output
    assert f"acknowledged province since {since}, value 0, id {ids['thu-hai']}, by cli:" in (
        after.output)
    assert ": đang xử lý" in after.output
    assert f"silenced province since {since}, value 0, id {ids['ton-dong-qua-han']}, until" in (
        after.output)
    assert resolved.exit_code == 1 and "already resolved" in resolved.output


# --- TimescaleDB ------------------------------------------------------------------------------

def test_acknowledge_on_the_hypertable(timescale: TimescaleServer) -> None:
    ts = Settings(database_url=timescale.url, database_schema=f"t_{uuid.uuid4().hex[:10]}")
    migrate(ts)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    evaluate(ts, [backlog_rule()], t0)
    alert_id = first_id(ts)
    done = acknowledge(ts, Ref(seq=alert_id), "cli:duty", "ok", t0 + timedelta(minutes=1))
    assert done.alert.state == "acknowledged"
    silence(ts, Ref(seq=alert_id), t0 + timedelta(hours=2), "cli:duty", None,
            t0 + timedelta(minutes=2))
    assert [s for s, _ in states(ts)] == ["firing", "acknowledged", "silenced"]
    with pytest.raises(psycopg.errors.CheckViolation), connect(ts) as conn:
        conn.execute("INSERT INTO alerts (at, rule, scope, state, threshold, comparison,"
                     " severity) VALUES (now(), 'x', 'province', 'silenced', 1, '>', 'info')")
