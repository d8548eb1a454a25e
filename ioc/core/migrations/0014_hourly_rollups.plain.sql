-- KPI rollups are kept per hour only: no panel, view or alert read the minute rollup, and
-- keeping it cost a fifth of the worker's database time per event (bench/pipeline.py).
DROP TABLE rollup_minute;
