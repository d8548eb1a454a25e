"""Reading the KPI functions of 0003_kpis.sql (the single definition of every KPI)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from ioc.core.db import connect
from ioc.core.settings import Settings

KPI_FUNCTIONS = {
    "dossiers": "kpi_dossiers",
    "documents": "kpi_documents",
    "field_reports": "kpi_field_reports",
}


def read_kpis(settings: Settings, since: datetime | None = None, until: datetime | None = None,
              unit: str | None = None, agency: str | None = None) -> dict[str, dict[str, Any]]:
    """{"dossiers": {...}, "documents": {...}, "field_reports": {...}} for the period and scope."""
    params = {"since": since or "-infinity", "until": until or "infinity",
              "unit": unit, "agency": agency}
    result: dict[str, dict[str, Any]] = {}
    with connect(settings, row_factory=dict_row) as conn:
        for name, function in KPI_FUNCTIONS.items():
            query = sql.SQL(
                "SELECT * FROM {}(%(since)s::timestamptz, %(until)s::timestamptz,"
                " %(unit)s::text, %(agency)s::text)"
            ).format(sql.Identifier(function))
            row = conn.execute(query, params).fetchone() or {}
            result[name] = {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
    return result
