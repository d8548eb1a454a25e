"""HTTP routes of alerts: list the current ones, acknowledge or silence one.

    GET  /alerts                      current alerts (JSON), key scope `alerts:read`
    POST /alerts/{id}/ack             body {"note"} optional, key scope `alerts:ack`
    POST /alerts/{id}/silence         body {"duration": "2h", "note"}, key scope `alerts:ack`
    GET  /alerts/{id}/ack?exp=&sig=   the one-click link of an alert message (links.py): no
                                      key; a page in Vietnamese asking to confirm, with a
                                      button that POSTs the same link, which acknowledges.
                                      GET changes nothing: mail scanners prefetch links.

Errors: 401/403 key, 404 unknown id, 409 resolved or not firing yet, 400 a body that is no
JSON, nests too deep or holds a NUL character, 422 a bad field (naming it), 503 database
down; a link: 403 bad signature, 410 expired, 404 links disabled.
"""

import asyncio
import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import psycopg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ioc.alerts import ack as actions
from ioc.alerts import links
from ioc.alerts.grammar import human, parse_duration
from ioc.alerts.message import scope_text
from ioc.api.auth import require_key
from ioc.api.keys import ApiKey
from ioc.core.db import connect
from ioc.core.inputs import BadInput, loads
from ioc.core.settings import Settings

log = structlog.get_logger()

SCOPE_READ = "alerts:read"
SCOPE_ACK = "alerts:ack"
LONGEST_SILENCE = timedelta(days=30)
LINK_ACTOR = "liên kết trong tin cảnh báo"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str | None = Field(None, max_length=1000)


class SilenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    duration: timedelta = Field(description="e.g. '2h', '90 minutes', '1 day' or seconds")
    note: str | None = Field(None, max_length=1000)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        length = parse_duration(value)
        if length <= timedelta(0) or length > LONGEST_SILENCE:
            raise ValueError(f"between 1 second and {human(LONGEST_SILENCE)}")
        return length


async def _run(settings: Settings, work: Callable[[], T]) -> T:
    """Blocking database work in a thread; its refusals become 404/409, an outage 503."""
    try:
        return await asyncio.to_thread(work)
    except actions.AlertNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except actions.AlertConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except psycopg.Error as exc:
        log.warning("alerts: database error", error=type(exc).__name__)
        raise HTTPException(503, "alerts cannot be read or changed now; try again") from None


def _page(status: int, title: str, text: str, form: str = "") -> HTMLResponse:
    body = (f'<!doctype html><html lang="vi"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex">'
            f"<title>{html.escape(title)}</title></head>"
            f'<body style="font-family:sans-serif;max-width:36em;margin:3em auto">'
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>")
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _body(raw: bytes, model: type[M]) -> M:
    """A JSON body as `model`: 400 when it is no JSON, too deep or holds a NUL; 422 naming the
    field the model refuses (as FastAPI would)."""
    try:
        data = loads(raw) if raw.strip() else {}
    except BadInput as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])}  # never echoed: Infinity is no JSON
             for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        ) from None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that parses its own JSON body."""
    return {"requestBody": {"required": False, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


def _described(alert: actions.Alert) -> str:
    return f"{alert.rule} – {scope_text(alert.scope)}"


def alerts_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/alerts", tags=["alerts"])
    reader = Annotated[ApiKey, Depends(require_key(SCOPE_READ))]
    writer = Annotated[ApiKey, Depends(require_key(SCOPE_ACK))]
    ack_key = require_key(SCOPE_ACK)

    def connected(work: Callable[[psycopg.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            with connect(settings, connect_timeout=5) as conn:
                return work(conn)
        return run

    @router.get("")
    async def list_alerts(key: reader) -> list[dict[str, object]]:
        """The alerts that have fired and not resolved (firing, acknowledged, silenced)."""
        found = await _run(settings, connected(actions.current_alerts))
        return [a.as_json() for a in found]

    async def link_ack(alert_id: int, exp: str | None, sig: str | None,
                       confirmed: bool) -> HTMLResponse:
        if not links.enabled(settings):
            return _page(404, "Liên kết không dùng được",
                         "Hệ thống chưa bật liên kết xác nhận cảnh báo.")
        try:
            expiry = int(exp or "")
        except ValueError:
            expiry = -1
        if expiry < 0 or not sig or not links.verify(settings, alert_id, expiry, sig):
            return _page(403, "Liên kết không hợp lệ",
                         "Liên kết xác nhận bị sai hoặc không đầy đủ. Hãy dùng đúng liên kết"
                         " trong tin cảnh báo.")
        now = datetime.now(UTC)
        if links.expired(expiry, now):
            return _page(410, "Liên kết đã hết hạn",
                         "Liên kết xác nhận này đã hết hạn. Hãy dùng liên kết trong tin nhắc"
                         " lại mới nhất, hoặc lệnh `ioc alerts ack`.")
        if not confirmed:
            query = html.escape(urlencode({"exp": expiry, "sig": sig}))
            return _page(200, "Xác nhận cảnh báo?",
                         f"Bấm nút dưới đây để xác nhận cảnh báo số {alert_id}: hệ thống sẽ"
                         " không nhắc lại cho đến khi hết cảnh báo.",
                         f'<form method="post" action="?{query}">'
                         f'<button type="submit">Xác nhận cảnh báo</button></form>')
        try:
            outcome = await _run(settings, lambda: actions.acknowledge(
                settings, actions.Ref(seq=alert_id), LINK_ACTOR, None, now))
        except HTTPException as exc:
            if exc.status_code == 404:
                return _page(404, "Không tìm thấy cảnh báo",
                             f"Không có cảnh báo số {alert_id}.")
            if exc.status_code == 409:
                return _page(409, "Cảnh báo đã kết thúc",
                             "Cảnh báo này đã hết (chỉ số đã trở lại bình thường) hoặc chưa"
                             " phát; không cần xác nhận.")
            return _page(exc.status_code, "Chưa xác nhận được",
                         "Hệ thống đang bận; hãy thử lại sau ít phút.")
        alert = outcome.alert
        log.info("alert acknowledged", id=alert.id, rule=alert.rule, scope=alert.scope,
                 actor=LINK_ACTOR, changed=outcome.changed)
        if not outcome.changed:
            return _page(200, "Cảnh báo đã được xác nhận trước đó",
                         f"Cảnh báo {_described(alert)} đã được xác nhận; sẽ không nhắc lại"
                         " cho đến khi hết cảnh báo.")
        return _page(200, "Đã xác nhận cảnh báo",
                     f"Đã xác nhận cảnh báo {_described(alert)}. Hệ thống sẽ không nhắc lại"
                     " cho đến khi hết cảnh báo, và sẽ báo khi chỉ số trở lại bình thường.")

    @router.get("/{alert_id}/ack", response_class=HTMLResponse)
    async def ack_by_link(alert_id: int, exp: str | None = None,
                          sig: str | None = None) -> HTMLResponse:
        """The one-click link of an alert message (signed, expiring; no API key): a page
        asking to confirm; nothing changes until its button POSTs."""
        return await link_ack(alert_id, exp, sig, confirmed=False)

    @router.post("/{alert_id}/ack", openapi_extra=_schema(AckBody))
    async def ack(request: Request, alert_id: int, exp: str | None = None,
                  sig: str | None = None) -> Any:
        """Acknowledge with an API key (`alerts:ack`), body {"note": ...} optional; or, with
        `exp` and `sig`, as the one-click link (its confirmation button)."""
        if exp is not None or sig is not None:
            return await link_ack(alert_id, exp, sig, confirmed=True)
        key = await ack_key(request)
        body = _body(await request.body(), AckBody)
        outcome = await _run(settings, lambda: actions.acknowledge(
            settings, actions.Ref(seq=alert_id), f"key:{key.name}", body.note, datetime.now(UTC)))
        log.info("alert acknowledged", id=outcome.alert.id, rule=outcome.alert.rule,
                 scope=outcome.alert.scope, actor=f"key:{key.name}", changed=outcome.changed)
        return {"changed": outcome.changed, "alert": outcome.alert.as_json()}

    @router.post("/{alert_id}/silence", openapi_extra=_schema(SilenceBody))
    async def silence_alert(request: Request, alert_id: int, key: writer) -> Any:
        """Silence for `duration` with an API key (`alerts:ack`)."""
        body = _body(await request.body(), SilenceBody)
        now = datetime.now(UTC)
        outcome = await _run(settings, lambda: actions.silence(
            settings, actions.Ref(seq=alert_id), now + body.duration, f"key:{key.name}", body.note,
            now))
        log.info("alert silenced", id=outcome.alert.id, rule=outcome.alert.rule,
                 scope=outcome.alert.scope, actor=f"key:{key.name}",
                 until=str(outcome.alert.silenced_until))
        return {"changed": outcome.changed, "alert": outcome.alert.as_json()}

    return router

