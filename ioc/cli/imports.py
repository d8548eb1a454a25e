"""`ioc import FILE --kind dossiers|documents|evaluations [--dry-run] [--sheet NAME]`.

The reading and mapping is ioc/cli/bulk_import.py.

Exit status: 0 when every row was accepted, 1 when some were rejected (the table says which
and why), 2 when the file or the options cannot be used (nothing was published).
"""

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ioc.cli.bulk_import import (
    FileImport,
    FileRefused,
    ImportKind,
    Report,
    importer,
    records,
    template,
)
from ioc.cli.connectors import read_config
from ioc.core.settings import get_settings

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(2)


def show(report: Report, dry_run: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"rows": report.rows, "accepted": report.accepted,
                               "events": report.events, "dry_run": dry_run,
                               "rejected": [asdict(r) for r in report.rejected]},
                              ensure_ascii=False))
        return
    if report.rejected:
        table = Table("row", "field", "reason", title="rejected rows")
        for r in report.rejected:
            table.add_row(str(r.row), r.field, r.reason)
        console.print(table)
    verb = "would publish" if dry_run else "published"
    rejected = len({r.row for r in report.rejected})
    tail = " (dead-lettered)" if rejected and not dry_run else ""
    console.print(f"{report.rows} rows: {report.accepted} accepted, {verb} {report.events}"
                  f" events; {rejected} rejected{tail}", highlight=False)


def import_command(
    file: Annotated[Path | None, typer.Argument(
        help="A CSV (UTF-8) or XLSX export.", exists=True, dir_okay=False)] = None,
    kind: Annotated[ImportKind | None, typer.Option(help="What the rows are.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report what would be rejected and why; publish nothing.")] = False,
    sheet: Annotated[str | None, typer.Option(help="XLSX sheet (default: the first).")] = None,
    config: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="Options (agencies, own_organ_ids...), JSON/TOML.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as one JSON object.")
                       ] = False,
    template_of: Annotated[ImportKind | None, typer.Option(
        "--template", help="Print the CSV header of this kind and stop.")] = None,
) -> None:
    """Import historical dossiers, documents or evaluations from a CSV or XLSX export
    (idempotent)."""
    if template_of is not None:
        typer.echo(template(template_of), nl=False)
        return
    if file is None or kind is None:
        raise _fail("give FILE and --kind (or --template KIND)")
    settings = get_settings()
    try:
        job = importer(settings, kind, read_config(config) if config else None)
        rows, total = records(file, kind, sheet)
    except (FileRefused, ValidationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=errors, transient=as_json) as progress:
        task = progress.add_task("checking" if dry_run else "importing", total=total)
        job.start(rows, lambda n: progress.advance(task, n))
        try:
            report = job.check() if dry_run else _run(job)
        except FileRefused as exc:
            raise _fail(str(exc)) from None
        progress.update(task, total=report.rows, completed=report.rows)
    show(report, dry_run, as_json)
    if report.rejected:
        raise typer.Exit(1)


def _run(job: FileImport) -> Report:
    asyncio.run(job.run(once=True))
    return job.report
