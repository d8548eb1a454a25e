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

`kind:` (default `threshold`, the KPI comparison above) picks a built-in rule instead; each
measures its own value (ioc/alerts/kinds.py), so `metric`, `comparison` and `window` are set
by the kind and may not be given:

    kind: due_soon      # open dossiers whose deadline falls in [now, now + within)
    within: 24 hours    # default 24 hours; `threshold` (default 1): fires when count >= it
    kind: surge         # field reports in the last hour (`window: last N`, default 1 hour)
    factor: 3           # fires when count >= factor x the usual count at that time of day
    min_count: 5        # ... and count >= min_count (the rule's threshold)
    baseline: 28 days   # usual = mean over the same window on each of the previous N days
    kind: no_signal     # minutes since the newest event / cursor move of a source
    expected: 30 minutes  # fires when silent for longer; scope `each source` | `source: NAME`

A recipient may name the scope's code: `agency-head:{agency}` becomes
`agency-head:000.00.12.H25` for the scope `agency:000.00.12.H25` (`{commune}`, `{source}`
alike; see Rule.recipients_for).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ioc.alerts.grammar import Scope, Window, parse_duration, parse_scope, parse_window
from ioc.alerts.rulefile import RuleError, RuleFileError, name_line, read_models, rule_files
from ioc.core.kpis import CATALOGUE

# metric name -> (KPI function, column of its result, table whose scopes it covers): every
# entry of the KPI catalogue
METRICS: dict[str, tuple[str, str, str]] = {
    k.name: (k.function, k.column, k.family) for k in CATALOGUE}

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}

Kind = Literal["threshold", "due_soon", "surge", "no_signal"]
# What a built-in kind measures (the name alerts and messages show) and how it compares.
KIND_METRICS = {"due_soon": "dossiers.due_soon", "surge": "field_reports.surge",
                "no_signal": "sources.silent_minutes"}
KIND_COMPARISONS = {"due_soon": ">=", "surge": ">=", "no_signal": ">"}
# Fields only one kind reads -> that kind.
KIND_FIELDS = {"within": "due_soon", "factor": "surge", "min_count": "surge",
               "baseline": "surge", "expected": "no_signal"}
SOURCE_SCOPES = ("each_source", "source")
PLACEHOLDER = re.compile(r"\{(\w+)\}")

# Office hours of state agencies (Mon-Fri) in the province's time zone.
WORK_START, WORK_END = time(7, 30), time(17, 30)


def _missing() -> PydanticCustomError:
    return PydanticCustomError("missing", "Field required")


def _placeholder(kind: str | None, value: object) -> object:
    """A required field is missing: an error, unless the kind is unknown (its error suffices;
    the value returned is never used, the rule being invalid)."""
    if kind is None:
        return value
    raise _missing()


def _not_used(kind: str, value: object, hint: str) -> None:
    """Fields a built-in kind sets itself may not be given."""
    if value not in (None, ""):
        raise ValueError(f"not used by kind: {kind} ({hint})")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              arbitrary_types_allowed=True)

    # Validated in this order: a field's validator sees the kind and the fields above it.
    # Defaults of None are filled in by the kind (or required) by the validators below.
    kind: Kind = "threshold"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=100)
    description: str = ""
    metric: str = Field("", validate_default=True)
    scope: Scope
    comparison: Literal["<", "<=", ">", ">="] = Field(None, validate_default=True)
    within: timedelta | None = Field(None, validate_default=True)
    factor: Decimal | None = Field(None, ge=1, validate_default=True)
    min_count: int | None = Field(None, ge=1, validate_default=True)
    baseline: timedelta | None = Field(None, validate_default=True)
    expected: timedelta | None = Field(None, validate_default=True)
    threshold: Decimal = Field(None, validate_default=True)
    window: Window = Field(None, validate_default=True)
    for_: timedelta = Field(timedelta(0), alias="for")
    severity: Literal["info", "warning", "critical"]
    recipients: list[str] = Field(min_length=1)
    quiet: timedelta = timedelta(hours=4)
    working_hours: bool = True

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind in KIND_METRICS:
            _not_used(kind, value, f"it measures {KIND_METRICS[kind]}")
            return KIND_METRICS[kind]
        if kind is None:  # an unknown kind: its own error says enough
            return value or ""
        if value in ("", None):
            raise _missing()
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; one of: {', '.join(METRICS)}")
        return value

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, value: object, info: ValidationInfo) -> Scope:
        scope = value if isinstance(value, Scope) else parse_scope(value)
        kind = info.data.get("kind")
        if kind == "no_signal" and scope.kind not in SOURCE_SCOPES:
            raise ValueError("kind no_signal watches sources: 'each source' or 'source: NAME'")
        if kind not in (None, "no_signal") and scope.kind in SOURCE_SCOPES:
            raise ValueError(f"{scope} is only for kind: no_signal")
        return scope

    @field_validator("comparison", mode="before")
    @classmethod
    def _comparison(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind in KIND_COMPARISONS:
            _not_used(kind, value, f"it fires when the value is {KIND_COMPARISONS[kind]} "
                                   "the threshold")
            return KIND_COMPARISONS[kind]
        if value is None:
            return _placeholder(kind, ">=")
        return value

    @field_validator("within", "factor", "min_count", "baseline", "expected", mode="before")
    @classmethod
    def _kind_field(cls, value: object, info: ValidationInfo) -> object:
        """A field of one kind: refused on others, its default (or required) on its own."""
        assert info.field_name is not None
        owner, kind = KIND_FIELDS[info.field_name], info.data.get("kind")
        if value is None:
            if kind != owner:
                return None
            defaults: dict[str, object] = {"within": timedelta(hours=24), "factor": 3,
                                           "min_count": 5, "baseline": timedelta(days=28)}
            if info.field_name not in defaults:
                raise _missing()
            value = defaults[info.field_name]
        elif kind is not None and kind != owner:
            raise ValueError(f"only for kind: {owner}")
        if isinstance(value, bool):
            raise ValueError("a number" if info.field_name in ("factor", "min_count")
                             else "a duration like '30 minutes'")
        if info.field_name == "factor" and isinstance(value, float):
            return Decimal(str(value))
        if info.field_name in ("within", "baseline", "expected"):
            length = value if isinstance(value, timedelta) else parse_duration(value)
            if length <= timedelta(0):
                raise ValueError("must be longer than 0")
            if info.field_name == "baseline" and (length.total_seconds() % 86400
                                                  or length > timedelta(days=366)):
                raise ValueError("whole days, at most 366 (e.g. '28 days')")
            return length
        return value

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind == "surge":  # the floor: factor x usual must also reach min_count
            _not_used(kind, value, "set min_count and factor")
            return info.data.get("min_count") or 1
        if kind == "no_signal":
            _not_used(kind, value, "set expected")
            expected = info.data.get("expected") or timedelta(0)
            return Decimal(int(expected.total_seconds())) / 60
        if value is None:
            return 1 if kind == "due_soon" else _placeholder(kind, 0)
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, float):
            return Decimal(str(value))
        return value

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object, info: ValidationInfo) -> Window:
        kind = info.data.get("kind")
        if kind == "due_soon":
            _not_used(kind, value, "set within")
            return Window("next", info.data.get("within") or timedelta(hours=24))
        if kind == "no_signal":
            _not_used(kind, value, "set expected")
            return Window("last", info.data.get("expected") or timedelta(minutes=30))
        if value is None:
            if kind == "surge":
                return Window("last", timedelta(hours=1))
            return _placeholder(kind, Window("today"))
        window = value if isinstance(value, Window) else parse_window(value)
        if kind == "surge" and (window.kind != "last" or window.length is None
                                or window.length > timedelta(days=1)):
            raise ValueError("a surge compares 'last N minutes/hours' (at most 1 day)")
        return window

    @field_validator("for_", "quiet", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return value if isinstance(value, timedelta) else parse_duration(value)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if any(not r.strip() for r in value):
            raise ValueError("a recipient cannot be empty")
        scope = info.data.get("scope")
        own = scope.kind.removeprefix("each_") if scope else None
        for recipient in value:
            for name in PLACEHOLDER.findall(recipient):
                if name != own:
                    raise ValueError(f"{{{name}}} in {recipient!r}: the scope {scope} has no "
                                     f"{name} code" if scope else f"{{{name}}}: no scope")
        return value

    def recipients_for(self, scope: str) -> tuple[str, ...]:
        """The recipients of one scope key (`agency:CODE`...): `{agency}` (`{commune}`,
        `{source}`) replaced by its code, so `agency-head:{agency}` reaches the agency
        responsible (deliver.resolver looks up `agency-head:CODE`, then `agency-head`)."""
        kind, _, code = scope.partition(":")
        return tuple(PLACEHOLDER.sub(lambda m: code if m.group(1) == kind else m.group(0), r)
                     for r in self.recipients)

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



def load_file(file: Path) -> list[Rule]:
    """The rules of one file; RuleFileError lists every problem with file, line and field."""
    return read_models(file, Rule)


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
                errors.append(RuleError(file, name_line(file, rule.name), "name",
                                        f"{rule.name!r} is already defined in {seen[rule.name]}"))
            seen.setdefault(rule.name, file)
            rules.append(rule)
    if errors:
        raise RuleFileError(errors)
    return rules
