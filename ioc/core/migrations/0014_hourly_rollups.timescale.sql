-- KPI rollups are kept per hour only: no panel, view or alert read the minute rollup, and
-- keeping it cost a fifth of the worker's database time per event (bench/pipeline.py).
-- The hourly rollup becomes the hypertable (monthly chunks: a few thousand rows a day).
DROP TABLE rollup_minute;
SELECT create_hypertable('rollup_hour', by_range('bucket', INTERVAL '30 days'), migrate_data => true);
