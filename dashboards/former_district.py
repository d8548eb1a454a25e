"""The former district variable (`$former_district`, "Huyện cũ"): the district level ended on
1 July 2025, and records from before then carry their district's code (`former_district_code`,
ioc/core/events.py), the rates of that time being tracked per district too (docs/domain.md).

`vietnam-provinces` (2025.10.1) lists today's provinces and communes only, no former district
names, so the choices are the codes found in the data. "All" is SQL NULL: no filter (records
without a former district included); a chosen district keeps only the records that carry it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.sdk import query_variable

NAME = "former_district"
LABEL = "Huyện cũ (trước 1/7/2025)"
# On a table or view with a `former_district_code` column.
CONDITION = f"(${NAME}::text IS NULL OR former_district_code = ${NAME}::text)"


def variable(table: str) -> db.QueryVariable:
    """The codes found in `table` (dossiers, documents, field_reports)."""
    return query_variable(NAME, LABEL, f"""SELECT DISTINCT former_district_code AS __value,
       'Huyện cũ ' || former_district_code AS __text
FROM {table}
WHERE former_district_code IS NOT NULL
ORDER BY 1""", all_value="NULL")
