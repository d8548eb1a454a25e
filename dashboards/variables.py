"""The `$commune` and `$agency` variables every drill-down shares ("All" = SQL NULL), and the
selection they make with the time range and the former district.

Their lists come from `ioc_communes()` / `ioc_agencies()` (migration 0010): one index probe
per code instead of reading every dossier, document and report (0.5-0.9 s at 10 million
events, bench/panels.py).
"""

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import former_district
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


def scope_variables() -> list[db.QueryVariable]:
    """`$commune` and `$agency`, in that order."""
    return [commune_variable(), agency_variable()]

# The selection every drill-down panel applies: the time range and the variables.
PERIOD = "$__timeFrom()::timestamptz, $__timeTo()::timestamptz"
DISTRICT = "$former_district::text"
# The moment the KPIs are evaluated at (late, open, overdue): the range's end, or now when the
# range runs on past it; a past period shows what it was at its end (docs/domain.md).
AS_OF = "least($__timeTo()::timestamptz, now())"
# As the arguments of kpi_*(since, until, unit, agency, former_district, as_of).
SCOPE = f"{PERIOD}, $commune::text, $agency::text, {DISTRICT}, {AS_OF}"
# As a filter on a *_facts view, the KPI functions' own rule: commune, agency, district...
CHOSEN = f"""($commune::text IS NULL OR $commune::text IN (province_code, commune_code))
  AND ($agency::text IS NULL OR agency_code = $agency::text)
  AND {former_district.CONDITION}"""
# ... and the time range, on the anchor time.
SELECTION = f"""anchor_at >= $__timeFrom()::timestamptz AND anchor_at < $__timeTo()::timestamptz
  AND {CHOSEN}"""
LIST_LIMIT = 50  # rows of a drill-down's lists
