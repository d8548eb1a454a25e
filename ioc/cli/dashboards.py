"""`ioc dashboards ...`: dashboards as code."""

from __future__ import annotations

from pathlib import Path
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
    """Write dashboards/json/*.json and the Grafana alert rules from the code (or, with
    --check, compare)."""
    from dashboards import build as builder

    if check:
        stale = builder.check_all()
        for path in stale:
            typer.echo(f"stale: {path} (run `ioc dashboards build`)", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in builder.build_all():
        typer.echo(f"wrote {path}")


@app.command()
def push(
    url: Annotated[str | None, typer.Option(help="Grafana's base URL [IOC_GRAFANA_URL].")]
    = None,
    token: Annotated[str | None, typer.Option(
        help="Service account token [IOC_GRAFANA_TOKEN].")] = None,
    user: Annotated[str | None, typer.Option(help="Admin user [IOC_GRAFANA_USER].")] = None,
    password: Annotated[str | None, typer.Option(
        help="Admin password [IOC_GRAFANA_PASSWORD].")] = None,
) -> None:
    """Upload the folder, datasource and dashboards to a running Grafana (idempotent)."""
    from dashboards import push as pusher
    from ioc.core.settings import Settings

    given = {"grafana_url": url, "grafana_token": token, "grafana_user": user,
             "grafana_password": password}
    if user is not None and token is None:  # a user given here wins over a token in the env
        given["grafana_token"] = ""
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    try:
        done = pusher.push(settings)
    except pusher.PushError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if done.folder_created:
        typer.echo(f"created folder {pusher.folder()[1]}")
    typer.echo(f"datasource {pusher.datasource(settings)['uid']}: {done.datasource}")
    for name in done.dashboards:
        typer.echo(f"pushed {name}")


@app.command()
def render(
    dashboard: Annotated[str, typer.Option(help="Which dashboards/json/<name>.json.")]
    = "overview",
    out: Annotated[Path | None, typer.Option(
        help="PNG to write [default: docs/<name>-layout.png].")] = None,
) -> None:
    """Draw a dashboard's grid layout (panels, titles, rows) to a PNG for review."""
    from dashboards import render as renderer

    if not (renderer.JSON_DIR / f"{dashboard}.json").is_file():
        known = ", ".join(sorted(p.stem for p in renderer.JSON_DIR.glob("*.json")))
        typer.echo(f"error: no dashboard {dashboard!r}; known: {known}", err=True)
        raise typer.Exit(1)
    path = renderer.render_file(dashboard, out or Path("docs") / f"{dashboard}-layout.png")
    typer.echo(f"wrote {path} ({path.stat().st_size // 1024} KB)")
if __name__ == "__main__":
    app()
