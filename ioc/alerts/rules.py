"""Alert rules: YAML files validated with pydantic; every error names file, line and field.

A file holds one rule (a mapping) or several (a list of mappings, or `rules:` with a list):

    name: dossiers-on-time-by-agency
    metric: dossiers.on_time_rate        # one of METRICS
    scope: each agency                   # province | each agency | each commune
                                         # | {agency: CODE} | {commune: CODE}
    comparison: "<"                      # < <= > >=
    threshold: 99
    window: today                        # today | this_month | last N minutes/hours/days
    for: 15 minutes                      # condition true this long before firing (0: at once)
    severity: warning                    # info | warning | critical
    recipients: [chairman, "director:000.00.12.H25"]
    quiet: 4 hours                       # re-notify period while firing
    working_hours: true                  # non-critical alerts wait for office hours
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# metric name -> (KPI function, column of its result, table whose scopes it covers)
METRICS: dict[str, tuple[str, str, str]] = {
    "dossiers.on_time_rate": ("kpi_dossiers", "on_time_rate", "dossiers"),
    "dossiers.online_rate": ("kpi_dossiers", "online_rate", "dossiers"),
    "dossiers.digitized_rate": ("kpi_dossiers", "digitized_rate", "dossiers"),
    "dossiers.paid_online_rate": ("kpi_dossiers", "paid_online_rate", "dossiers"),
    "dossiers.satisfaction_rate": ("kpi_dossiers", "satisfaction_rate", "dossiers"),
    "dossiers.late_in_process": ("kpi_dossiers", "late_in_process", "dossiers"),
    "dossiers.due_soon": ("kpi_dossiers", "due_soon", "dossiers"),
    "dossiers.received": ("kpi_dossiers", "received", "dossiers"),
    "documents.backlog": ("kpi_documents", "backlog", "documents"),
    "documents.backlog_overdue": ("kpi_documents", "backlog_overdue", "documents"),
    "documents.signed_rate": ("kpi_documents", "signed_rate", "documents"),
    "field_reports.open": ("kpi_field_reports", "open", "field_reports"),
    "field_reports.overdue": ("kpi_field_reports", "overdue", "field_reports"),
    "field_reports.median_hours_to_resolve":
        ("kpi_field_reports", "median_hours_to_resolve", "field_reports"),
}

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400,
         "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(seconds?|minutes?|hours?|days?|[smhd])\s*$")
LAST = re.compile(r"^\s*last\s+(.+)$")
CODE = re.compile(r"^[0-9A-Za-z.\-_]+$")

# Office hours of state agencies (Mon-Fri) in the province's time zone.
WORK_START, WORK_END = time(7, 30), time(17, 30)


def parse_duration(value: object) -> timedelta:
    """`15 minutes`, `2h`, `1 day`, `90s`, or a number of seconds (0 allowed)."""
    if isinstance(value, bool):
        raise ValueError("a duration like '15 minutes', '2 hours' or '1 day'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = DURATION.match(str(value).lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration like '15 minutes', '2 hours', '1 day'")
        seconds = float(match.group(1)) * UNITS[match.group(2).rstrip("s") or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


def human(duration: timedelta) -> str:
    """`timedelta(minutes=90)` -> `90 minutes`; whole days, hours, minutes or seconds."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds" if seconds != 1 else "1 second"


@dataclass(frozen=True)
class Scope:
    """Which values a rule compares: one (`province`, a fixed agency or commune) or one per key."""

    kind: Literal["province", "each_agency", "each_commune", "agency", "commune"]
    code: str | None = None

    def __str__(self) -> str:
        if self.kind in ("agency", "commune"):
            return f"{self.kind}: {self.code}"
        return self.kind.replace("_", " ")


def parse_scope(value: object) -> Scope:
    if isinstance(value, str):
        text = " ".join(value.lower().split())
        fixed = {"province": Scope("province"), "each agency": Scope("each_agency"),
                 "each commune": Scope("each_commune")}
        if text in fixed:
            return fixed[text]
        match = re.match(r"^(agency|commune)\s*:\s*(\S+)$", value.strip())
        if match:
            value = {match.group(1): match.group(2)}
    if isinstance(value, dict) and len(value) == 1:
        (kind, code), = value.items()
        if kind in ("agency", "commune") and isinstance(code, str | int):
            code = str(code)
            if not CODE.match(code):
                raise ValueError(f"{code!r} is not an agency or commune code")
            if kind == "commune" and not re.fullmatch(r"\d{5}", code):
                raise ValueError(f"commune code {code!r} must have 5 digits")
            return Scope(kind, code)
    raise ValueError("one of 'province', 'each agency', 'each commune', "
                     "'agency: CODE', 'commune: CODE'")


@dataclass(frozen=True)
class Window:
    """`today`, `this_month` (calendar, in the province's time zone) or `last N units`."""

    kind: Literal["today", "this_month", "last"]
    length: timedelta | None = None

    def bounds(self, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[since, until) of the KPI cohort at `now`."""
        if self.kind == "last":
            assert self.length is not None
            return now - self.length, now
        local = now.astimezone(tz)
        if self.kind == "today":
            start = datetime.combine(local.date(), time(), tz)
            end = datetime.combine(local.date() + timedelta(days=1), time(), tz)
        else:
            first = local.date().replace(day=1)
            following = (first + timedelta(days=32)).replace(day=1)
            start = datetime.combine(first, time(), tz)
            end = datetime.combine(following, time(), tz)
        return start, end

    def __str__(self) -> str:
        if self.kind == "last":
            assert self.length is not None
            return f"last {human(self.length)}"
        return self.kind


def parse_window(value: object) -> Window:
    text = " ".join(str(value).lower().replace("-", "_").split())
    if text in ("today", "this_month", "this month"):
        return Window("this_month" if "month" in text else "today")
    match = LAST.match(text)
    if match:
        length = parse_duration(match.group(1))
        if length <= timedelta(0):
            raise ValueError("the window must be longer than 0")
        return Window("last", length)
    raise ValueError("one of 'today', 'this_month', 'last N minutes/hours/days'")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=100)
    description: str = ""
    metric: str
    scope: Scope
    comparison: Literal["<", "<=", ">", ">="]
    threshold: Decimal
    window: Window
    for_: timedelta = Field(timedelta(0), alias="for")
    severity: Literal["info", "warning", "critical"]
    recipients: list[str] = Field(min_length=1)
    quiet: timedelta = timedelta(hours=4)
    working_hours: bool = True

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; one of: {', '.join(METRICS)}")
        return value

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, value: object) -> Scope:
        return value if isinstance(value, Scope) else parse_scope(value)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object) -> Window:
        return value if isinstance(value, Window) else parse_window(value)

    @field_validator("for_", "quiet", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return value if isinstance(value, timedelta) else parse_duration(value)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, float):
            return Decimal(str(value))
        return value

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        if any(not r.strip() for r in value):
            raise ValueError("a recipient cannot be empty")
        return value

    @property
    def kpi(self) -> tuple[str, str, str]:
        return METRICS[self.metric]

    def breached(self, value: Decimal | None) -> bool:
        """The alert condition; a value without data (NULL rate) never breaches."""
        return value is not None and COMPARISONS[self.comparison](value, self.threshold)

    def notify_after(self, at: datetime, tz: ZoneInfo) -> datetime:
        """When delivery of a firing alert may start: at once, or, with `working_hours`, a
        non-critical alert outside office hours (Mon-Fri 07:30-17:30) waits for the next 07:30."""
        if not self.working_hours or self.severity == "critical":
            return at
        local = at.astimezone(tz)
        if local.weekday() < 5 and WORK_START <= local.time() < WORK_END:
            return at
        day = local.date() if local.time() < WORK_START else local.date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return datetime.combine(day, WORK_START, tz)


@dataclass(frozen=True)
class RuleError:
    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class RuleFileError(Exception):
    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


Path_ = tuple[str | int, ...]


def _positions(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]]) -> None:
    """Line of every node, and of every mapping key (the line a missing field is reported on
    is its mapping's first line)."""
    out[path] = (node.start_mark.line + 1, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            _positions(value, (*path, name), out)
            out[(*path, name)] = (key.start_mark.line + 1, value.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*path, i), out)


def _line(positions: dict[Path_, tuple[int, int]], path: Path_) -> int:
    while path not in positions and path:
        path = path[:-1]
    return positions.get(path, (1, 1))[1]


def _field(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


def load_file(file: Path) -> list[Rule]:
    """The rules of one file; RuleFileError lists every problem with file, line and field."""
    try:
        text = file.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise RuleFileError([RuleError(file, line, "(syntax)", str(exc.problem))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([RuleError(file, 1, "(file)", str(exc))]) from None
    if node is None:
        return []
    data = yaml.SafeLoader("").construct_document(node)
    positions: dict[Path_, tuple[int, int]] = {}
    _positions(node, (), positions)
    prefix: Path_ = ()
    if isinstance(data, dict) and set(data) == {"rules"}:
        data, prefix = data["rules"], ("rules",)
    items: list[tuple[Path_, object]]
    if isinstance(data, list):
        items = [((*prefix, i), item) for i, item in enumerate(data)]
    else:
        items = [(prefix, data)]
    rules, errors = [], []
    for path, item in items:
        if not isinstance(item, dict):
            errors.append(RuleError(file, _line(positions, path), _field(path) or "(rule)",
                                    "a rule must be a mapping of fields"))
            continue
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                if loc and loc[0] == "for_":
                    loc = ("for", *loc[1:])
                where = (*path, *loc)
                if error["type"] == "missing":  # no node of its own: its rule's first line
                    line = _line(positions, path) if path else _first_line(node)
                else:
                    line = _line(positions, where)
                message = error["msg"].removeprefix("Value error, ")
                errors.append(RuleError(file, line, _field(where), message))
    if errors:
        raise RuleFileError(errors)
    return rules


def _first_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def rule_files(where: Path) -> list[Path]:
    if where.is_file():
        return [where]
    return sorted([*where.glob("*.yaml"), *where.glob("*.yml")])


def load_rules(sources: Path | Iterable[Path]) -> list[Rule]:
    """Every rule of a directory (its *.yaml / *.yml) or of the given files; names are unique."""
    files = rule_files(sources) if isinstance(sources, Path) else list(sources)
    rules: list[Rule] = []
    errors: list[RuleError] = []
    seen: dict[str, Path] = {}
    for file in files:
        try:
            found = load_file(file)
        except RuleFileError as exc:
            errors.extend(exc.errors)
            continue
        for rule in found:
            if rule.name in seen:
                errors.append(RuleError(file, _name_line(file, rule.name), "name",
                                        f"{rule.name!r} is already defined in {seen[rule.name]}"))
            seen.setdefault(rule.name, file)
            rules.append(rule)
    if errors:
        raise RuleFileError(errors)
    return rules


def _name_line(file: Path, name: str) -> int:
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(rf"^\s*-?\s*name\s*:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$", line):
            return number
    return 1
