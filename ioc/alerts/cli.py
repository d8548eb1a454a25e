"""`ioc alerts`: validate the rule files, list rules and their states, test one rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import psycopg
import typer
from rich.console import Console
from rich.text import Text

from ioc.alerts.evaluate import current_states, measure_all, plan
from ioc.alerts.rules import Rule, RuleFileError, human, load_rules
from ioc.db import connect
from ioc.settings import get_settings

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
    """The rules and the current state of each (rule, scope)."""
    rules = _load(rules_dir)
    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    try:
        with connect(settings) as conn:
            states = current_states(conn, [r.name for r in rules])
    except psycopg.Error as exc:
        errors.print(Text.assemble(("warning: ", "yellow"), f"no states: {exc}".strip()))
        states = {}
    for rule in rules:
        console.print(f"{rule.name}: {rule.metric} {rule.comparison} {rule.threshold}, "
                      f"{rule.scope}, {rule.window}, for {human(rule.for_)}, {rule.severity} "
                      f"-> {', '.join(rule.recipients)}")
        mine = sorted((scope, c) for (name, scope), c in states.items() if name == rule.name)
        for scope, c in mine:
            console.print(f"  {c.state} {scope} since {c.at.astimezone(tz):%Y-%m-%d %H:%M}")
        if not mine:
            console.print("  ok")


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
