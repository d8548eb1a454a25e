-- TimescaleDB: hypertables, compression, continuous aggregates with real-time aggregation.
-- Policies (compression, retention, refresh) are set by `ioc db migrate` from the settings.

SELECT create_hypertable('events', by_range('occurred_at', INTERVAL '7 days'), migrate_data => true);
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'kind',
    timescaledb.compress_orderby = 'occurred_at DESC, event_id'
);

SELECT create_hypertable('rollup_minute', by_range('bucket', INTERVAL '7 days'), migrate_data => true);

CREATE MATERIALIZED VIEW event_counts_minute
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', occurred_at) AS bucket,
       kind, source, province_code, commune_code, agency_code,
       count(*) AS events
FROM events
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;

CREATE MATERIALIZED VIEW event_counts_hour
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       kind, source, province_code, commune_code, agency_code,
       sum(events)::bigint AS events
FROM event_counts_minute
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;
