-- Former districts (before 1 July 2025 there was a district level, and rates were tracked per
-- district too for that time: docs/domain.md): the KPI functions of 0003_kpis.sql take a fifth
-- argument, `former_district` (a former district code; NULL: no filter), which the dashboards'
-- "Huyện cũ" variable passes. The KPIs are defined once, in the five-argument functions; the
-- four-argument ones (every existing caller) now call them with NULL. The fifth argument has no
-- default, so a call with four arguments or fewer is never ambiguous.

-- Partial indexes: only records of the former map carry a district, so the variable's list
-- and the filter read those alone.
CREATE INDEX dossiers_former_district ON dossiers (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX documents_former_district ON documents (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX field_reports_former_district ON field_reports (former_district_code)
    WHERE former_district_code IS NOT NULL;

CREATE FUNCTION kpi_field_reports(since timestamptz, until timestamptz, unit text, agency text,
                                  former_district text)
RETURNS TABLE (reports bigint, open bigint, resolved bigint, duplicate bigint, overdue bigint,
               median_hours_to_resolve numeric)
LANGUAGE sql STABLE AS $$
    SELECT count(*),
           count(*) FILTER (WHERE is_open),
           count(*) FILTER (WHERE resolved),
           count(*) FILTER (WHERE is_duplicate),
           count(*) FILTER (WHERE overdue),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_seconds)
                  / 3600)::numeric, 2)
    FROM field_report_facts
    WHERE anchor_at >= since AND anchor_at < until
      AND (unit IS NULL OR unit IN (province_code, commune_code))
      AND (agency IS NULL OR agency_code = agency)
      AND (former_district IS NULL OR former_district_code = former_district)
$$;

CREATE OR REPLACE FUNCTION kpi_field_reports(since timestamptz DEFAULT '-infinity',
                                             until timestamptz DEFAULT 'infinity',
                                             unit text DEFAULT NULL, agency text DEFAULT NULL)
RETURNS TABLE (reports bigint, open bigint, resolved bigint, duplicate bigint, overdue bigint,
               median_hours_to_resolve numeric)
LANGUAGE sql STABLE AS $$
    SELECT * FROM kpi_field_reports(since, until, unit, agency, NULL::text)
$$;

-- KPIs per group in one pass (bench/panels.py, 10 million events): the 766 rankings and the
-- dashboards' "per agency" / "per commune" tables called kpi_dossiers once per group
-- (LATERAL), and the `(agency IS NULL OR agency_code = agency)` filter of each call could not
-- use an index: 3-6 s for 30 days. Now one GROUP BY over the facts.
--
-- The KPI formulas are written once, in the grouped functions below. `group_by` NULL is "no
-- grouping": one group, the whole selection (no row when it is empty), and the scalar
-- functions (0003, with the former district above) are that row, or zeros and no rates for
-- an empty selection. So a group's values are by construction kpi_*(...) restricted to that
-- group. (A GROUP BY on a constant costs what a plain aggregate costs; a ROLLUP adding the
-- empty selection's row would aggregate twice.)

CREATE FUNCTION ioc_bad_group_by(group_by text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RAISE EXCEPTION 'group_by must be ''agency'', ''commune'', ''procedure'' or NULL, not %',
        quote_literal(group_by) USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- The group of a row: its agency, its commune/ward code or its procedure ('' when it has none;
-- procedures: dossiers only), or NULL (one group) when `group_by` is NULL.
CREATE FUNCTION ioc_group_key(group_by text, agency_code text, commune_code text,
                              procedure_code text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN group_by IS NULL THEN NULL
                WHEN group_by = 'agency' THEN agency_code
                WHEN group_by = 'commune' THEN commune_code
                WHEN group_by = 'procedure' THEN coalesce(procedure_code, '')
                ELSE ioc_bad_group_by(group_by) END
$$;

-- Per group of the dossiers anchored in [since, until), in `unit`, of `agency` and
-- `former_district` (NULL: no filter): the group's code, its name (agency or procedure
-- groups) and every column of kpi_dossiers.
CREATE FUNCTION kpi_dossiers_by(since timestamptz, until timestamptz, group_by text,
                                unit text DEFAULT NULL, agency text DEFAULT NULL,
                                former_district text DEFAULT NULL)
RETURNS TABLE (group_code text, group_name text,
               received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint,
               on_time_rate numeric, online_rate numeric, digitized_rate numeric,
               paid_online_rate numeric, satisfaction_rate numeric)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        SELECT group_code,
               CASE WHEN group_by = 'agency' THEN max(agency_name)
                    WHEN group_by = 'procedure' THEN max(procedure_name) END AS group_name,
               count(*)                                                    AS received,
               count(*) FILTER (WHERE to_handle)                           AS to_handle,
               count(*) FILTER (WHERE finished)                            AS finished,
               count(*) FILTER (WHERE finished AND NOT late_finished)      AS finished_on_time,
               count(*) FILTER (WHERE late_finished)                       AS finished_late,
               count(*) FILTER (WHERE in_process)                          AS in_process,
               count(*) FILTER (WHERE late_in_process)                     AS late_in_process,
               count(*) FILTER (WHERE due_soon)                            AS due_soon,
               count(*) FILTER (WHERE in_process AND NOT late_in_process
                                AND NOT due_soon)                         AS not_yet_due,
               count(*) FILTER (WHERE online)                              AS online,
               count(*) FILTER (WHERE is_digitized)                        AS digitized,
               count(*) FILTER (WHERE has_fee)                             AS with_fee,
               count(*) FILTER (WHERE is_paid_online)                      AS paid_online,
               count(*) FILTER (WHERE to_handle AND (dissatisfied OR late_finished
                                                     OR late_in_process)) AS dissatisfied_or_late
        FROM (SELECT ioc_group_key(group_by, agency_code, commune_code, procedure_code)
                     AS group_code, *
              FROM dossier_facts
              WHERE anchor_at >= since AND anchor_at < until
                AND (unit IS NULL OR unit IN (province_code, commune_code))
                AND (agency IS NULL OR agency_code = agency)
                AND (former_district IS NULL OR former_district_code = former_district)) f
        GROUP BY group_code
    )
    SELECT c.*,
           ioc_pct(c.to_handle - c.finished_late - c.late_in_process, c.to_handle),
           ioc_pct(c.online, c.received),
           ioc_pct(c.digitized, c.received),
           ioc_pct(c.paid_online, c.with_fee),
           ioc_pct(c.to_handle - c.dissatisfied_or_late, c.to_handle)
    FROM c
$$;

CREATE FUNCTION kpi_dossiers(since timestamptz, until timestamptz, unit text,
                             agency text, former_district text)
RETURNS TABLE (received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint,
               on_time_rate numeric, online_rate numeric, digitized_rate numeric,
               paid_online_rate numeric, satisfaction_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(k.received, 0), coalesce(k.to_handle, 0), coalesce(k.finished, 0),
           coalesce(k.finished_on_time, 0), coalesce(k.finished_late, 0),
           coalesce(k.in_process, 0), coalesce(k.late_in_process, 0), coalesce(k.due_soon, 0),
           coalesce(k.not_yet_due, 0), coalesce(k.online, 0), coalesce(k.digitized, 0),
           coalesce(k.with_fee, 0), coalesce(k.paid_online, 0),
           coalesce(k.dissatisfied_or_late, 0), k.on_time_rate, k.online_rate,
           k.digitized_rate, k.paid_online_rate, k.satisfaction_rate
    FROM (VALUES (1)) AS one
    LEFT JOIN kpi_dossiers_by(since, until, NULL, unit, agency, former_district) k ON true
$$;

CREATE OR REPLACE FUNCTION kpi_dossiers(since timestamptz DEFAULT '-infinity',
                                        until timestamptz DEFAULT 'infinity',
                                        unit text DEFAULT NULL, agency text DEFAULT NULL)
RETURNS TABLE (received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint,
               on_time_rate numeric, online_rate numeric, digitized_rate numeric,
               paid_online_rate numeric, satisfaction_rate numeric)
LANGUAGE sql STABLE AS $$ SELECT * FROM kpi_dossiers(since, until, unit, agency, NULL::text) $$;

-- Per group of documents, the same way: the group's code, its agency name (agency groups
-- only) and every column of kpi_documents.
CREATE FUNCTION kpi_documents_by(since timestamptz, until timestamptz, group_by text,
                                 unit text DEFAULT NULL, agency text DEFAULT NULL,
                                 former_district text DEFAULT NULL)
RETURNS TABLE (group_code text, group_name text,
               documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        SELECT group_code,
               CASE WHEN group_by = 'agency' THEN max(agency_name) END AS group_name,
               count(*)                                   AS documents,
               count(*) FILTER (WHERE incoming)           AS incoming,
               count(*) FILTER (WHERE outgoing)           AS outgoing,
               count(*) FILTER (WHERE outgoing_signed)    AS outgoing_signed,
               count(*) FILTER (WHERE completed)          AS completed,
               count(*) FILTER (WHERE completed_on_time)  AS completed_on_time,
               count(*) FILTER (WHERE in_backlog)         AS backlog,
               count(*) FILTER (WHERE overdue)            AS backlog_overdue
        FROM (SELECT ioc_group_key(group_by, agency_code, commune_code) AS group_code, *
              FROM document_facts
              WHERE anchor_at >= since AND anchor_at < until
                AND (unit IS NULL OR unit IN (province_code, commune_code))
                AND (agency IS NULL OR agency_code = agency)
                AND (former_district IS NULL OR former_district_code = former_district)) f
        GROUP BY group_code
    )
    SELECT c.*, ioc_pct(c.outgoing_signed, c.outgoing), ioc_pct(c.completed_on_time, c.completed)
    FROM c
$$;

CREATE FUNCTION kpi_documents(since timestamptz, until timestamptz, unit text,
                              agency text, former_district text)
RETURNS TABLE (documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(k.documents, 0), coalesce(k.incoming, 0), coalesce(k.outgoing, 0),
           coalesce(k.outgoing_signed, 0), coalesce(k.completed, 0),
           coalesce(k.completed_on_time, 0), coalesce(k.backlog, 0),
           coalesce(k.backlog_overdue, 0), k.signed_rate, k.on_time_rate
    FROM (VALUES (1)) AS one
    LEFT JOIN kpi_documents_by(since, until, NULL, unit, agency, former_district) k ON true
$$;

CREATE OR REPLACE FUNCTION kpi_documents(since timestamptz DEFAULT '-infinity',
                                         until timestamptz DEFAULT 'infinity',
                                         unit text DEFAULT NULL, agency text DEFAULT NULL)
RETURNS TABLE (documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$ SELECT * FROM kpi_documents(since, until, unit, agency, NULL::text) $$;

-- Per agency, all time (ioc/embedded/wall.py): the grouped function, same columns as before.
CREATE OR REPLACE VIEW kpi_dossiers_by_agency AS
SELECT group_code AS agency_code, received, to_handle, finished, finished_on_time,
       finished_late, in_process, late_in_process, due_soon, not_yet_due, online, digitized,
       with_fee, paid_online, dissatisfied_or_late, on_time_rate, online_rate, digitized_rate,
       paid_online_rate, satisfaction_rate
FROM kpi_dossiers_by('-infinity', 'infinity', 'agency');

-- The 766 league table of one grouping ('agency' or 'commune'), from the grouped function:
-- the rule of 0005 (rate >= target: full points, else rate / target x points).
CREATE FUNCTION kpi_ranking(since timestamptz, until timestamptz, group_by text, unit text,
                            on_time_target numeric, digitized_target numeric,
                            online_target numeric, satisfaction_target numeric)
RETURNS TABLE (rank bigint, group_code text, group_name text, received bigint,
               to_handle bigint, on_time_rate numeric, digitized_rate numeric,
               online_rate numeric, satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    WITH p AS (
        SELECT k.group_code, k.group_name, k.received, k.to_handle, k.on_time_rate,
               k.digitized_rate, k.online_rate, k.satisfaction_rate,
               ioc_766_points(k.on_time_rate, on_time_target, 20)           AS progress_points,
               ioc_766_points(k.digitized_rate, digitized_target, 22)       AS digitization_points,
               ioc_766_points(k.online_rate, online_target, 22)             AS online_points,
               ioc_766_points(k.satisfaction_rate, satisfaction_target, 18) AS satisfaction_points
        FROM kpi_dossiers_by(since, until, group_by, unit) k
        WHERE k.group_code <> ''  -- dossiers of province-level agencies have no commune
    ), t AS (
        SELECT p.*, coalesce(p.progress_points, 0) + coalesce(p.digitization_points, 0)
                    + coalesce(p.online_points, 0) + coalesce(p.satisfaction_points, 0)
                    AS total_points
        FROM p
    )
    SELECT rank() OVER (ORDER BY t.total_points DESC), t.*
    FROM t
    ORDER BY t.total_points DESC, t.group_code
$$;

-- The league tables of 0005, same columns, now from kpi_ranking.
CREATE OR REPLACE FUNCTION kpi_agency_ranking(since timestamptz DEFAULT '-infinity',
                                              until timestamptz DEFAULT 'infinity',
                                              unit text DEFAULT NULL,
                                              on_time_target numeric DEFAULT 99,
                                              digitized_target numeric DEFAULT 90,
                                              online_target numeric DEFAULT 80,
                                              satisfaction_target numeric DEFAULT 95)
RETURNS TABLE (rank bigint, agency_code text, agency_name text, received bigint,
               to_handle bigint, on_time_rate numeric, digitized_rate numeric,
               online_rate numeric, satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    SELECT * FROM kpi_ranking(since, until, 'agency', unit, on_time_target, digitized_target,
                              online_target, satisfaction_target)
$$;

CREATE OR REPLACE FUNCTION kpi_commune_ranking(since timestamptz DEFAULT '-infinity',
                                               until timestamptz DEFAULT 'infinity',
                                               on_time_target numeric DEFAULT 99,
                                               digitized_target numeric DEFAULT 90,
                                               online_target numeric DEFAULT 80,
                                               satisfaction_target numeric DEFAULT 95)
RETURNS TABLE (rank bigint, commune_code text, received bigint, to_handle bigint,
               on_time_rate numeric, digitized_rate numeric, online_rate numeric,
               satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    SELECT rank, group_code, received, to_handle, on_time_rate, digitized_rate, online_rate,
           satisfaction_rate, progress_points, digitization_points, online_points,
           satisfaction_points, total_points
    FROM kpi_ranking(since, until, 'commune', NULL, on_time_target, digitized_target,
                     online_target, satisfaction_target)
$$;

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
