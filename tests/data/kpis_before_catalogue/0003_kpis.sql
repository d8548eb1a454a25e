-- KPIs, defined once here, by docs/domain.md. Dashboards, alerts and `ioc kpis` read these.
--
-- Periods are cohorts: an entity counts in the period of its anchor time (a dossier when it
-- was received, a document when it was first seen, a field report when it was requested).
-- Late / due soon / overdue compare with now(): they change as time passes, without events.

CREATE FUNCTION ioc_due_soon_horizon() RETURNS interval LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::interval FROM ioc_settings WHERE key = 'due_soon_horizon'),
                    INTERVAL '24 hours')
$$;

CREATE FUNCTION ioc_pct(part numeric, whole numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$ SELECT round(100 * part / nullif(whole, 0), 2) $$;

-- One row per dossier with the flags the KPIs count.
CREATE VIEW dossier_facts AS
SELECT d.*,
       d.status NOT IN (3, 7, 8)                                    AS to_handle,
       d.status IN (9, 10)                                          AS finished,
       d.status IN (1, 2, 4, 5, 6)                                  AS in_process,
       coalesce(d.status IN (9, 10) AND d.finished_at > d.due_at, false) AS late_finished,
       coalesce(d.status IN (1, 2, 4, 5, 6) AND d.due_at < now(), false) AS late_in_process,
       coalesce(d.status IN (1, 2, 4, 5, 6) AND d.due_at >= now()
                AND d.due_at < now() + ioc_due_soon_horizon(), false)  AS due_soon,
       d.channel IS NOT DISTINCT FROM 2                             AS online,
       coalesce(d.digitized, false)                                 AS is_digitized,
       coalesce(d.fee_required, false)                              AS has_fee,
       coalesce(d.fee_required AND d.paid_online, false)            AS is_paid_online,
       coalesce(d.satisfaction = 'unsatisfied', false)
           OR coalesce(d.complaint, false)                          AS dissatisfied
FROM dossiers d;

CREATE FUNCTION kpi_dossiers(since timestamptz DEFAULT '-infinity',
                             until timestamptz DEFAULT 'infinity',
                             unit text DEFAULT NULL, agency text DEFAULT NULL)
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
    )
    SELECT c.*,
           ioc_pct(c.to_handle - c.finished_late - c.late_in_process, c.to_handle),
           ioc_pct(c.online, c.received),
           ioc_pct(c.digitized, c.received),
           ioc_pct(c.paid_online, c.with_fee),
           ioc_pct(c.to_handle - c.dissatisfied_or_late, c.to_handle)
    FROM c
$$;

-- One row per document. A document without a status message yet has arrived (01).
CREATE VIEW document_facts AS
SELECT d.*,
       d.direction = 'incoming'                                     AS incoming,
       d.direction = 'outgoing'                                     AS outgoing,
       coalesce(d.direction = 'outgoing' AND d.signed, false)       AS outgoing_signed,
       coalesce(d.status = '06', false)                             AS completed,
       coalesce(d.status = '06' AND (d.deadline IS NULL OR d.completed_at <= d.deadline),
                false)                                              AS completed_on_time,
       coalesce(d.direction = 'incoming', false)
           AND coalesce(d.status, '01') NOT IN ('02', '06', '15')   AS in_backlog,
       coalesce(d.direction = 'incoming', false)
           AND coalesce(d.status, '01') NOT IN ('02', '06', '15')
           AND coalesce(d.deadline < now(), false)                  AS overdue
FROM documents d;

CREATE FUNCTION kpi_documents(since timestamptz DEFAULT '-infinity',
                              until timestamptz DEFAULT 'infinity',
                              unit text DEFAULT NULL, agency text DEFAULT NULL)
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
    )
    SELECT c.*, ioc_pct(c.outgoing_signed, c.outgoing), ioc_pct(c.completed_on_time, c.completed)
    FROM c
$$;

-- One row per field report.
CREATE VIEW field_report_facts AS
SELECT r.*,
       r.status IN ('open', 'investigating', 'in_progress')        AS is_open,
       r.status IN ('fixed', 'closed')                             AS resolved,
       r.status = 'duplicate'                                      AS is_duplicate,
       coalesce(r.status IN ('open', 'investigating', 'in_progress')
                AND r.expected_datetime < now(), false)            AS overdue,
       CASE WHEN r.status IN ('fixed', 'closed')
            THEN extract(epoch FROM r.resolved_at - r.requested_datetime) END AS resolve_seconds
FROM field_reports r;

CREATE FUNCTION kpi_field_reports(since timestamptz DEFAULT '-infinity',
                                  until timestamptz DEFAULT 'infinity',
                                  unit text DEFAULT NULL, agency text DEFAULT NULL)
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
$$;

-- The whole province, all time: what the wall's big numbers start from.
CREATE VIEW kpi_dossiers AS SELECT * FROM kpi_dossiers();
CREATE VIEW kpi_documents AS SELECT * FROM kpi_documents();
CREATE VIEW kpi_field_reports AS SELECT * FROM kpi_field_reports();

-- Per agency, all time: the league table's raw material.
CREATE VIEW kpi_dossiers_by_agency AS
SELECT a.agency_code, k.*
FROM (SELECT DISTINCT agency_code FROM dossiers) a,
     LATERAL kpi_dossiers(agency => a.agency_code) k;

-- Time-invariant counts per entity, unpivoted: what the rollups sum per bucket.
CREATE VIEW dossier_metrics AS
SELECT f.dossier_code AS entity_id, f.anchor_at, f.province_code, f.commune_code, f.agency_code,
       m.metric, m.value
FROM dossier_facts f,
     LATERAL (VALUES ('received', 1),
                     ('to_handle', f.to_handle::int),
                     ('finished', f.finished::int),
                     ('finished_on_time', (f.finished AND NOT f.late_finished)::int),
                     ('finished_late', f.late_finished::int),
                     ('in_process', f.in_process::int),
                     ('online', f.online::int),
                     ('digitized', f.is_digitized::int),
                     ('with_fee', f.has_fee::int),
                     ('paid_online', f.is_paid_online::int),
                     ('dissatisfied', (f.to_handle AND f.dissatisfied)::int),
                     ('refused', (f.status = 3)::int),
                     ('cancelled', (f.status = 7)::int)) AS m(metric, value)
WHERE m.value <> 0;

CREATE VIEW document_metrics AS
SELECT f.document_id AS entity_id, f.anchor_at, f.province_code, f.commune_code, f.agency_code,
       m.metric, m.value
FROM document_facts f,
     LATERAL (VALUES ('documents', 1),
                     ('incoming', coalesce(f.incoming, false)::int),
                     ('outgoing', coalesce(f.outgoing, false)::int),
                     ('outgoing_signed', f.outgoing_signed::int),
                     ('completed', f.completed::int),
                     ('completed_on_time', f.completed_on_time::int),
                     ('backlog', f.in_backlog::int)) AS m(metric, value)
WHERE m.value <> 0;

CREATE VIEW field_report_metrics AS
SELECT f.service_request_id AS entity_id, f.anchor_at, f.province_code, f.commune_code, f.agency_code,
       m.metric, m.value
FROM field_report_facts f,
     LATERAL (VALUES ('reports', 1::numeric),
                     ('open', f.is_open::int),
                     ('resolved', f.resolved::int),
                     ('duplicate', f.is_duplicate::int),
                     ('resolve_seconds', coalesce(f.resolve_seconds, 0))) AS m(metric, value)
WHERE m.value <> 0;
