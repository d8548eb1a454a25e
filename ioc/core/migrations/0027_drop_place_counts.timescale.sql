-- What nothing reads any more: the per-place event counts (migration 0002; the pipeline's
-- panels and event_counts() read kind_counts_minute/_hour since 0025) and kpis.sql's view
-- kpi_dossiers_by_agency (the wall reads kpi_dossiers_by as of its own moment). Their refresh
-- policies (ioc/core/db.py) ran every minute; the hours are built on the minutes, so first.
SELECT remove_continuous_aggregate_policy('event_counts_hour', if_exists => true);
SELECT remove_continuous_aggregate_policy('event_counts_minute', if_exists => true);
DROP MATERIALIZED VIEW event_counts_hour;
DROP MATERIALIZED VIEW event_counts_minute;

-- kpis.sql, run after the migrations, no longer creates it (absent on a fresh install).
DROP VIEW IF EXISTS kpi_dossiers_by_agency;
