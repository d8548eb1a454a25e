"""What an alert kind is to the evaluator (ioc/alerts/evaluate.py): a function from a rule to
the rule's value for each of its scope keys. Declared here, apart from the kinds, so that a
kind module and the registry (ioc/alerts/kinds.py KINDS) import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

import psycopg

from ioc.alerts.rules import Rule


@dataclass(frozen=True)
class Measurement:
    """A rule's value for one scope key at one time (None: no data, which never breaches)."""

    rule: Rule
    scope: str  # province | agency:CODE | commune:CODE | source:NAME
    value: Decimal | None
    missing: tuple[str, ...] = ()  # the part of its inputs not received (Kpi.missing)

    @property
    def threshold(self) -> Decimal:
        """What the value is compared with: the rule's, unless the kind sets its own per scope
        (kinds.SurgeMeasurement)."""
        return self.rule.threshold

    @property
    def breached(self) -> bool:
        return self.rule.breached(self.value)


class AlertKind(Protocol):
    """A rule `kind:`: the Measurements of the rule's scopes at `now` (read-only; `tz` is the
    province's time zone, for calendar windows). A new kind is a module with such a function
    and its entry in ioc/alerts/kinds.py KINDS (its name and fields in rules.py `Kind`)."""

    def __call__(self, conn: psycopg.Connection, rule: Rule, now: datetime,
                 tz: ZoneInfo) -> list[Measurement]: ...
