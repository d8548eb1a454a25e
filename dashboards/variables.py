"""The `$commune` and `$agency` variables every drill-down shares ("All" = SQL NULL).

Their lists come from `ioc_communes()` / `ioc_agencies()` (migration 0010): one index probe
per code instead of reading every dossier, document and report (0.5-0.9 s at 10 million
events, bench/panels.py).
"""

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.sdk import query_variable

COMMUNES = "SELECT commune_code FROM ioc_communes()"
AGENCIES = """SELECT agency_code AS __value,
       coalesce(agency_name, agency_code) || ' (' || agency_code || ')' AS __text
FROM ioc_agencies()
ORDER BY 1"""


def commune_variable() -> db.QueryVariable:
    return query_variable("commune", "Xã/phường", COMMUNES, all_value="NULL")


def agency_variable() -> db.QueryVariable:
    return query_variable("agency", "Cơ quan", AGENCIES, all_value="NULL")
