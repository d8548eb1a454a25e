"""The IOC's alert rules (the packaged ioc/alerts/defaults/rules/*.yaml) as Grafana alert-rule
provisioning, for sites that prefer Grafana alerting: dashboards/provisioning/alerting/rules.yaml,
written by `ioc dashboards build` and checked by `--check`.

Each rule becomes one Grafana rule: A, the rule's value in SQL on the provisioned
datasource (one row per agency, commune/ward or source for `each ...` scopes: a label column
and `value`, which Grafana turns into one alert instance per row); B, reduce (last);
C, the comparison (a threshold expression for < and >, a math expression for <= and >=).

The window is computed in SQL from `$__timeTo()`, the evaluation time, in the province's time
zone: `today` and `this_month` are calendar periods there, which Grafana's relative time range
cannot express; `last N` is N before `$__timeTo()`. The SQL computes what
ioc.alerts.evaluate.measure computes, so both alerting paths see the same values. A NULL value
(no data in the window) is no row: `noDataState: OK`, as the IOC's evaluator never fires on it.

Grafana expands environment variables in provisioning files except in query models (the SQL
keeps its macros) and in annotations; titles and labels here never contain `$`.
The built-in kinds due_soon (open dossiers due within the horizon) and no_signal (minutes since
a source last sent something) are exported with the SQL of ioc/alerts/kinds.py; surge, whose
threshold differs per scope (factor x the usual count), is evaluated by the IOC worker only and
listed as skipped in the file's header.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
import yaml
from grafana_foundation_sdk.builders import alerting as ab
from grafana_foundation_sdk.builders import expr as eb
from grafana_foundation_sdk.models import alerting as am
from grafana_foundation_sdk.models import dashboard as model

from dashboards import PROVISIONING_DIR
from dashboards.sdk import DATASOURCE_UID, Sql, to_dict
from ioc.alerts.message import METRIC_NAMES
from ioc.alerts.rules import Rule, Window, load_rules
from ioc.core.settings import DEFAULT_ALERT_RULES

log = structlog.get_logger()

RULES_DIR = DEFAULT_ALERT_RULES  # the rules the package ships
RULES_FILE = PROVISIONING_DIR / "alerting" / "rules.yaml"
TIMEZONE = "Asia/Ho_Chi_Minh"  # the province's (Settings.timezone's default)
FOLDER = "IOC — Cảnh báo"  # not the dashboards' "IOC": Grafana provisions alerting first
GROUP = "ioc-chi-tieu"
INTERVAL = "1m"
EXPRESSIONS = model.DataSourceRef(type_val="__expr__", uid="__expr__")
UID_MAX, TITLE_MAX = 40, 190  # Grafana's limits (bytes)
SCOPE_LABEL = {"each_agency": "agency", "each_commune": "commune", "each_source": "source"}
EXPORTED_KINDS = ("threshold", "due_soon", "no_signal")

UNITS_VI = (("ngày", 86400), ("giờ", 3600), ("phút", 60), ("giây", 1))


# The evaluation time: the KPIs are read as of it, as ioc.alerts.evaluate does.
AT = "$__timeTo()::timestamptz"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def seconds(duration: timedelta) -> str:
    value = duration.total_seconds()
    return str(int(value)) if value == int(value) else repr(value)


def bounds(window: Window, tz: str = TIMEZONE) -> tuple[str, str, int]:
    """SQL for [since, until) of the window at `$__timeTo()`, and the query's relative range
    in seconds (what Grafana shows; the SQL does not depend on it)."""
    now = "$__timeTo()::timestamptz"
    if window.kind in ("last", "next"):
        assert window.length is not None
        length, span = window.length, max(1, math.ceil(window.length.total_seconds()))
        if window.kind == "next":  # due_soon's horizon
            return now, f"{now} + interval '{seconds(length)} seconds'", span
        return f"{now} - interval '{seconds(length)} seconds'", now, span
    unit, step, span = (("day", "1 day", 86400) if window.kind == "today"
                        else ("month", "1 month", 31 * 86400))
    local = f"date_trunc('{unit}', {now} AT TIME ZONE {literal(tz)})"
    return (f"{local} AT TIME ZONE {literal(tz)}",
            f"({local} + interval '{step}') AT TIME ZONE {literal(tz)}", span)


def sql(rule: Rule, tz: str = TIMEZONE) -> str:
    """Query A: the rule's value for each of its scope keys, as ioc.alerts.evaluate.measure."""
    kind = getattr(rule, "kind", "threshold")
    if kind == "due_soon":
        return due_soon_sql(rule)
    if kind == "no_signal":
        return no_signal_sql(rule)
    return kpi_sql(rule, tz)


def kpi_sql(rule: Rule, tz: str = TIMEZONE) -> str:
    """A threshold rule: its KPI function's column, per agency or commune/ward if it says so."""
    function, column, table = rule.kpi
    since, until, _ = bounds(rule.window, tz)
    head = f"WITH w AS (\n  SELECT {since} AS since,\n         {until} AS until\n)\n"
    scope = rule.scope
    if scope.kind in SCOPE_LABEL:
        label = SCOPE_LABEL[scope.kind]
        key = f"{label}_code"
        unit, agency = ("s.key", "NULL::text") if label == "commune" else ("NULL::text", "s.key")
        return head + (
            f"SELECT s.key AS {label}, k.{column} AS value\n"
            f"FROM w,\n"
            f"     LATERAL (SELECT DISTINCT {key} AS key FROM {table}\n"
            f"              WHERE anchor_at >= w.since AND anchor_at < w.until"
            f" AND {key} <> '') s,\n"
            f"     LATERAL {function}(w.since, w.until, {unit}, {agency}, NULL::text, {AT}) k\n"
            f"WHERE k.{column} IS NOT NULL\n"
            f"ORDER BY s.key")
    unit = literal(scope.code or "") if scope.kind == "commune" else "NULL::text"
    agency = literal(scope.code or "") if scope.kind == "agency" else "NULL::text"
    return head + (f"SELECT k.{column} AS value\n"
                   f"FROM w, LATERAL {function}(w.since, w.until, {unit}, {agency}, NULL::text,"
                   f" {AT}) k\n"
                   f"WHERE k.{column} IS NOT NULL")


def due_soon_sql(rule: Rule) -> str:
    """Dossiers in process at the evaluation time due in [now, now + within), as
    ioc.alerts.kinds.due_soon: `each ...` lists every key with an open dossier (0 when none is
    due soon)."""
    since, until, _ = bounds(rule.window)
    head = f"WITH w AS (\n  SELECT {since} AS since,\n         {until} AS until\n)\n"
    count = "count(*) FILTER (WHERE due_at >= w.since AND due_at < w.until)"
    open_ = "in_process"
    scope = rule.scope
    if scope.kind in SCOPE_LABEL:
        label = SCOPE_LABEL[scope.kind]
        return head + (f"SELECT {label}_code AS {label}, {count} AS value\n"
                       f"FROM w, dossier_facts_at({AT})\n"
                       f"WHERE {open_} AND {label}_code <> ''\n"
                       f"GROUP BY 1\nORDER BY 1")
    where = "" if scope.kind == "province" else (
        f" AND {scope.kind}_code = {literal(scope.code or '')}")
    return head + f"SELECT {count} AS value\nFROM w, dossier_facts_at({AT})\nWHERE {open_}{where}"


def no_signal_sql(rule: Rule) -> str:
    """Minutes since a source last sent something (its newest event's ingested_at, or its
    connector's cursor move, both up to now), as ioc.alerts.kinds.no_signal."""
    from ioc.alerts.kinds import LOOKBACK

    assert rule.expected is not None
    horizon = max(LOOKBACK, 2 * rule.expected)
    name = rule.scope.code if rule.scope.kind == "source" else None
    events = f" AND source = {literal(name)}" if name else ""
    cursors = f" AND connector = {literal(name)}" if name else ""
    label = "s.source AS source, " if name is None else ""
    return (
        "WITH w AS (\n  SELECT $__timeTo()::timestamptz AS now\n)\n"
        f"SELECT {label}round(greatest(floor(extract(epoch FROM min(w.now - s.at))), 0) / 60, 2)"
        " AS value\n"
        "FROM w, (\n"
        "  SELECT source, max(ingested_at) AS at FROM events, w\n"
        f"  WHERE occurred_at >= w.now - interval '{seconds(horizon)} seconds'"
        f" AND ingested_at <= w.now{events}\n"
        "  GROUP BY source\n"
        "  UNION ALL\n"
        "  SELECT connector, updated_at FROM connector_cursors, w\n"
        f"  WHERE updated_at <= w.now{cursors}\n"
        ") s\n"
        "GROUP BY s.source\n"
        "ORDER BY s.source")


def prometheus_duration(duration: timedelta) -> str:
    """A duration as Grafana's files take it (Prometheus model.ParseDuration): `1h30m`, `0s`."""
    millis = round(duration.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    text = ""
    for suffix, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                         ("ms", 1)):
        if millis >= size:
            text += f"{millis // size}{suffix}"
            millis %= size
    return text


def rule_uid(name: str) -> str:
    """`ioc-<name>`, or a shortened name and a digest when that is not a valid Grafana uid."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if slug == name and len(f"ioc-{name}") <= UID_MAX:
        return f"ioc-{name}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"ioc-{slug[:UID_MAX - 13]}-{digest}"


def scope_text(rule: Rule) -> str:
    scope = rule.scope
    return {"province": "Toàn tỉnh", "each_agency": "Cơ quan {{ $labels.agency }}",
            "each_commune": "Xã/phường {{ $labels.commune }}",
            "each_source": "Nguồn {{ $labels.source }}",
            "agency": f"Cơ quan {scope.code}", "commune": f"Xã/phường {scope.code}",
            "source": f"Nguồn {scope.code}"}[scope.kind]


def window_text(window: Window) -> str:
    if window.kind == "today":
        return "trong ngày hôm nay"
    if window.kind == "this_month":
        return "trong tháng này"
    assert window.length is not None
    total = int(window.length.total_seconds())
    unit, size = next((u, s) for u, s in UNITS_VI if total % s == 0)
    return f"trong {total // size} {unit} {'tới' if window.kind == 'next' else 'gần nhất'}"


def number(value: object) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def condition(rule: Rule) -> eb.TypeThreshold | eb.TypeMath:
    """C: true when `B <comparison> threshold`."""
    if rule.comparison in ("<", ">"):
        evaluator = (eb.ExprTypeThresholdConditionsEvaluator()
                     .type("lt" if rule.comparison == "<" else "gt")
                     .params([float(rule.threshold)]))
        return (eb.TypeThreshold().ref_id("C").expression("B").datasource(EXPRESSIONS)
                .conditions([eb.ExprTypeThresholdConditions().evaluator(evaluator)]))
    return (eb.TypeMath().ref_id("C").datasource(EXPRESSIONS)
            .expression(f"$B {rule.comparison} {number(rule.threshold)}"))


def grafana_rule(rule: Rule, title: str) -> dict[str, Any]:
    """One rule of a provisioning file's group (AlertRuleV1)."""
    _, _, span = bounds(rule.window)
    metric = METRIC_NAMES.get(rule.metric, rule.metric)
    labels = {"severity": rule.severity, "ioc_rule": rule.name}
    if rule.scope.kind in ("agency", "commune", "source"):
        labels[rule.scope.kind] = rule.scope.code or ""
    query = (ab.Query("A").datasource_uid(DATASOURCE_UID).model(Sql(sql(rule)))
             .relative_time_range(am.RelativeTimeRange(from_val=span, to=0)))
    reduce = (eb.TypeReduce().ref_id("B").expression("A").reducer("last").datasource(EXPRESSIONS)
              .settings(eb.ExprTypeReduceSettings().mode("dropNN")))
    period = "" if getattr(rule, "kind", "") == "no_signal" else f" {window_text(rule.window)}"
    summary = (f"{scope_text(rule)}: {metric}{period} là"
               f" {{{{ $values.B.Value }}}} ({rule.comparison} {number(rule.threshold)})")
    about = " ".join(rule.description.split()).rstrip(".")
    description = (f"{about}. " if about else "") + (
        f"Quy tắc IOC: {rule.name}, mức độ {rule.severity}.")
    built = (ab.Rule(title).uid(rule_uid(rule.name)).condition("C")
             .queries([query, ab.Query("B").datasource_uid("__expr__").model(reduce),
                       ab.Query("C").datasource_uid("__expr__").model(condition(rule))])
             .for_val(prometheus_duration(rule.for_)).no_data_state("OK")
             .exec_err_state("Error").is_paused(False).labels(labels)
             .annotations({"summary": summary, "description": description})).build()
    data = to_dict(built)  # type: ignore[arg-type]
    # The API's keys; a file has them on the group. Then the file's usual order.
    for key in ("folderUID", "orgID", "ruleGroup"):
        data.pop(key)
    order = ["uid", "title", "condition", "data", "for", "noDataState", "execErrState",
             "isPaused", "labels", "annotations"]
    return {key: data[key] for key in order} | data


def titles(rules: Sequence[Rule]) -> dict[str, str]:
    """Rule name -> Grafana title: its Vietnamese description when it fits and is unique."""
    def wanted(rule: Rule) -> str:
        text = " ".join(rule.description.split())
        return text if text and len(text.encode()) <= TITLE_MAX and "$" not in text else rule.name
    counts: dict[str, int] = {}
    for rule in rules:
        counts[wanted(rule)] = counts.get(wanted(rule), 0) + 1
    return {r.name: wanted(r) if counts[wanted(r)] == 1 else r.name for r in rules}


def export(rules: Sequence[Rule]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The provisioning document, and the (rule, reason) pairs that were not exported."""
    exported, skipped = [], []
    for rule in rules:
        kind = getattr(rule, "kind", "threshold")
        if kind not in EXPORTED_KINDS:
            reason = (f"kind {kind}: its threshold differs per scope (factor x the usual count),"
                      " evaluated by the IOC worker only")
            log.info("grafana alert rule skipped", rule=rule.name, reason=reason)
            skipped.append((rule.name, reason))
        else:
            exported.append(rule)
    named = titles(exported)
    group = {"orgId": 1, "name": GROUP, "folder": FOLDER, "interval": INTERVAL,
             "rules": [grafana_rule(rule, named[rule.name]) for rule in exported]}
    return {"apiVersion": 1, "groups": [group] if exported else []}, skipped


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the SQL) as literal blocks, readable in review."""


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _string)


def render(rules: Sequence[Rule]) -> str:
    document, skipped = export(rules)
    header = ["# Grafana alert rules for sites that prefer Grafana alerting. Generated from",
              "# ioc/alerts/defaults/rules/*.yaml by `ioc dashboards build`",
              "# (dashboards/alerting.py). Do not edit."]
    header += [f"# Not exported: {name} ({reason})" for name, reason in skipped]
    body = yaml.dump(document, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1000)
    return "\n".join(header) + "\n" + body


def generate(rules_dir: Path = RULES_DIR) -> str:
    return render(load_rules(rules_dir))


def build(path: Path = RULES_FILE, rules_dir: Path = RULES_DIR) -> Path:
    path.write_text(generate(rules_dir), encoding="utf-8")
    return path


def check(path: Path = RULES_FILE, rules_dir: Path = RULES_DIR) -> list[Path]:
    """[path] when the committed file is not what the rules generate."""
    fresh = path.is_file() and path.read_text(encoding="utf-8") == generate(rules_dir)
    return [] if fresh else [path]
