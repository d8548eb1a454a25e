-- Every dead letter (ioc/dead_letters.py, written by the worker's store_dead_letters agent):
-- where it came from, why, and its size. Never the payload: it may hold personal data, and
-- stays on the dead-letter topic (dead_letter_partition / dead_letter_offset find it there).
-- One row per dead letter: `origin_key` is the source (topic, partition, offset) of a worker's
-- dead letter, or a hash of a connector's (its name, reason, error, key and record), so a
-- replayed or re-sent dead letter is stored once. A hypertable's unique index must hold the
-- time column, so here the writer keeps `origin_key` unique (an advisory lock per key, then
-- insert if absent); retention as the events' (`ioc db migrate`). The plain variant
-- (.plain.sql) creates the same table with a unique `origin_key`.
CREATE TABLE dead_letters (
    at                    timestamptz NOT NULL,  -- when it was dead-lettered
    origin                text        NOT NULL,  -- the source topic or connector
    reason                text        NOT NULL,  -- ioc.reason: invalid_json, unmappable...
    error                 text,                  -- ioc.error, truncated
    message_key           text,                  -- the entity id (dossier code...), truncated
    payload_bytes         integer     NOT NULL,
    source_topic          text,
    source_partition      integer,
    source_offset         bigint,
    source_connector      text,
    dead_letter_partition integer     NOT NULL,
    dead_letter_offset    bigint      NOT NULL,
    origin_key            text        NOT NULL,
    stored_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_origin_key ON dead_letters (origin_key);
-- create_hypertable adds the index on `at` (dead_letters_at_idx).
SELECT create_hypertable('dead_letters', by_range('at', INTERVAL '30 days'));

-- Former districts (before 1 July 2025 there was a district level; DOMAIN.md tracks rates per
-- district too for that time): the KPI functions of 0003_kpis.sql take a fifth argument,
-- `former_district` (a former district code; NULL: no filter), which the dashboards' "Huyện cũ"
-- variable passes. The KPIs are defined once, in the five-argument functions; the four-argument
-- ones (every existing caller) now call them with NULL. The fifth argument has no default, so
-- a call with four arguments or fewer is never ambiguous.

-- Partial indexes: only records of the former map carry a district, so the variable's list
-- and the filter read those alone.
CREATE INDEX dossiers_former_district ON dossiers (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX documents_former_district ON documents (former_district_code)
    WHERE former_district_code IS NOT NULL;
CREATE INDEX field_reports_former_district ON field_reports (former_district_code)
    WHERE former_district_code IS NOT NULL;

CREATE FUNCTION kpi_dossiers(since timestamptz, until timestamptz, unit text, agency text,
                             former_district text)
RETURNS TABLE (received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint,
               on_time_rate numeric, online_rate numeric, digitized_rate numeric,
               paid_online_rate numeric, satisfaction_rate numeric)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        SELECT count(*)                                                    AS received,
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
        FROM dossier_facts
        WHERE anchor_at >= since AND anchor_at < until
          AND (unit IS NULL OR unit IN (province_code, commune_code))
          AND (agency IS NULL OR agency_code = agency)
          AND (former_district IS NULL OR former_district_code = former_district)
    )
    SELECT c.*,
           ioc_pct(c.to_handle - c.finished_late - c.late_in_process, c.to_handle),
           ioc_pct(c.online, c.received),
           ioc_pct(c.digitized, c.received),
           ioc_pct(c.paid_online, c.with_fee),
           ioc_pct(c.to_handle - c.dissatisfied_or_late, c.to_handle)
    FROM c
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

CREATE FUNCTION kpi_documents(since timestamptz, until timestamptz, unit text, agency text,
                              former_district text)
RETURNS TABLE (documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        SELECT count(*)                                   AS documents,
               count(*) FILTER (WHERE incoming)           AS incoming,
               count(*) FILTER (WHERE outgoing)           AS outgoing,
               count(*) FILTER (WHERE outgoing_signed)    AS outgoing_signed,
               count(*) FILTER (WHERE completed)          AS completed,
               count(*) FILTER (WHERE completed_on_time)  AS completed_on_time,
               count(*) FILTER (WHERE in_backlog)         AS backlog,
               count(*) FILTER (WHERE overdue)            AS backlog_overdue
        FROM document_facts
        WHERE anchor_at >= since AND anchor_at < until
          AND (unit IS NULL OR unit IN (province_code, commune_code))
          AND (agency IS NULL OR agency_code = agency)
          AND (former_district IS NULL OR former_district_code = former_district)
    )
    SELECT c.*, ioc_pct(c.outgoing_signed, c.outgoing), ioc_pct(c.completed_on_time, c.completed)
    FROM c
$$;

CREATE OR REPLACE FUNCTION kpi_documents(since timestamptz DEFAULT '-infinity',
                                         until timestamptz DEFAULT 'infinity',
                                         unit text DEFAULT NULL, agency text DEFAULT NULL)
RETURNS TABLE (documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$ SELECT * FROM kpi_documents(since, until, unit, agency, NULL::text) $$;

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
