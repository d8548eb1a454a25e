-- Plain PostgreSQL: the same names TimescaleDB provides, so every query runs unchanged.

-- TimescaleDB's time_bucket: buckets aligned to Monday 2000-01-03, months to 2000-01-01 (UTC).
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN extract(year FROM bucket_width) = 0 AND extract(month FROM bucket_width) = 0
        THEN date_bin(bucket_width, ts, TIMESTAMPTZ '2000-01-03 00:00:00+00')
        -- Months are added to a UTC wall-clock timestamp: the session's TimeZone plays no part.
        ELSE (TIMESTAMP '2000-01-01 00:00:00' + make_interval(months =>
            (floor(((extract(year FROM ts AT TIME ZONE 'UTC') - 2000) * 12
                    + extract(month FROM ts AT TIME ZONE 'UTC') - 1)
                   / (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width)))
             * (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width)))::int))
             AT TIME ZONE 'UTC'
    END
$$;

-- Buckets in a time zone (local days and months of Asia/Ho_Chi_Minh for the wall).
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz, timezone text)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (time_bucket(bucket_width, (ts AT TIME ZONE timezone) AT TIME ZONE 'UTC')
            AT TIME ZONE 'UTC') AT TIME ZONE timezone
$$;

CREATE INDEX events_occurred ON events USING brin (occurred_at);

-- Event counts, kept by the worker (continuous aggregates where TimescaleDB is installed).
CREATE TABLE event_counts_minute (
    bucket        timestamptz NOT NULL,
    kind          text        NOT NULL,
    source        text        NOT NULL,
    province_code text        NOT NULL,
    commune_code  text        NOT NULL,
    agency_code   text        NOT NULL,
    events        bigint      NOT NULL,
    PRIMARY KEY (bucket, kind, source, province_code, commune_code, agency_code)
);
CREATE TABLE event_counts_hour (LIKE event_counts_minute INCLUDING ALL);
