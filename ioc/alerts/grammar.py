"""The small languages of a rule's fields: durations (`15 minutes`, `2h`), scopes (`each agency`,
`agency: CODE`) and windows (`today`, `last 1 hour`). Apart from the Rule model (rules.py) so
that the API and the CLI read a duration without the rule machinery.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400,
         "s": 1, "m": 60, "h": 3600, "d": 86400}
LONGEST = timedelta(days=36525)  # past this a "duration" is a typo (and timedelta overflows)
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(seconds?|minutes?|hours?|days?|[smhd])\s*$")
LAST = re.compile(r"^\s*last\s+(.+)$")
CODE = re.compile(r"^[0-9A-Za-z.\-_]+$")


def parse_duration(value: object) -> timedelta:
    """`15 minutes`, `2h`, `1 day`, `90s`, or a number of seconds (0 allowed)."""
    if isinstance(value, bool):
        raise ValueError("a duration like '15 minutes', '2 hours' or '1 day'")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = DURATION.match(str(value)[:100].lower())
            if not match:
                raise ValueError(f"{str(value)[:40]!r} is not a duration like '15 minutes',"
                                 " '2 hours', '1 day'")
            seconds = float(match.group(1)) * UNITS[match.group(2).rstrip("s") or "s"]
    except OverflowError:  # an integer of hundreds of digits
        seconds = math.inf
    if math.isnan(seconds):
        raise ValueError("a duration like '15 minutes', '2 hours' or '1 day', not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > LONGEST.total_seconds():
        raise ValueError("a duration of at most 100 years")
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

    kind: Literal["province", "each_agency", "each_commune", "agency", "commune",
                  "each_source", "source"]
    code: str | None = None

    def __str__(self) -> str:
        if self.kind in ("agency", "commune", "source"):
            return f"{self.kind}: {self.code}"
        return self.kind.replace("_", " ")


def parse_scope(value: object) -> Scope:
    if isinstance(value, str):
        text = " ".join(value.lower().split())
        fixed = {"province": Scope("province"), "each agency": Scope("each_agency"),
                 "each commune": Scope("each_commune"), "each source": Scope("each_source")}
        if text in fixed:
            return fixed[text]
        match = re.match(r"^(agency|commune|source)\s*:\s*(\S+)$", value.strip())
        if match:
            value = {match.group(1): match.group(2)}
    if isinstance(value, dict) and len(value) == 1:
        (kind, code), = value.items()
        if kind in ("agency", "commune", "source") and isinstance(code, str | int):
            code = str(code)
            if not CODE.match(code):
                raise ValueError(f"{code!r} is not an agency, commune or source code")
            if kind == "commune" and not re.fullmatch(r"\d{5}", code):
                raise ValueError(f"commune code {code!r} must have 5 digits")
            return Scope(kind, code)
    raise ValueError("one of 'province', 'each agency', 'each commune', 'each source', "
                     "'agency: CODE', 'commune: CODE', 'source: NAME'")


@dataclass(frozen=True)
class Window:
    """`today`, `this_month` (calendar, in the province's time zone) or `last N units`;
    `next N units` only as the horizon of a due_soon rule (not written in YAML)."""

    kind: Literal["today", "this_month", "last", "next"]
    length: timedelta | None = None

    def bounds(self, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[since, until) of the KPI cohort at `now`."""
        if self.kind in ("last", "next"):
            assert self.length is not None
            return (now - self.length, now) if self.kind == "last" else (now, now + self.length)
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
        if self.kind in ("last", "next"):
            assert self.length is not None
            return f"{self.kind} {human(self.length)}"
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
