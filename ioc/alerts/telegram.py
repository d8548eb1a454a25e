"""Alert messages through a Telegram bot (recipients `telegram:<chat id>`).

Bot API (https://core.telegram.org/bots/api#sendmessage, #making-requests,
#responseparameters): `POST {telegram_api_url}/bot<token>/sendMessage` with JSON `chat_id`
(an integer, negative for groups, or `@channelusername`), `text` (1-4096 characters after
entity parsing) and `parse_mode: "HTML"` (only <b>, <i>, <a>... tags; `<`, `>`, `&` escaped).
The answer is JSON `{"ok": true, "result": Message}` or `{"ok": false, "error_code": 400,
"description": "Bad Request: chat not found", "parameters": {"retry_after": 5}}`, with the
error code as the HTTP status: 429 is flood control, `parameters.retry_after` the seconds to
wait (used as the backoff); 400/401/403 (chat not found, bad token, bot blocked or removed)
are permanent.

The bot must be a member of the group (or have been started by the person) it writes to. The
token is part of the URL: it is masked in every error kept or logged.
"""

from __future__ import annotations

import html

import httpx

from ioc.alerts.message import Text, shorten, utf16_len
from ioc.alerts.transport import Outgoing, Sender, SendError, permanent_status, request_error
from ioc.core.settings import Settings

MAX_LENGTH = 4096


def configured(settings: Settings) -> bool:
    return bool(settings.telegram_bot_token)


def html_text(text: Text) -> str:
    """The message in Telegram's HTML: the subject in bold, everything escaped; at most
    MAX_LENGTH characters once parsed (the body is shortened when needed)."""
    room = MAX_LENGTH - utf16_len(text.subject) - 2
    body = shorten(text.body, max(room, 1))
    return f"<b>{html.escape(text.subject, quote=False)}</b>\n\n{html.escape(body, quote=False)}"


def chat_id(target: str) -> int | str:
    return int(target) if target.lstrip("-").isdigit() else target


def sender(settings: Settings, http: httpx.Client) -> Sender:
    token = settings.telegram_bot_token
    url = f"{settings.telegram_api_url.rstrip('/')}/bot{token}/sendMessage"

    def send(out: Outgoing) -> None:
        payload = {"chat_id": chat_id(out.target), "text": html_text(out.text),
                   "parse_mode": "HTML"}
        try:
            response = http.post(url, json=payload)
        except httpx.HTTPError as exc:
            raise request_error(exc, token) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if response.is_success and answer.get("ok") is True:
            return
        code = answer.get("error_code", response.status_code)
        code = code if isinstance(code, int) else response.status_code
        parameters = answer.get("parameters") or {}
        reason = f"Telegram {code}: {answer.get('description') or response.reason_phrase}"
        if "migrate_to_chat_id" in parameters:  # a group became a supergroup
            reason += f" (new chat id: telegram:{parameters['migrate_to_chat_id']})"
        retry_after = parameters.get("retry_after")
        raise SendError(reason.replace(token, "***")[:500],
                        permanent=code != 429 and permanent_status(code),
                        retry_after=float(retry_after) if isinstance(retry_after, int | float)
                        else None)
    return send
