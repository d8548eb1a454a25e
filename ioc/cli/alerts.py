"""`ioc alerts`: validate the rule files, list rules and their alerts, test one rule,
acknowledge or silence an alert."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import psycopg
import typer
from rich.console import Console
from rich.text import Text

from ioc.alerts.ack import (
    Alert,
    AlertConflict,
    AlertNotFound,
    Outcome,
    Ref,
    acknowledge,
    current_alerts,
    silence,
)
from ioc.alerts.evaluate import current_states, measure_all, plan
from ioc.alerts.grammar import human, parse_duration
from ioc.alerts.rulefile import RuleFileError
from ioc.alerts.rules import Rule, load_rules
from ioc.core.db import connect
from ioc.core.settings import get_settings

app = typer.Typer(help="Threshold alerts on the KPIs.", no_args_is_help=True)

RulesDir = Annotated[Path, typer.Option(
    "--rules", envvar="IOC_ALERT_RULES", help="Rule file or directory of *.yaml rule files.")]
DEFAULT_RULES = get_settings().alert_rules

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _load(rules_dir: Path) -> list[Rule]:
    if not rules_dir.exists():
        errors.print(Text.assemble(("error: ", "red"), f"{rules_dir}: no such file or directory"))
        raise typer.Exit(1)
    try:
        return load_rules(rules_dir)
    except RuleFileError as exc:
        for error in exc.errors:
            errors.print(Text.assemble(("error: ", "red"), str(error)))
        raise typer.Exit(1) from None


def _parse_at(at: str | None, tz: ZoneInfo) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(at)
    except ValueError:
        errors.print(Text.assemble(("error: ", "red"), f"--at: {at!r} is not an ISO 8601 time"))
        raise typer.Exit(1) from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


@app.command()
def validate(rules_dir: RulesDir = DEFAULT_RULES) -> None:
    """Check every rule file; errors name file:line: field. Exit 1 on any error."""
    rules = _load(rules_dir)
    console.print(f"{len(rules)} rules OK in {rules_dir}")


@app.command("list")
def list_rules(rules_dir: RulesDir = DEFAULT_RULES) -> None:
    """The rules and the current state of each (rule, scope), with the id, value and who
    acknowledged or silenced it for alerts that fired (the id is what `ack` takes)."""
    rules = _load(rules_dir)
    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    try:
        with connect(settings) as conn:
            states = current_states(conn, [r.name for r in rules])
            alerts = {(a.rule, a.scope): a for a in current_alerts(conn)}
    except psycopg.Error as exc:
        errors.print(Text.assemble(("warning: ", "yellow"), f"no states: {exc}".strip()))
        states, alerts = {}, {}
    for rule in rules:
        console.print(f"{rule.name}: {rule.metric} {rule.comparison} {rule.threshold}, "
                      f"{rule.scope}, {rule.window}, for {human(rule.for_)}, {rule.severity} "
                      f"-> {', '.join(rule.recipients)}")
        mine = sorted((scope, c) for (name, scope), c in states.items() if name == rule.name)
        for scope, c in mine:
            alert = alerts.get((rule.name, scope))
            since = alert.since if alert else c.at
            console.print(f"  {c.state} {scope} since {since.astimezone(tz):%Y-%m-%d %H:%M}"
                          f"{_details(alert, tz)}")
        if not mine:
            console.print("  ok")
    names = {rule.name for rule in rules}
    for alert in (a for (name, _), a in alerts.items() if name not in names):
        console.print(f"{alert.rule} (not in {rules_dir}): {alert.state} {alert.scope} since "
                      f"{alert.since.astimezone(tz):%Y-%m-%d %H:%M}{_details(alert, tz)}")


def _details(alert: Alert | None, tz: ZoneInfo) -> str:
    """`, value V, id N` and who acknowledged or silenced it, until when, why."""
    if alert is None:
        return ""
    value = "no data" if alert.value is None else str(alert.value)
    text = f", value {value}, id {alert.id}"
    if alert.silenced_until:
        text += f", until {alert.silenced_until.astimezone(tz):%Y-%m-%d %H:%M}"
    if alert.actor:
        text += f", by {alert.actor}"
    return text + (f": {alert.note}" if alert.note else "")


@app.command()
def test(
    rule_name: Annotated[str, typer.Argument(metavar="RULE", help="The rule's name.")],
    rules_dir: RulesDir = DEFAULT_RULES,
    at: Annotated[str | None, typer.Option(help="Evaluate at this time (default: now).")] = None,
) -> None:
    """Evaluate one rule now: print each scope's value, what fires and to whom. Writes nothing."""
    rules = [r for r in _load(rules_dir) if r.name == rule_name]
    if not rules:
        errors.print(Text.assemble(("error: ", "red"), f"no rule named {rule_name!r}"))
        raise typer.Exit(1)
    rule, settings = rules[0], get_settings()
    tz = ZoneInfo(settings.timezone)
    now = _parse_at(at, tz)
    try:
        measurements = measure_all(settings, rules, now)
        with connect(settings) as conn:
            states = current_states(conn, [rule.name])
    except psycopg.Error as exc:
        errors.print(Text.assemble(("error: ", "red"), f"database: {exc}".strip()))
        raise typer.Exit(1) from None
    transitions = {t.scope: t for t in plan(rules, measurements, states, now, tz)}
    since, until = rule.window.bounds(now, tz)
    console.print(f"{rule.name}: {rule.metric} {rule.comparison} {rule.threshold}, "
                  f"{rule.scope}, window {since.astimezone(tz):%Y-%m-%d %H:%M} – "
                  f"{until.astimezone(tz):%Y-%m-%d %H:%M}, for {human(rule.for_)}")
    firing = [m for m in measurements if m.breached]
    for m in measurements:
        value = "no data" if m.value is None else str(m.value)
        mark = "FIRE" if m.breached else "ok  "
        current = states.get((rule.name, m.scope))
        note = f" (now {current.state})" if current else ""
        if m.scope in transitions:
            note += f" -> {transitions[m.scope].state}"
        console.print(f"{mark} {m.scope}: {value}{note}")
    if firing:
        notify = rule.notify_after(now, tz)
        when = "at once" if notify == now else f"after {notify.astimezone(tz):%Y-%m-%d %H:%M}"
        wait = f", once true for {human(rule.for_)}" if rule.for_.total_seconds() else ""
        console.print(f"{len(firing)} would fire ({rule.severity}) to "
                      f"{', '.join(rule.recipients)}, {when}{wait}")
    else:
        console.print("nothing would fire")


AlertId = Annotated[str, typer.Argument(
    metavar="ID", help="The alert's id (`ioc alerts list`), or RULE/SCOPE, e.g."
    " on-time/agency:000.00.12.H25.")]
Note = Annotated[str | None, typer.Option(help="Why, for the record.")]


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _act(action: Callable[[Ref], Outcome], alert_id: str) -> Outcome:
    try:
        return action(Ref.parse(alert_id))
    except (ValueError, AlertNotFound, AlertConflict) as exc:
        errors.print(Text.assemble(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    except psycopg.Error as exc:
        errors.print(Text.assemble(("error: ", "red"), f"database: {exc}".strip()))
        raise typer.Exit(1) from None


@app.command()
def ack(alert_id: AlertId, note: Note = None) -> None:
    """Acknowledge a firing alert: no reminder until it resolves (then a resolved message)."""
    settings = get_settings()
    outcome = _act(lambda ref: acknowledge(settings, ref, _actor(), note, datetime.now(UTC)),
                   alert_id)
    alert = outcome.alert
    if outcome.changed:
        console.print(f"acknowledged {alert.id}: {alert.rule} {alert.scope}")
    else:
        console.print(f"{alert.id}: {alert.rule} {alert.scope} was already acknowledged"
                      f" by {alert.actor}")


@app.command("silence")
def silence_(
    alert_id: AlertId,
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1 day...")],
    note: Note = None,
) -> None:
    """Silence an alert for a while: no message; then it fires again if it still holds."""
    try:
        length = parse_duration(for_)
    except ValueError as exc:
        errors.print(Text.assemble(("error: ", "red"), f"--for: {exc}"))
        raise typer.Exit(1) from None
    if length <= timedelta(0):
        errors.print(Text.assemble(("error: ", "red"), "--for: must be longer than 0"))
        raise typer.Exit(1)
    settings = get_settings()
    now = datetime.now(UTC)
    outcome = _act(lambda ref: silence(settings, ref, now + length, _actor(), note, now),
                   alert_id)
    alert, tz = outcome.alert, ZoneInfo(settings.timezone)
    assert alert.silenced_until is not None
    console.print(f"silenced {alert.id}: {alert.rule} {alert.scope} until "
                  f"{alert.silenced_until.astimezone(tz):%Y-%m-%d %H:%M}")
