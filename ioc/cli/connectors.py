"""`ioc connectors list | run NAME [--once] [--config FILE] [--metrics-port N] | new NAME`."""

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from pydantic import ValidationError

from connectors import registry
from connectors.base import PermanentError
from connectors.endpoint import Endpoint
from connectors.scaffold import ScaffoldError, scaffold
from connectors.status import StatusRow, load_statuses
from ioc.core import logs
from ioc.core.events import Kind
from ioc.core.settings import get_settings

app = typer.Typer(help="Connectors: source systems in, events out.", no_args_is_help=True)


@app.command("list")
def list_connectors() -> None:
    """Every connector known (built-in or by entry point): kind, status, last success.

    The status is the one its last run stored in PostgreSQL (`connector_status`): ok,
    degraded, silent or stopped (with the reason); `never run`; `unknown` when the database
    cannot be read.
    """
    try:
        statuses: dict[str, StatusRow] | None = load_statuses(get_settings())
    except psycopg.Error as exc:
        statuses = None
        typer.echo(f"warning: no status, the database cannot be read: {exc}".strip(), err=True)
    for name, target in sorted(registry.available().items()):
        origin = "built-in" if name in registry.BUILTIN else "entry point"
        try:
            kind = str(registry.load(name).kind)
        except registry.UnknownConnector as exc:
            typer.echo(f"{name:<16} {'-':<13} {origin:<12} {'broken':<9} {'-':<20} {target}"
                       f"  {exc}")
            continue
        row = statuses.get(name) if statuses is not None else None
        status = str(row.health) if row else ("never run" if statuses is not None else "unknown")
        success = row.last_success_at.strftime("%Y-%m-%dT%H:%M:%SZ") \
            if row and row.last_success_at else "-"
        reason = f"  ({row.reason})" if row and row.reason else ""
        typer.echo(f"{name:<16} {kind:<13} {origin:<12} {status:<9} {success:<20} {target}"
                   f"{reason}")


def read_config(path: Path) -> dict[str, Any]:
    """A connector's options from a JSON or TOML file (a top-level table/object)."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: the options are an object/table at the top level")
    return data


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Short name, see `ioc connectors list`.")],
    once: Annotated[bool, typer.Option(help="Stop when the source has nothing new.")] = False,
    config: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                help="Options, JSON or TOML.")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve /metrics (Prometheus) and /healthz on this port while running.")] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run one connector until Ctrl-C (or, with --once, until it has read everything new)."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    try:
        cls = registry.load(name)
        connector = cls(settings, read_config(config) if config else None)
    except (registry.UnknownConnector, ValidationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    endpoint = Endpoint(connector, metrics_host, metrics_port).start() \
        if metrics_port is not None else None
    try:
        asyncio.run(connector.run(once=once))
    except PermanentError as exc:
        typer.echo(f"error: connector {name} stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        if endpoint is not None:
            endpoint.stop()


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Short name: lower case, digits, _ (e.g. hue).")],
    kind: Annotated[Kind, typer.Option(help="The events it publishes.")] = Kind.DOSSIER,
    directory: Annotated[Path, typer.Option("--dir", file_okay=False,
                                            help="Project root to write into.")] = Path("."),
) -> None:
    """Write connectors/NAME.py and tests/connectors/test_connector_NAME.py from the templates."""
    try:
        done = scaffold(name, kind, directory)
    except ScaffoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    module = f"connectors.{name}:{done.class_name}"
    typer.echo(f"wrote {done.connector}\nwrote {done.test}\n\nNext:\n"
               f"  1. pytest {done.test} -q   (passes as generated: a local server serves"
               " sample records)\n"
               f"  2. adapt fetch() to the source's API and map() to its records, and the"
               " samples and server of the test to match\n"
               f"  3. register it: in connectors/registry.py add to BUILTIN\n"
               f'       "{name}": "{module}",\n'
               f"     or, from another package, in its pyproject.toml\n"
               f'       [project.entry-points."ioc.connectors"]\n'
               f'       {name} = "<package>.{name}:{done.class_name}"\n'
               f"  4. ioc connectors list; ioc connectors run {name} --once --config {name}.toml"
               f"   (base_url = ...)")
