"""Alerts on the KPIs and on the state tables. Where each part lives:

- rules.py: the rule model (YAML fields, validated); grammar.py its durations, scopes and
  windows; rulefile.py reads rule files, keeping lines for the errors.
- kinds.py: KINDS, what each rule `kind:` measures (the AlertKind protocol and Measurement in
  measurement.py; threshold.py the KPI comparison); evaluate.py: the state transitions it
  makes in the `alerts` table; ack.py: acknowledging and silencing (links.py: one-click links).
- outbox.py queues the messages, deliver.py sends them on the channels of its CHANNELS (the
  Channel protocol in transport.py: email.py, telegram.py, zalo.py, webhook.py) to the
  addresses of recipients.py, in the words of message.py.

The apps on top: `ioc alerts` (ioc/cli/alerts.py), /alerts (ioc/api/alerts.py) and the
worker's timer (streams/evaluate_alerts.py).
"""

from ioc.alerts.evaluate import Transition, evaluate, measure_all
from ioc.alerts.measurement import Measurement
from ioc.alerts.rules import METRICS, Rule, RuleError, RuleFileError, load_file, load_rules

__all__ = ["METRICS", "Measurement", "Rule", "RuleError", "RuleFileError", "Transition",
           "evaluate", "load_file", "load_rules", "measure_all"]
