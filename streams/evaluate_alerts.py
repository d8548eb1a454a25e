"""Alert rules evaluated by the worker: a timer every `alert_evaluate_seconds` (default 15)
loads the rules (settings.alert_rules, by default the rules the package ships; re-read each
time so edits take effect), evaluates them (ioc.alerts.evaluate, in a thread: psycopg is
blocking) and logs the transitions. When a
channel is configured (smtp_host, telegram_bot_token, zalo_access_token or
alert_webhook_secret), it then queues the new transitions and sends what is due
(ioc.alerts.deliver). Nothing raised escapes: a failed round is logged and the next one runs.
"""

import asyncio
from datetime import UTC, datetime

import structlog

from ioc.alerts.deliver import configured, enqueue_and_deliver
from ioc.alerts.email import SmtpConfig
from ioc.alerts.evaluate import evaluate
from ioc.alerts.rulefile import RuleFileError
from ioc.alerts.rules import load_rules
from streams.app import app, settings

log = structlog.get_logger()


EVALUATE_SECONDS = settings.alert_evaluate_seconds


def evaluate_once(now: datetime) -> None:
    """One round (blocking): evaluate, log transitions, queue and send the messages."""
    if not settings.alert_rules.exists():  # the packaged default exists: a wrong setting
        log.warning("alert rules not found", path=str(settings.alert_rules))
        return
    try:
        rules = load_rules(settings.alert_rules)
    except RuleFileError as exc:
        log.error("alert rules not loaded", errors=[str(e) for e in exc.errors])
        return
    if not rules:
        return
    for t in evaluate(settings, rules, now):
        log.info("alert transition", rule=t.rule, scope=t.scope, previous=t.previous,
                 state=t.state, value=None if t.value is None else str(t.value),
                 threshold=str(t.threshold), severity=t.severity)
    config = SmtpConfig.from_settings(settings)
    if configured(settings, config):  # any channel: e-mail, Telegram, Zalo, webhook
        enqueue_and_deliver(settings, config, now, rules)


@app.timer(interval=EVALUATE_SECONDS)
async def evaluate_alerts() -> None:
    try:
        await asyncio.to_thread(evaluate_once, datetime.now(UTC))
    except Exception as exc:  # the timer must keep running
        log.exception("alert evaluation failed", error=str(exc))
