-- What nothing reads any more: the per-place event counts (migration 0002; the pipeline's
-- panels and event_counts() read kind_counts_minute/_hour since 0025) and kpis.sql's view
-- kpi_dossiers_by_agency (the wall reads kpi_dossiers_by as of its own moment). The worker
-- kept these counts on every batch, two more upserts in its insert statement.
-- A worker of an older version still running finds no table: a database error it retries
-- with backoff (not a data error, nothing is dead-lettered) until it is replaced.
DROP TABLE event_counts_hour, event_counts_minute;

-- kpis.sql, run after the migrations, no longer creates it (absent on a fresh install).
DROP VIEW IF EXISTS kpi_dossiers_by_agency;
