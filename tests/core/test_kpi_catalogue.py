"""The KPI catalogue (ioc/core/kpis.py) and its SQL (ioc/core/kpis.sql): a database migrated
before kpis.sql existed and a fresh one end with the same definitions, on plain PostgreSQL and
TimescaleDB; and the catalogue, the functions' result columns, the alert metrics, the messages
and the committed dashboards and Grafana rules agree."""

from __future__ import annotations

import json
import re
import tarfile
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from rich.console import Console

from ioc.core import db
from ioc.core.db import connect, migrate
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres
from tests.support import DATA, ROOT
from tests.support.timescaledb import TimescaleServer

# 0003, 0005 and 0017 as they were shipped before kpis.sql (a frozen archive, not code to edit)
BEFORE = DATA / "kpis_before_catalogue.tar.gz"
LAST_BEFORE = 20  # the newest migration before kpis.sql
FUNCTIONS = ("kpi_dossiers", "kpi_documents", "kpi_field_reports")
SQL_TYPES = {"": "bigint", "%": "numeric", "giờ": "numeric"}
GRAFANA_UNITS = {"": "none", "%": "percent", "giờ": "h"}


def has_timescale(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return db.has_timescale(conn)


def fresh(url: str) -> Settings:
    return Settings(database_url=url, database_schema=f"t_{uuid.uuid4().hex[:10]}")


def definitions(settings: Settings) -> dict[str, Any]:
    """Every function (its full definition) and view (its query and columns) of the schema."""
    schema = settings.database_schema
    with connect(settings) as conn:
        functions = conn.execute(
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',"
            " pg_get_functiondef(p.oid)"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s", (schema,)).fetchall()
        views = conn.execute(
            "SELECT c.relname, pg_get_viewdef(c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'v'", (schema,)).fetchall()
        columns = conn.execute(
            "SELECT table_name, ordinal_position, column_name, data_type"
            " FROM information_schema.columns WHERE table_schema = %s"
            " ORDER BY 1, 2", (schema,)).fetchall()
    # TimescaleDB numbers the hypertables behind its continuous aggregates.
    hypertable = re.compile(r"(_materialized_hypertable_|cagg_watermark\()\d+")
    return {"functions": {name: body.replace(schema, "S") for name, body in functions},
            "views": {name: hypertable.sub(r"\1N", text)
                      for name, text in views},
            "columns": columns}


def migrate_as_before(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema as `ioc db migrate` left it before kpis.sql: migrations up to LAST_BEFORE,
    with the KPI objects of the first 0003, 0005 and 0017."""
    old: dict[int, str] = {}
    with tarfile.open(BEFORE) as archive:
        for member in archive.getmembers():
            file = archive.extractfile(member)
            if file is not None:
                old[int(Path(member.name).name[:4])] = file.read().decode()
    assert sorted(old) == [3, 5, 17]
    current = db.migrations
    with monkeypatch.context() as patch:
        patch.setattr(db, "migrations", lambda timescale: [
            (version, name, old.get(version, text)) for version, name, text in current(timescale)
            if version <= LAST_BEFORE])
        patch.setattr(db, "kpi_definitions", lambda: "")
        migrate(settings)


def assert_same_definitions(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    existing, new = fresh(url), fresh(url)
    migrate_as_before(existing, monkeypatch)
    by_group = ("kpi_dossiers_by(since timestamp with time zone, until timestamp with time zone,"
                " group_by text, unit text, agency text, former_district text)")
    assert by_group in definitions(existing)["functions"]
    later = [v for v, _, _ in db.migrations(timescale=has_timescale(url))
             if v > LAST_BEFORE]
    assert migrate(existing) == later  # the newer migrations, then kpis.sql
    migrate(new)
    after = definitions(existing)
    assert after == definitions(new)
    assert by_group not in after["functions"]  # 0023 dropped it for the one with as_of
    as_of = by_group.replace(")", ", as_of timestamp with time zone)")
    assert "-- on time" in after["functions"][as_of]  # kpis.sql's body replaced the old one


def test_existing_and_fresh_databases_end_alike_on_postgresql(
        postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_definitions(postgres.url, monkeypatch)


def test_existing_and_fresh_databases_end_alike_on_timescaledb(
        timescale: TimescaleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_definitions(timescale.url, monkeypatch)


def test_migrate_applies_an_edited_formula(postgres: Postgres,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """kpis.sql is repeatable: an edited body reaches a migrated database at the next migrate."""
    settings = fresh(postgres.url)
    migrate(settings)
    edited = db.kpi_definitions().replace("round(100 * part / nullif(whole, 0), 2)",
                                          "round(100 * part / nullif(whole, 0), 1)")
    monkeypatch.setattr(db, "kpi_definitions", lambda: edited)
    migrate(settings)
    with connect(settings) as conn:
        assert conn.execute("SELECT ioc_pct(1, 3)").fetchone() == (Decimal("33.3"),)


@pytest.fixture(scope="module")
def catalogued(postgres: Postgres) -> Settings:
    settings = fresh(postgres.url)
    migrate(settings)
    return settings


def parameters(settings: Settings, *functions: str) -> list[tuple[str, int, str, str, str, str]]:
    """(function, its number of IN arguments, name, mode, type, default) of each parameter of
    the functions, from information_schema."""
    with connect(settings) as conn:
        return conn.execute(
            "SELECT r.routine_name, (SELECT count(*) FROM information_schema.parameters i"
            "        WHERE i.specific_name = r.specific_name AND i.parameter_mode = 'IN'),"
            " p.parameter_name, p.parameter_mode, p.data_type, p.parameter_default"
            " FROM information_schema.routines r JOIN information_schema.parameters p"
            "   ON p.specific_schema = r.specific_schema AND p.specific_name = r.specific_name"
            " WHERE r.routine_schema = %s AND r.routine_name = ANY(%s)",
            (settings.database_schema, list(functions))).fetchall()


def test_catalogue_is_every_result_column_of_the_kpi_functions(catalogued: Settings) -> None:
    from ioc.core.kpis import CATALOGUE

    found = {(function, name): kind  # the result columns of the functions
             for function, inputs, name, mode, kind, _ in parameters(catalogued, *FUNCTIONS)
             if mode == "OUT" and inputs == 6}
    assert {function for function, _ in found} == set(FUNCTIONS)
    assert {(k.function, k.column): SQL_TYPES[k.unit] for k in CATALOGUE} == found
    assert all(k.name == f"{k.function.removeprefix('kpi_')}.{k.column}" for k in CATALOGUE)


def test_766_targets_are_the_league_tables_defaults(catalogued: Settings) -> None:
    from ioc.core.kpis import KPIS

    defaults = {name.removesuffix("_target"): float(default)
                for _, _, name, _, _, default in parameters(catalogued, "kpi_agency_ranking")
                if name.endswith("_target")}
    assert defaults == {"on_time": 99, "digitized": 90, "online": 80, "satisfaction": 95}
    targets = {name: k.target_766 for name, k in KPIS.items() if k.target_766 is not None}
    assert targets == {f"dossiers.{group}_rate": value for group, value in defaults.items()}


def test_alert_metrics_are_the_catalogue(catalogued: Settings) -> None:
    from ioc.alerts.message import METRIC_NAMES
    from ioc.alerts.rules import KIND_METRICS, METRICS
    from ioc.core.kpis import CATALOGUE

    assert set(METRICS) == {k.name for k in CATALOGUE}
    with connect(catalogued) as conn:
        for name, (function, column, table) in METRICS.items():
            assert (function, column) == (f"kpi_{table}", name.partition(".")[2])
            # The scope columns the evaluator lists exist in the table.
            found = conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s", (catalogued.database_schema,
                                                                  table)).fetchall()
            assert {"anchor_at", "agency_code", "commune_code"} <= {c for c, in found}
    for kpi in CATALOGUE:
        assert METRIC_NAMES[kpi.name].startswith(kpi.label), kpi.name
    assert set(KIND_METRICS.values()) <= set(METRIC_NAMES)
    # One label per metric: no two metrics share one.
    assert len(set(METRIC_NAMES.values())) == len(METRIC_NAMES)


def stat_tiles() -> list[tuple[str, dict[str, Any], str, str]]:
    """(dashboard, panel, function, column) of every committed tile reading a KPI function."""
    tiles = []
    for file in sorted((ROOT / "dashboards" / "json").glob("*.json")):
        for panel in json.loads(file.read_text(encoding="utf-8"))["panels"]:
            sql = panel.get("targets", [{}])[0].get("rawSql", "")
            match = re.fullmatch(r"SELECT (\w+) AS value(?:, .* AS note)? FROM (kpi_\w+)\(.*\)",
                                 sql, re.S)
            if panel["type"] == "stat" and match:
                tiles.append((file.stem, panel, match.group(2), match.group(1)))
    return tiles


def test_dashboard_tiles_show_the_catalogue() -> None:
    from ioc.core.kpis import find

    tiles = stat_tiles()
    assert len(tiles) >= 20  # overview 10, dossiers 6, documents 6
    for board, panel, function, column in tiles:
        kpi = find(function, column)
        where = (board, panel["title"])
        assert panel["title"] == kpi.label, where
        assert panel["fieldConfig"]["defaults"]["unit"] == GRAFANA_UNITS[kpi.unit], where
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        if kpi.target is not None:
            assert {"color": "green", "value": kpi.target} in steps, where
            assert f"{kpi.target:g} %" in panel["description"], where
        if kpi.target_766 is not None:
            assert "766" in panel["description"], where
        # a KPI with inputs: its query says what the value lacks (tests/dashboards run it)
        assert (" AS note FROM " in panel["targets"][0]["rawSql"]) is bool(kpi.inputs), where


def test_grafana_rules_name_metrics_by_their_label() -> None:
    from ioc.alerts.rules import load_rules
    from ioc.core.kpis import KPIS
    from ioc.core.settings import DEFAULT_ALERT_RULES

    rules = ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml"
    exported = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"][0]["rules"]
    metrics = {rule.name: rule.metric for rule in load_rules(DEFAULT_ALERT_RULES)}
    checked = 0
    for rule in exported:
        metric = metrics[rule["labels"]["ioc_rule"]]
        if metric in KPIS:
            assert KPIS[metric].label in rule["annotations"]["summary"], rule["uid"]
            checked += 1
    assert checked >= 3


def test_the_wall_and_ioc_kpis_show_labels_units_and_targets() -> None:
    from ioc.cli.main import console, show_kpis
    from ioc.core.kpis import CATALOGUE, FUNCTIONS, KPIS
    from ioc.embedded.wall import WallData, render

    values: dict[str, dict[str, Any]] = {family: {} for family in FUNCTIONS}
    for number, kpi in enumerate(CATALOGUE, start=1):
        values[kpi.family][kpi.column] = number + 0.5 if kpi.unit else number
    wall = Console(width=400, record=True)
    wall.print(render(WallData(at=datetime(2026, 11, 20, 9, tzinfo=UTC), kpis=values,
                               agencies=[], reports=[], stored=0, lag=None)))
    text = wall.export_text()
    for name in ("dossiers.on_time_rate", "dossiers.satisfaction_rate", "documents.backlog",
                 "field_reports.open"):
        kpi = KPIS[name]
        number = values[kpi.family][kpi.column]
        shown = f"{number:.2f} %" if kpi.unit == "%" else str(number)
        assert kpi.label in text and shown in text, name
    median = values["field_reports"]["median_hours_to_resolve"]
    assert f"trung vị {median} giờ" in text

    with console.capture() as captured:
        show_kpis(values, as_json=False)
    rows = [line for line in captured.get().splitlines() if "on_time_rate" in line]
    assert len(rows) == 2  # dossiers and documents
    dossiers, documents = (values[f]["on_time_rate"] for f in ("dossiers", "documents"))
    assert f"{dossiers:.2f} %" in rows[0] and "≥ 99 % (QĐ 766)" in rows[0]
    assert f"{documents:.2f} %" in rows[1] and "≥ 95 %" in rows[1] and "766" not in rows[1]
