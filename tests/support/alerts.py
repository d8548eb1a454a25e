"""What the alert tests share: a rule that holds on an empty province, a recipients file, and
the refusal of a bad rules file."""

from pathlib import Path

import pytest

from ioc.alerts import Rule, RuleFileError, load_file
from tests.support import ROOT

DEFAULTS = ROOT / "ioc" / "alerts" / "defaults"  # the rules and recipients the package ships
DEFAULT_RULES = DEFAULTS / "rules"


def backlog_rule(holds: bool = True, **fields: object) -> Rule:
    """`documents.backlog_overdue >= 0` (always holds: the value is 0 without data), or `>= 1`
    (never holds), quiet for 25 minutes."""
    base: dict[str, object] = {
        "name": "ton-dong-qua-han", "metric": "documents.backlog_overdue", "scope": "province",
        "comparison": ">=", "threshold": 0 if holds else 1, "window": "last 60 days",
        "for": 0, "severity": "critical", "recipients": ["ioc-duty-officer"],
        "quiet": "25 minutes",
    }
    base.update(fields)
    return Rule.model_validate(base)


def recipients_file(folder: Path, text: str) -> Path:
    """`folder/recipients.yaml` holding `text` (role: addresses)."""
    path = folder / "recipients.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(rules: Path) -> RuleFileError:
    """The error a rules file is refused with; the test fails if it loads."""
    with pytest.raises(RuleFileError) as caught:
        load_file(rules)
    return caught.value
