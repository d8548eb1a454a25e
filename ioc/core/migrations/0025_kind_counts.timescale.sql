-- Event counts by kind and source only, per minute and per hour, for the pipeline's panels
-- (dashboards/pipeline.py): event_counts_minute/_hour also count per province, commune and
-- agency, so they barely aggregate (9.6 million minute rows for 10 million events) and 30 days
-- of them took 0.2-0.3 s to sum (bench/panels.py). These hold at most a row per kind and
-- source per bucket: continuous aggregates with real-time aggregation, the hours on the
-- minutes (refresh policies: ioc/core/db.py), so the worker does nothing more.
CREATE MATERIALIZED VIEW kind_counts_minute
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', occurred_at) AS bucket, kind, source,
       count(*) AS events
FROM events
GROUP BY 1, 2, 3
WITH NO DATA;

CREATE MATERIALIZED VIEW kind_counts_hour
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, kind, source,
       sum(events)::bigint AS events
FROM kind_counts_minute
GROUP BY 1, 2, 3
WITH NO DATA;

-- event_counts (migration 0017) reads them: the same minute buckets of [since, until], whole
-- hours from the hourly counts with `hourly`; without the place columns nobody read.
DROP FUNCTION event_counts(timestamptz, timestamptz, boolean);
CREATE FUNCTION event_counts(since timestamptz, until timestamptz, hourly boolean)
RETURNS TABLE (bucket timestamptz, kind text, source text, events bigint)
LANGUAGE sql STABLE AS $$
    -- The whole hours: from the first hour starting at or after `since` to the end of the
    -- last hour ending at or before `until` (its last minute starts at or before `until`).
    SELECT h.bucket, h.kind, h.source, h.events
    FROM kind_counts_hour h
    WHERE hourly
      AND h.bucket >= time_bucket(INTERVAL '1 hour', since + INTERVAL '59:59.999999')
      AND h.bucket < time_bucket(INTERVAL '1 hour', until - INTERVAL '59 minutes')
                     + INTERVAL '1 hour'
    UNION ALL
    SELECT m.bucket, m.kind, m.source, m.events
    FROM kind_counts_minute m
    WHERE m.bucket >= since AND m.bucket <= until
      AND (NOT hourly
           OR m.bucket < time_bucket(INTERVAL '1 hour', since + INTERVAL '59:59.999999')
           OR m.bucket >= time_bucket(INTERVAL '1 hour', until - INTERVAL '59 minutes')
                          + INTERVAL '1 hour')
$$;
