"""Alert messages through a Zalo Official Account (recipients `zalo:<user id>`: the person's id
as seen by the province's OA, numeric).

Zalo OA API v3, consultation message ("tin tư vấn",
https://developers.zalo.me/docs/official-account/tin-nhan/tin-tu-van/gui-tin-tu-van):
`POST https://openapi.zalo.me/v3.0/oa/message/cs` (setting zalo_api_url), header
`access_token: <OA access token>`, JSON `{"recipient": {"user_id": "..."}, "message":
{"text": "..."}}` (plain text, at most 2000 characters). Application errors come back as HTTP
200 with `{"error": <code>, "message": "..."}`; `error` 0 is accepted (`data.message_id`).
Codes (developers.zalo.me, Official Account "Phụ lục / Mã lỗi"): -216 access token invalid,
-220 access token expired, -213 user has not followed the OA, -230/-232 the user has not
interacted with the OA recently (outside the consultation window), -201 a parameter is
invalid... are permanent here; -32 (too many calls), -200 (send failed), -211/-218 (quota)
and codes not listed are retried.

The OA access token lasts about 25 hours. With only zalo_access_token set it is used as is: a
lapsed token fails the Zalo rows with the reason -216/-220 (see README to re-queue). With
zalo_app_id, zalo_app_secret and zalo_refresh_token set it is renewed (OAuth v4, "Lấy access
token từ refresh token",
https://developers.zalo.me/docs/official-account/bat-dau/xac-thuc-va-uy-quyen-cho-ung-dung-new,
step by step in https://www.hexasync.vn/zalo-oa-api-huong-dan-cach-lay-access-token-tu-refresh-token/):
`POST https://oauth.zaloapp.com/v4/oa/access_token` (setting zalo_oauth_url), header
`secret_key: <app secret>`, form (application/x-www-form-urlencoded) `refresh_token`, `app_id`,
`grant_type=refresh_token`; the answer is JSON `{"access_token", "refresh_token",
"expires_in"}` (seconds, often a numeric string). Refused, it is HTTP 200 too, with no token:
`{"error": -14014, "error_name": "Invalid refresh token", "error_description", ...}` (-14002
app id, -14004 secret key, -14014 refresh token used up or expired, as integrations record).
A refresh token is good for one use and about 3 months: each renewal returns the next one,
the old one stops working.

So the current access token, its expiry and the latest refresh token live in the database
(table channel_tokens, migration 0018), not in memory: a restart renews with the latest
refresh token, not the setting's (long used up). A new zalo_refresh_token setting (the OA
authorized again) replaces what is stored. The token is renewed 10 minutes before it expires,
and once when Zalo answers -216/-220 (then the message is sent again), with the row locked
(FOR UPDATE) so that two deliverers never renew at once: the second would present a refresh
token the first just used up. A refused renewal (used-up or expired refresh token, wrong app
id or secret: an error answer or a 4xx) fails the Zalo rows with a reason telling the operator
what to do; a 5xx or a connection error keeps them pending, retried later. The tokens are
never logged nor kept in an error. A crash between Zalo's answer and the commit loses the
rotated refresh token: then the OA must be authorized again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog

from ioc.alerts.message import Text, shorten
from ioc.alerts.transport import (
    Outgoing,
    Sender,
    SendError,
    permanent_status,
    request_error,
    status_error,
)
from ioc.core.db import connect
from ioc.core.settings import Settings

log = structlog.get_logger()

MAX_LENGTH = 2000
PERMANENT = {
    -201: "tham số không hợp lệ",
    -204: "Official Account đã bị xóa",
    -205: "Official Account không tồn tại",
    -209: "API không được hỗ trợ",
    -210: "tham số vượt quá giới hạn",
    -212: "OA chưa đăng ký API này",
    -213: "người dùng chưa quan tâm OA",
    -216: "access token không hợp lệ",
    -219: "ứng dụng đã bị gỡ bỏ hoặc vô hiệu hóa",
    -220: "access token đã hết hạn",
    -221: "OA chưa xác thực",
    -223: "OA chưa cấp quyền cho ứng dụng",
    -224: "OA chưa mua gói dịch vụ",
    -227: "tài khoản người dùng bị khóa hoặc không hoạt động",
    -230: "người dùng không tương tác với OA trong 7 ngày qua",
    -232: "người dùng chưa tương tác với OA",
    -233: "loại tin nhắn không được hỗ trợ",
    -244: "người dùng đã chặn loại tin này",
}


MARGIN = timedelta(minutes=10)  # renew this long before the access token expires
TOKEN_ERRORS = {-216, -220}  # access token invalid, expired: renew once and send again
CREDENTIALS = {"zalo_app_id": "IOC_ZALO_APP_ID", "zalo_app_secret": "IOC_ZALO_APP_SECRET",
               "zalo_refresh_token": "IOC_ZALO_REFRESH_TOKEN"}
ADVICE = ("authorize the OA for the app again (Official Account > Quản lý > Ứng dụng, or the"
          " app's page on developers.zalo.me) and set IOC_ZALO_REFRESH_TOKEN to the new"
          " refresh token; check IOC_ZALO_APP_ID and IOC_ZALO_APP_SECRET")


def renewing(settings: Settings) -> bool:
    """Any renewal credential set (all three are needed: `sender` says which is missing)."""
    return any(getattr(settings, name) for name in CREDENTIALS)


def configured(settings: Settings) -> bool:
    return bool(settings.zalo_access_token) or renewing(settings)


def plain_text(text: Text) -> str:
    return shorten(f"{text.subject}\n\n{text.body}", MAX_LENGTH)


class ZaloError(SendError):
    """An application error of the OA API (`code`: Zalo's `error`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Zalo {code}: {reason}"[:500], permanent=code in PERMANENT)
        self.code = code


def post(settings: Settings, http: httpx.Client, out: Outgoing, token: str) -> None:
    """Send one consultation message with `token`; raises SendError (ZaloError) if refused."""
    payload = {"recipient": {"user_id": out.target},
               "message": {"text": plain_text(out.text)}}
    try:
        response = http.post(settings.zalo_api_url, json=payload,
                             headers={"access_token": token})
    except httpx.HTTPError as exc:
        raise request_error(exc, token) from None
    if not response.is_success:
        raise status_error(response, response.text[:200])
    try:
        answer = response.json()
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error == 0:
        return
    if not isinstance(error, int) or not isinstance(answer, dict):
        raise SendError(f"Zalo: unexpected answer {response.text[:200]!r}")
    raise ZaloError(error, answer.get("message") or PERMANENT.get(error, ""))


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: datetime | None  # None: unknown, used until Zalo refuses it

    def fresh(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at - MARGIN > now


def renew(settings: Settings, http: httpx.Client, refresh_token: str,
          ) -> tuple[Token, str]:
    """Ask Zalo for a new access token: (it, the next refresh token). Raises SendError:
    permanent when refused, transient when Zalo could not answer."""
    try:
        response = http.post(settings.zalo_oauth_url, headers={
            "secret_key": settings.zalo_app_secret}, data={
            "refresh_token": refresh_token, "app_id": settings.zalo_app_id,
            "grant_type": "refresh_token"})
    except httpx.HTTPError as exc:
        error = request_error(exc, refresh_token)
        raise SendError(f"Zalo token renewal: {error}"[:500]) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    answer = answer if isinstance(answer, dict) else {}
    access = answer.get("access_token")
    if response.is_success and isinstance(access, str) and access:
        rotated = answer.get("refresh_token")
        seconds = answer.get("expires_in")
        try:
            expires_at = datetime.now(UTC) + timedelta(seconds=float(seconds))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            expires_at = None
        return (Token(access, expires_at),
                rotated if isinstance(rotated, str) and rotated else refresh_token)
    if not response.is_success and not permanent_status(response.status_code):
        error = status_error(response, response.text[:200])
        raise SendError(f"Zalo token renewal: {error}"[:500], retry_after=error.retry_after)
    said = dict.fromkeys(str(answer[key]) for key in ("error", "error_name",
                                                      "error_description", "message")
                         if answer.get(key))  # in order, each once
    detail = " ".join(said) or f"HTTP {response.status_code} {response.text[:200]!r}"
    for secret in (refresh_token, settings.zalo_app_secret):
        detail = detail.replace(secret, "***") if secret else detail
    raise SendError(f"Zalo refused to renew the access token ({detail[:200]}): {ADVICE}"[:500],
                    permanent=True)


def seed(settings: Settings) -> str:
    return hashlib.sha256(settings.zalo_refresh_token.encode()).hexdigest()


def obtain(settings: Settings, http: httpx.Client, stale: str | None = None) -> Token:
    """The access token to use, renewed first when it expires within MARGIN or is `stale`
    (refused by Zalo); the stored row stays locked until the renewal is stored."""
    with connect(settings) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO channel_tokens (channel, access_token, refresh_token, seed_sha256)"
            " VALUES ('zalo', %s, %s, %s) ON CONFLICT (channel) DO NOTHING",
            (settings.zalo_access_token or None, settings.zalo_refresh_token, seed(settings)))
        access, expires_at, refresh_token, stored_seed = conn.execute(
            "SELECT access_token, expires_at, refresh_token, seed_sha256 FROM channel_tokens"
            " WHERE channel = 'zalo' FOR UPDATE").fetchone()  # type: ignore[misc]
        if stored_seed != seed(settings):  # a new refresh token setting: the OA re-authorized
            access, expires_at = settings.zalo_access_token or None, None
            refresh_token = settings.zalo_refresh_token
            conn.execute(
                "UPDATE channel_tokens SET access_token = %s, expires_at = NULL,"
                " refresh_token = %s, seed_sha256 = %s WHERE channel = 'zalo'",
                (access, refresh_token, seed(settings)))
        current = Token(access, expires_at) if access else None
        if current is not None and current.value != stale and current.fresh(datetime.now(UTC)):
            return current
        token, rotated = renew(settings, http, refresh_token)
        conn.execute(
            "UPDATE channel_tokens SET access_token = %s, expires_at = %s, refresh_token = %s,"
            " renewed_at = now() WHERE channel = 'zalo'",
            (token.value, token.expires_at, rotated))
    log.info("zalo access token renewed", expires_at=token.expires_at,
             refresh_token_rotated=rotated != refresh_token)
    return token


def sender(settings: Settings, http: httpx.Client) -> Sender:
    if not renewing(settings):
        def send_static(out: Outgoing) -> None:
            post(settings, http, out, settings.zalo_access_token)
        return send_static
    missing = [env for name, env in CREDENTIALS.items() if not getattr(settings, name)]
    if missing:
        def send_unset(out: Outgoing) -> None:
            raise SendError(f"Zalo: set {', '.join(missing)} too (renewing the access token"
                            f" needs {', '.join(CREDENTIALS.values())})", permanent=True)
        return send_unset

    held: Token | None = None  # this round's token, not to read the database for each row
    refused: SendError | None = None  # a refused renewal: the round's other rows fail alike

    def token(stale: str | None = None) -> str:
        nonlocal held, refused
        if refused is not None:
            raise refused
        if held is None or held.value == stale or not held.fresh(datetime.now(UTC)):
            try:
                held = obtain(settings, http, stale)
            except SendError as exc:
                if exc.permanent:
                    refused = exc
                raise
        return held.value

    def send(out: Outgoing) -> None:
        used = token()
        try:
            post(settings, http, out, used)
        except ZaloError as exc:
            if exc.code not in TOKEN_ERRORS:
                raise
            log.info("zalo access token refused, renewing", code=exc.code)
            post(settings, http, out, token(stale=used))
    return send
