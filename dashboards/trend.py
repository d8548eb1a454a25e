"""The trend period variable (`$trend`): day, week, month, quarter or year, in Vietnam's calendar.

Its value is a PostgreSQL `date_trunc` field name, used as `date_trunc('$trend', column,
'Asia/Ho_Chi_Minh')`: local midnights, weeks from Monday (ISO), quarters from January.
Grafana's `$__timeGroup` would cut at UTC midnight (07:00 in Vietnam) and has no month.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

TIMEZONE = "Asia/Ho_Chi_Minh"
PERIODS = {"day": "Ngày", "week": "Tuần", "month": "Tháng", "quarter": "Quý", "year": "Năm"}


def trend_variable() -> db.CustomVariable:
    """A single choice among PERIODS (no "All": a trend needs one period)."""
    options = [model.VariableOption(selected=value == "day", text=text, value=value)
               for value, text in PERIODS.items()]
    return (db.CustomVariable("trend").label("Chu kỳ")
            .values(",".join(f"{text} : {value}" for value, text in PERIODS.items()))
            .options(options).multi(False).include_all(False).allow_custom_value(False)
            .current(model.VariableOption(selected=True, text=PERIODS["day"], value="day")))


def period(column: str) -> str:
    """The start of `column`'s period (timestamptz), per the chosen `$trend`."""
    return f"date_trunc('$trend', {column}, '{TIMEZONE}')"
