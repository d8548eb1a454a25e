"""The `ioc` command."""

import asyncio
import json
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ioc.cli.alerts import app as alerts_app
from ioc.cli.connectors import app as connectors_app
from ioc.cli.dashboards import app as dashboards_app
from ioc.cli.imports import import_command
from ioc.cli.keys import app as keys_app
from ioc.core import logs
from ioc.core.settings import BrokerSetting, Settings, get_settings

app = typer.Typer(help="Streaming monitor of a provincial Intelligent Operations Center.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
broker_app = typer.Typer(help="The embedded stack's broker.", no_args_is_help=True)
schema_app = typer.Typer(help="Contracts: events and the HTTP API.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(connectors_app, name="connectors")
app.add_typer(alerts_app, name="alerts")
app.add_typer(keys_app, name="keys")
app.add_typer(topics_app, name="topics")
app.add_typer(broker_app, name="broker")
app.add_typer(schema_app, name="schema")
app.command("import")(import_command)
OPENAPI = Path("docs/openapi.json")
Seconds = Annotated[float | None, typer.Option(help="Stop after this many seconds.")]
Seed = Annotated[int, typer.Option(help="Same seed, same province traffic.")]
Rate = Annotated[float, typer.Option(help="Traffic volume (1 = a realistic province).")]
BrokerOption = Annotated[BrokerSetting | None, typer.Option(
    "--broker", help="apache-kafka or emulator (default: IOC_BROKER, else auto: Apache Kafka "
    "when Java ≥ 17 can run it).")]

console = Console()
errors = Console(stderr=True, soft_wrap=True)


@app.callback()
def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)


def fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(1)


def stack_settings(broker: BrokerSetting | None) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"broker": broker}) if broker else settings


@app.command()
def up(broker: BrokerOption = None) -> None:
    """Start the embedded stack (broker, PostgreSQL, worker, API) until Ctrl-C."""
    from ioc.embedded.stack import StackError, run_stack

    try:
        run_stack(stack_settings(broker))
    except StackError as exc:
        raise fail(str(exc)) from None


@app.command()
def demo(
    seconds: Seconds = None,
    seed: Seed = 0,
    speed: Annotated[float, typer.Option(
        help="Simulated seconds per real second (8640: a day every 10 s).")] = 8640,
    rate: Rate = 1,
    broker: BrokerOption = None,
) -> None:
    """Embedded stack + province simulator + live terminal wall; final KPIs at the end."""
    from ioc.embedded.demo import run_demo
    from ioc.embedded.stack import StackError

    try:
        final = run_demo(stack_settings(broker), seconds, seed, speed, rate)
    except StackError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        return
    show_kpis(final.kpis, as_json=False)


@app.command()
def simulate(
    seconds: Seconds = None,
    seed: Seed = 0,
    speed: Annotated[float, typer.Option(
        help="Simulated seconds per real second until the clock reaches now.")] = 60,
    rate: Rate = 1,
    history_hours: Annotated[float, typer.Option(help="Start this far in the past.")] = 24,
    directory: Annotated[Path | None, typer.Option(
        help="Write the simulated agencies here first, for the API's IOC_AGENCY_DIRECTORY."
    )] = None,
) -> None:
    """Publish a realistic province's traffic to the configured broker (a demo source)."""
    from datetime import UTC, datetime, timedelta

    from connectors.province import write_directory
    from connectors.simulator import Simulator, run

    settings = get_settings()
    simulator = Simulator(settings.province_code, seed=seed, speed=speed, rate=rate,
                          start=datetime.now(UTC) - timedelta(hours=history_hours))
    if directory is not None:
        written = write_directory(simulator.province, directory)
        errors.print(f"agency directory: {written} (IOC_AGENCY_DIRECTORY={written.resolve()})")
    with suppress(KeyboardInterrupt):
        asyncio.run(run(settings, simulator, seconds,
                        on_tick=lambda stats: errors.print(stats.line(), highlight=False)))


@app.command()
def worker() -> None:
    """Run the Faust worker against the configured broker and database."""
    from streams.worker import run

    run()


@app.command()
def api(workers: Annotated[int, typer.Option(
        min=1, help="API processes sharing the port (uvicorn workers); limits are per process"
        )] = 1) -> None:
    """Run the HTTP API (health, readiness, metrics)."""
    from ioc.api.app import serve
    from ioc.core.geography import PlaceError

    try:
        serve(get_settings(), workers)
    except PlaceError as exc:  # the agency directory or the boundaries file
        raise fail(str(exc)) from None


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply missing migrations (safe to run again)."""
    import psycopg

    from ioc.core.db import migrate

    try:
        applied = migrate(get_settings())
    except psycopg.OperationalError as exc:
        raise fail(f"cannot reach the database: {exc}") from None
    console.print(f"applied {applied}" if applied else "database schema is up to date")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the topics with IOC_PARTITIONS partitions (or grow them)."""
    from ioc.core.topics import TopicError, ensure_topics

    try:
        done = asyncio.run(ensure_topics(get_settings()))
    except TopicError as exc:
        raise fail(str(exc)) from None
    for name, state in done.items():
        console.print(f"{name}: {state}")


@broker_app.command("install")
def broker_install() -> None:
    """Install Apache Kafka's jars (Maven, the first time only) for `ioc up` and the tests."""
    from ioc.embedded.broker import InstallError
    from ioc.embedded.broker.install import install

    try:
        jars = install(get_settings().cache_dir, progress=errors.print)
    except InstallError as exc:
        raise fail(str(exc)) from None
    console.print(f"Apache Kafka's jars: {jars}")


@broker_app.command("which")
def broker_which(broker: BrokerOption = None) -> None:
    """Say which broker `ioc up` would run, and why."""
    from ioc.embedded.broker import InstallError, choose

    try:
        choice = choose(stack_settings(broker).broker, get_settings().cache_dir)
    except InstallError as exc:
        raise fail(str(exc)) from None
    console.print(f"{choice.kind}: {choice.reason}")


@schema_app.command("export")
def schema_export(directory: Path) -> None:
    """Write the JSON Schema of every event kind (and of the connectors' status events), for
    connector authors in any language."""
    from connectors.status import ConnectorStatusEvent
    from ioc.core.events import EVENT_TYPES

    directory.mkdir(parents=True, exist_ok=True)
    models = {kind.value: model for kind, model in EVENT_TYPES.items()}
    for name, model in {**models, "connector_status": ConnectorStatusEvent}.items():
        path = directory / f"{name}.schema.json"
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  **model.model_json_schema()}
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {path}")


@schema_app.command("openapi")
def schema_openapi(
    out: Annotated[Path, typer.Option(help="Where the document is committed.")] = OPENAPI,
    check: Annotated[bool, typer.Option(help="Fail when it differs from the code.")] = False,
) -> None:
    """Write the HTTP API's OpenAPI document (or, with --check, compare it)."""
    from ioc.api.app import openapi_document

    document = openapi_document()
    if check:
        if not out.exists():  # a repository file (for review and the fuzz tests), not package data
            raise fail(f"{out}: no such file; run in the repository, or pass --out")
        if out.read_text(encoding="utf-8") != document:
            raise fail(f"{out} is not what the code serves: run `ioc schema openapi`")
        console.print(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    console.print(f"wrote {out}")


# `ioc kpis` times: local time, or with a zone (2026-10-31T17:00:00+07:00).
WHEN_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%d %H:%M:%S%z"]


@app.command()
def kpis(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    unit: Annotated[str | None, typer.Option(help="Province or commune/ward code.")] = None,
    agency: Annotated[str | None, typer.Option(help="Agency code.")] = None,
    since: Annotated[datetime | None, typer.Option(
        help="Counted from (received/requested), local time unless a zone is given.",
        formats=WHEN_FORMATS)] = None,
    until: Annotated[datetime | None, typer.Option(help="... up to, excluded.",
                                                   formats=WHEN_FORMATS)] = None,
    as_of: Annotated[datetime | None, typer.Option(
        "--as-of", help="Evaluated as of this moment (late, open...); default: the period's "
        "end when past, else now.", formats=WHEN_FORMATS)] = None,
) -> None:
    """Show the KPIs (the catalogue: ioc/core/kpis.py; definitions: docs/domain.md)."""
    import psycopg

    from ioc.core.events import implausible
    from ioc.core.kpis import read_kpis

    settings = get_settings()
    local = ZoneInfo(settings.timezone)
    since, until, as_of = (t.replace(tzinfo=local) if t and t.tzinfo is None else t
                           for t in (since, until, as_of))
    if as_of is not None and (reason := implausible(as_of)):
        raise fail(f"--as-of {as_of.isoformat()}: {reason}")
    try:
        result = read_kpis(settings, since=since, until=until, unit=unit, agency=agency,
                           as_of=as_of)
    except psycopg.OperationalError as exc:
        raise fail(f"cannot reach the database: {exc}") from None
    show_kpis(result, as_json)


def show_kpis(result: dict[str, dict[str, object]], as_json: bool) -> None:
    """One table per family: each KPI's name, value and unit, target and label (the catalogue);
    next to a value, the part of its inputs that was not received (JSON: `missing`)."""
    from ioc.core.kpis import FUNCTIONS, find, missing_inputs

    if as_json:
        typer.echo(json.dumps({**result, "missing": missing_inputs(result)}, default=str,
                              ensure_ascii=False))
        return
    for family, values in result.items():
        table = Table(title=family.replace("_", " "))
        table.add_column("KPI", no_wrap=True)
        table.add_column("giá trị")  # wraps: what the value lacks may follow it
        table.add_column("chỉ tiêu", no_wrap=True)
        table.add_column("tên")
        for column in values:
            kpi = find(FUNCTIONS[family], column)
            target = kpi.target_text() + (" (QĐ 766)" if kpi.target_766 is not None else "")
            table.add_row(column, kpi.shown_in(values), target, kpi.label)
        console.print(table)
