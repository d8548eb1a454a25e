"""Threshold alerts on the KPIs: YAML rules (rules.py), evaluation and state transitions
stored in the `alerts` table (evaluate.py), and `ioc alerts` (cli.py)."""

from ioc.alerts.evaluate import Measurement, Transition, evaluate, measure_all
from ioc.alerts.rules import METRICS, Rule, RuleError, RuleFileError, load_file, load_rules

__all__ = ["METRICS", "Measurement", "Rule", "RuleError", "RuleFileError", "Transition",
           "evaluate", "load_file", "load_rules", "measure_all"]
