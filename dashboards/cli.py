"""`ioc dashboards ...`: dashboards as code."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Grafana dashboards, generated from code.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Grafana dashboards, generated from code."""


@app.command()
def build(
    check: Annotated[bool, typer.Option("--check", help="Fail if a committed file is stale.")]
    = False,
) -> None:
    """Write dashboards/json/*.json from the code (or, with --check, compare)."""
    from dashboards import build as builder

    if check:
        stale = builder.check()
        for path in stale:
            typer.echo(f"stale: {path} (run `ioc dashboards build`)", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in builder.build():
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
