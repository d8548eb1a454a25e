"""Renewing the Zalo OA access token (ioc/alerts/zalo.py) on real PostgreSQL. Zalo cannot run
here, so one real local HTTP server speaks both of its wire formats: OAuth v4's
`POST /v4/oa/access_token` (header `secret_key`, form `refresh_token`, `app_id`,
`grant_type=refresh_token`; answer `{"access_token", "refresh_token", "expires_in": "<seconds>"}`
or, refused, HTTP 200 `{"error": -14014, "error_name": ...}`), where each refresh token works
once (it rotates), and the OA API v3's `POST /v3.0/oa/message/cs` (header `access_token`,
answer `{"error": 0}`, or -216 / -220 for a token it does not accept).

The tokens are the server's own (at-1, rt-1, ...): each test knows which one must be used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from ioc.alerts import Rule
from ioc.alerts.deliver import configured, deliver, enqueue_and_deliver
from ioc.alerts.outbox import enqueue
from ioc.alerts.recipients import load, resolver
from ioc.core.db import connect, migrate
from ioc.core.settings import Settings
from tests.support.alerts import recipients_file
from tests.support.receivers import Answer, Request, Zalo
from tests.support.services import query, wait_until

APP_ID = "3105482271640025517"
APP_SECRET = "zalo-app-secret-for-tests"
OAUTH_PATH = "/v4/oa/access_token"
USERS = ["8437261905123", "8437261905456"]
DAY = 90_000  # what Zalo gives an access token: 25 hours
RULES = [Rule.model_validate({
    "name": "phan-anh-qua-han", "metric": "field_reports.overdue", "scope": "province",
    "comparison": ">=", "threshold": 5, "window": "last 60 days", "for": "15m",
    "severity": "critical", "recipients": ["zalo-duty"]})]


def refused(code: int, name: str) -> Answer:
    return 200, {"error": code, "error_name": name, "error_reason": "",
                 "error_description": name, "ref_doc": "https://developers.zalo.me"}, {}


@dataclass
class ZaloPlatform(Zalo):
    """Zalo's OAuth v4 and OA API on one port: access tokens that expire and are renewed; a
    message sent is answered as `Zalo` answers it. `refresh_token`: the one that works now."""

    refresh_token: str = "rt-0"
    valid: set[str] = field(default_factory=set)  # access tokens the OA API accepts
    expired: set[str] = field(default_factory=set)  # answered -220 (others -216)
    issued: int = 0
    renewals: list[Request] = field(default_factory=list)
    renewing: threading.Event = field(default_factory=threading.Event)
    renewal_hold: threading.Event | None = None

    def handle(self, request: Request) -> Answer:
        if request.path == OAUTH_PATH:
            return self.renew(request)
        return super().handle(request)

    def renew(self, request: Request) -> Answer:
        self.renewing.set()
        if self.renewal_hold is not None:
            self.renewal_hold.wait(10)
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        with self.lock:
            self.renewals.append(request)
            if request.headers.get("secret_key") != APP_SECRET:
                return refused(-14004, "Invalid secret key")
            if form.get("app_id") != APP_ID:
                return refused(-14002, "Invalid appId")
            if form.get("grant_type") != "refresh_token":
                return refused(-14018, "Invalid grant type")
            if form.get("refresh_token") != self.refresh_token:
                return refused(-14014, "Invalid refresh token")
            self.issued += 1
            access, self.refresh_token = f"at-{self.issued}", f"rt-{self.issued}"
            self.valid.add(access)
            return 200, {"access_token": access, "refresh_token": self.refresh_token,
                         "expires_in": str(DAY)}, {}

    def authorize(self) -> str:
        """The OA authorized for the app again: a new refresh token, the old one dead."""
        with self.lock:
            self.refresh_token = "rt-reauthorized"
            return self.refresh_token

    def check(self, request: Request) -> Answer | None:
        if request.path != "/v3.0/oa/message/cs":
            return 404, {"error": 404, "message": "not found"}, {}
        token = request.headers.get("access_token", "")
        if token in self.expired:
            return 200, {"error": -220, "message": "Access token has expired"}, {}
        if token not in self.valid:
            return 200, {"error": -216, "message": "Access token is invalid"}, {}
        return None

    def tokens_used(self, requests: list[Request]) -> list[str]:
        return [r.headers["access_token"] for r in requests]

    def renewed_with(self) -> list[str]:
        return [parse_qs(r.body.decode())["refresh_token"][0] for r in self.renewals]


@pytest.fixture
def platform() -> Iterator[ZaloPlatform]:
    running = ZaloPlatform("zalo").start()
    yield running
    if running.renewal_hold is not None:
        running.renewal_hold.set()
    running.stop()


@pytest.fixture
def zalo_settings(settings: Settings, platform: ZaloPlatform) -> Settings:
    migrate(settings)
    return settings.model_copy(update={
        "zalo_app_id": APP_ID, "zalo_app_secret": APP_SECRET, "zalo_refresh_token": "rt-0",
        "zalo_oauth_url": f"{platform.url}{OAUTH_PATH}",
        "zalo_api_url": f"{platform.url}/v3.0/oa/message/cs",
        "dashboard_url": "https://ioc.phutho.gov.vn/d/canh-bao",
        "public_api_url": "https://ioc.phutho.gov.vn/api", "alert_link_secret": "link-secret",
        "timezone": "Asia/Ho_Chi_Minh"})


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    return recipients_file(tmp_path, "zalo-duty:\n" + "".join(f"  - zalo:{u}\n" for u in USERS))


def fire(settings: Settings, scope: str) -> None:
    """A firing transition for the Zalo duty officers (one message to each of USERS)."""
    query(settings,
          "INSERT INTO alerts (at, rule, scope, state, value, threshold, comparison, severity,"
          " recipients, notify_after) VALUES (now(), 'phan-anh-qua-han', %s, 'firing', 9, 5,"
          " '>=', 'critical', %s, now()) RETURNING seq", (scope, ["zalo-duty"]))


def round_(settings: Settings, recipients: Path) -> list[tuple[str, str]]:
    """One delivery round (a fresh deliverer, as after a restart): (user, state) per row."""
    done = enqueue_and_deliver(settings, None, datetime.now(UTC), RULES, recipients)
    return sorted((d.recipient, d.state) for d in done)


def stored(settings: Settings) -> tuple[str | None, datetime | None, str]:
    [row] = query(settings, "SELECT access_token, expires_at, refresh_token FROM channel_tokens")
    return row


def expire_soon(settings: Settings, minutes: int) -> None:
    query(settings, "UPDATE channel_tokens SET expires_at = now() + %s * interval '1 minute'"
                    " RETURNING 1", (minutes,))


SENT = [(u, "sent") for u in USERS]


def test_an_expiring_token_is_renewed_once_and_the_rotated_refresh_token_is_stored(
    zalo_settings: Settings, platform: ZaloPlatform, recipients: Path,
) -> None:
    settings = zalo_settings
    before = datetime.now(UTC)
    fire(settings, "xa-1")
    assert round_(settings, recipients) == SENT  # no access token yet: renewed first
    after = datetime.now(UTC)
    [renewal] = platform.renewals
    assert renewal.headers["secret_key"] == APP_SECRET
    assert renewal.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(renewal.body.decode()) == {
        "refresh_token": ["rt-0"], "app_id": [APP_ID], "grant_type": ["refresh_token"]}
    assert platform.tokens_used(platform.requests) == ["at-1", "at-1"]
    access, expires_at, refresh_token = stored(settings)
    assert (access, refresh_token) == ("at-1", "rt-1")
    assert expires_at is not None
    assert before + timedelta(seconds=DAY) <= expires_at <= after + timedelta(seconds=DAY)

    fire(settings, "xa-2")  # the token is good for 25 hours: no renewal
    assert round_(settings, recipients) == SENT
    assert len(platform.renewals) == 1 and platform.tokens_used(platform.requests[2:]) == [
        "at-1", "at-1"]

    expire_soon(settings, 5)  # within 10 minutes of expiring: renewed once, before use
    fire(settings, "xa-3")
    assert round_(settings, recipients) == SENT
    assert platform.renewed_with() == ["rt-0", "rt-1"]
    assert platform.tokens_used(platform.requests[4:]) == ["at-2", "at-2"]
    assert stored(settings)[0::2] == ("at-2", "rt-2")
    assert len(platform.requests) == 6 and len(platform.accepted) == 6


def test_a_token_refused_mid_delivery_is_renewed_once_and_the_message_sent_again(
    zalo_settings: Settings, platform: ZaloPlatform, recipients: Path,
) -> None:
    """The access token setting is used (its expiry unknown) until Zalo answers -220."""
    settings = zalo_settings.model_copy(update={"zalo_access_token": "at-static"})
    platform.valid.add("at-static")
    fire(settings, "xa-1")
    assert round_(settings, recipients) == SENT
    assert platform.renewals == [] and platform.tokens_used(platform.requests) == [
        "at-static", "at-static"]

    platform.expired.add("at-static")
    fire(settings, "xa-2")
    assert round_(settings, recipients) == SENT
    assert platform.renewed_with() == ["rt-0"]
    # The first message: refused with the old token, sent again with the new one; the second
    # uses the new one at once.
    assert platform.tokens_used(platform.requests[2:]) == ["at-static", "at-1", "at-1"]
    assert [r.json()["recipient"]["user_id"] for r in platform.requests[2:]] == [
        USERS[0], USERS[0], USERS[1]]
    rows = query(settings, "SELECT state, attempts, last_error FROM alert_outbox")
    assert sorted(rows) == [("sent", 1, None)] * 4
    assert stored(settings)[0::2] == ("at-1", "rt-1")

    # A token Zalo calls invalid (-216) is renewed the same way.
    platform.valid.discard("at-1")
    fire(settings, "xa-3")
    assert round_(settings, recipients) == SENT
    assert platform.renewed_with() == ["rt-0", "rt-1"]
    assert platform.tokens_used(platform.requests[5:]) == ["at-1", "at-2", "at-2"]
    assert stored(settings)[0::2] == ("at-2", "rt-2")


def test_two_deliverers_needing_a_token_renew_it_only_once(
    zalo_settings: Settings, platform: ZaloPlatform, recipients: Path,
) -> None:
    """The token is about to expire. The first deliverer's renewal is held at Zalo until the
    second one waits for the token row's lock: the second then uses the first one's token.
    Without the lock it would present rt-1 again, which Zalo refuses once used."""
    settings = zalo_settings
    fire(settings, "xa-0")
    assert round_(settings, recipients) == SENT
    expire_soon(settings, 5)
    fire(settings, "xa-1")
    with connect(settings) as conn:
        assert enqueue(conn, resolver(load(recipients)), datetime.now(UTC),
                       channels=configured(settings, None)) == 2
    platform.renewal_hold = threading.Event()
    platform.renewing.clear()
    results: list[list[tuple[str, str]]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append([(d.recipient, d.state)
                            for d in deliver(settings, None, datetime.now(UTC), RULES)])
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=run)
    first.start()
    assert platform.renewing.wait(10), "the first deliverer did not ask for a token"
    second = threading.Thread(target=run)
    second.start()
    wait_until(lambda: query(settings, "SELECT count(*) FROM pg_stat_activity"
                                       " WHERE wait_event_type = 'Lock'"
                                       " AND query LIKE '%%channel_tokens%%'")[0][0] == 1,
               10, "the second deliverer waiting for the token row")
    platform.renewal_hold.set()
    first.join(15)
    second.join(15)
    assert not first.is_alive() and not second.is_alive() and errors == []
    assert sorted(row for result in results for row in result) == SENT
    assert [len(result) for result in results] == [1, 1]
    assert platform.renewed_with() == ["rt-0", "rt-1"]
    assert platform.tokens_used(platform.accepted[2:]) == ["at-2", "at-2"]
    assert stored(settings)[0::2] == ("at-2", "rt-2")


def test_a_restart_renews_with_the_stored_refresh_token_and_a_new_setting_wins(
    zalo_settings: Settings, platform: ZaloPlatform, recipients: Path,
) -> None:
    settings = zalo_settings
    fire(settings, "xa-1")
    assert round_(settings, recipients) == SENT
    assert stored(settings)[0::2] == ("at-1", "rt-1")

    # Restarted (nothing in memory; the setting still says rt-0, used up): the stored rt-1.
    restarted = Settings(**settings.model_dump())
    assert restarted.zalo_refresh_token == "rt-0"
    expire_soon(restarted, -60)
    fire(restarted, "xa-2")
    assert round_(restarted, recipients) == SENT
    assert platform.renewed_with() == ["rt-0", "rt-1"]
    assert stored(restarted)[0::2] == ("at-2", "rt-2")

    # The OA authorized again and its new refresh token set: that one is used, then rotated.
    fresh = restarted.model_copy(update={"zalo_refresh_token": platform.authorize()})
    fire(fresh, "xa-3")
    assert round_(fresh, recipients) == SENT
    assert platform.renewed_with() == ["rt-0", "rt-1", "rt-reauthorized"]
    assert stored(fresh)[0::2] == ("at-3", "rt-3")
    expire_soon(fresh, 1)
    fire(fresh, "xa-4")
    assert round_(fresh, recipients) == SENT
    assert platform.renewed_with()[-1] == "rt-3" and stored(fresh)[0::2] == ("at-4", "rt-4")
    assert platform.tokens_used(platform.accepted) == [
        "at-1", "at-1", "at-2", "at-2", "at-3", "at-3", "at-4", "at-4"]


def test_a_refused_renewal_fails_the_zalo_rows_with_what_to_do(
    zalo_settings: Settings, platform: ZaloPlatform, recipients: Path,
) -> None:
    settings = zalo_settings
    platform.refresh_token = "rt-elsewhere"  # rt-0 was used up (another copy renewed)
    fire(settings, "xa-1")
    assert round_(settings, recipients) == [(u, "failed") for u in USERS]
    assert len(platform.renewals) == 1 and platform.requests == []  # one try, nothing sent
    errors = [e for (e,) in query(settings, "SELECT last_error FROM alert_outbox")]
    assert len(errors) == 2
    for error in errors:
        assert error.startswith("Zalo refused to renew the access token (-14014 Invalid"
                                " refresh token): authorize the OA for the app again")
        assert "set IOC_ZALO_REFRESH_TOKEN to the new refresh token" in error
        assert "rt-0" not in error and APP_SECRET not in error
    assert query(settings, "SELECT refresh_token FROM channel_tokens") == []  # nothing kept

    wrong = settings.model_copy(update={"zalo_app_secret": "not-the-secret"})
    fire(wrong, "xa-2")
    assert round_(wrong, recipients) == [(u, "failed") for u in USERS]
    [(error,)] = query(settings, "SELECT DISTINCT last_error FROM alert_outbox o JOIN alerts a"
                                 " ON a.seq = o.alert_seq WHERE a.scope = 'xa-2'")
    assert "-14004 Invalid secret key" in error and "IOC_ZALO_APP_SECRET" in error
    assert "not-the-secret" not in error

    partial = settings.model_copy(update={"zalo_app_secret": "", "zalo_refresh_token": ""})
    fire(partial, "xa-3")
    assert round_(partial, recipients) == [(u, "failed") for u in USERS]
    [(error,)] = query(settings, "SELECT DISTINCT last_error FROM alert_outbox o JOIN alerts a"
                                 " ON a.seq = o.alert_seq WHERE a.scope = 'xa-3'")
    assert error.startswith("Zalo: set IOC_ZALO_APP_SECRET, IOC_ZALO_REFRESH_TOKEN too")
    assert len(platform.renewals) == 2 and platform.requests == []
