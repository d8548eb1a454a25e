"""Generate the provisioned dashboards (dashboards/json/*.json) from the code, or check them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.models import dashboard as model

from dashboards import (
    JSON_DIR,
    alerting,
    annotations,
    documents,
    dossiers,
    field_reports,
    overview,
    pipeline,
    ranking,
)
from dashboards.sdk import dumps

DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {
    "overview.json": overview.build, "ranking.json": ranking.build, "pipeline.json": pipeline.build,
    "dossiers.json": dossiers.build, "documents.json": documents.build,
    "field_reports.json": field_reports.build}


def generate() -> dict[str, str]:
    """File name -> the JSON text the code generates (stable: sorted keys, fixed ids)."""
    return {name: dumps(annotations.add(make())) for name, make in DASHBOARDS.items()}


def build(directory: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check(directory: Path = JSON_DIR) -> list[Path]:
    """The committed files that differ from what the code generates (or are missing)."""
    stale = []
    for name, text in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def build_all() -> list[Path]:
    """`ioc dashboards build`: the dashboards and the Grafana alert rules."""
    return [*build(), alerting.build()]


def check_all() -> list[Path]:
    """`ioc dashboards build --check`: every stale dashboard or alert-rule file."""
    return [*check(), *alerting.check()]
