-- Event counts by kind and source only, per minute and per hour, for the pipeline's panels
-- (dashboards/pipeline.py): event_counts_minute/_hour also count per province, commune and
-- agency, so they barely aggregate (9.6 million minute rows for 10 million events) and 30 days
-- of them took 0.2-0.3 s to sum (bench/panels.py). These hold at most a row per kind and
-- source per bucket. Kept by the worker (streams/store.py, COUNT_TABLES) on plain PostgreSQL.
CREATE TABLE kind_counts_minute (
    bucket timestamptz NOT NULL,
    kind   text        NOT NULL,
    source text        NOT NULL,
    events bigint      NOT NULL,
    PRIMARY KEY (bucket, kind, source)
);
CREATE TABLE kind_counts_hour (LIKE kind_counts_minute INCLUDING ALL);

-- What the worker has counted so far; its writes wait for the copy (SHARE blocks them).
LOCK TABLE event_counts_minute, event_counts_hour IN SHARE MODE;
INSERT INTO kind_counts_minute
SELECT bucket, kind, source, sum(events) FROM event_counts_minute GROUP BY 1, 2, 3;
INSERT INTO kind_counts_hour
SELECT bucket, kind, source, sum(events) FROM event_counts_hour GROUP BY 1, 2, 3;

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
