-- Former districts (before 1 July 2025 there was a district level, and rates were tracked per
-- district too for that time: docs/domain.md): the KPI functions took a fifth argument,
-- `former_district`, and grouped variants (`kpi_dossiers_by`...) came, one GROUP BY for every
-- agency or commune of a table instead of a call per group (bench/panels.py: 3-6 s before for
-- 30 days at 10 million events). Their definitions are in ioc/core/kpis.sql, applied after
-- the versioned migrations.

-- Partial indexes: only records of the former map carry a district, so the variable's list
-- and the filter read those alone.
CREATE INDEX dossiers_former_district ON dossiers (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX documents_former_district ON documents (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX field_reports_former_district ON field_reports (former_district_code)
    WHERE former_district_code IS NOT NULL;

-- Event counts of the minute buckets in [since, until] (both ends included, as Grafana's
-- $__timeFilter), for the pipeline's panels (bench/panels.py: 0.4-0.8 s for 30 days of minutes).
-- With `hourly`, the hours wholly inside the range come from event_counts_hour (60 times fewer
-- rows) and only the minutes of the partial hours at either end from event_counts_minute: the
-- same sums per hour or coarser bucket (hours are aligned as Grafana's buckets of whole hours
-- are). Without it (buckets finer than an hour), minutes only.
CREATE FUNCTION event_counts(since timestamptz, until timestamptz, hourly boolean)
RETURNS TABLE (bucket timestamptz, kind text, source text, province_code text,
               commune_code text, agency_code text, events bigint)
LANGUAGE sql STABLE AS $$
    -- The whole hours: from the first hour starting at or after `since` to the end of the
    -- last hour ending at or before `until` (its last minute starts at or before `until`).
    SELECT h.bucket, h.kind, h.source, h.province_code, h.commune_code, h.agency_code, h.events
    FROM event_counts_hour h
    WHERE hourly
      AND h.bucket >= time_bucket(INTERVAL '1 hour', since + INTERVAL '59:59.999999')
      AND h.bucket < time_bucket(INTERVAL '1 hour', until - INTERVAL '59 minutes')
                     + INTERVAL '1 hour'
    UNION ALL
    SELECT m.bucket, m.kind, m.source, m.province_code, m.commune_code, m.agency_code, m.events
    FROM event_counts_minute m
    WHERE m.bucket >= since AND m.bucket <= until
      AND (NOT hourly
           OR m.bucket < time_bucket(INTERVAL '1 hour', since + INTERVAL '59:59.999999')
           OR m.bucket >= time_bucket(INTERVAL '1 hour', until - INTERVAL '59 minutes')
                          + INTERVAL '1 hour')
$$;
