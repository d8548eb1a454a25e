"""`ioc connectors list | run NAME [--once] [--config FILE]`."""

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from connectors import registry
from connectors.base import PermanentError
from ioc import logs
from ioc.settings import get_settings

app = typer.Typer(help="Connectors: source systems in, events out.", no_args_is_help=True)


@app.command("list")
def list_connectors() -> None:
    """Every connector known: built-in and installed by entry point, with its kind."""
    for name, target in sorted(registry.available().items()):
        try:
            kind, status = str(registry.load(name).kind), "ok"
        except registry.UnknownConnector as exc:
            kind, status = "-", f"error: {exc}"
        origin = "built-in" if name in registry.BUILTIN else "entry point"
        typer.echo(f"{name:<16} {kind:<13} {origin:<12} {target}  {status}")


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
    try:
        asyncio.run(connector.run(once=once))
    except PermanentError as exc:
        typer.echo(f"error: connector {name} stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
