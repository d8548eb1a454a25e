-- The KPIs, defined once here, by docs/domain.md; their names, labels, units and targets are
-- the catalogue in kpis.py beside this file. Dashboards, alerts, the wall and `ioc kpis` read
-- these functions and views.
--
-- `ioc db migrate` applies this file after the versioned migrations, every time, in one
-- transaction: edit a formula here and migrate. Everything is CREATE OR REPLACE, which keeps
-- a function's arguments (names, defaults) and result columns, and a view's columns (new ones
-- may only be added at the end). To change those, add a versioned migration that drops the
-- object (IF EXISTS: a fresh database has none yet; CASCADE takes what depends on it) and
-- write the new definition here.
--
-- Periods are cohorts: an entity counts in the period of its anchor time (a dossier when it
-- was received, a document when it was first seen, a field report when it was requested).
-- Every function selects the entities anchored in [since, until), in `unit` (a province or
-- commune/ward code), of `agency` and `former_district`; NULL: no filter.
--
-- As of a moment: every KPI function takes `as_of` last (default now()) and counts the state
-- at that moment (docs/domain.md, "As of a moment"): an entity anchored after it does not
-- exist yet, a step taken after it (finished, refused, completed, resolved) is not taken yet,
-- and late / due soon / overdue compare with it. A closed period asked as of its end gives
-- the same figures every day after. The *_facts_at(as_of) functions give the rows with their
-- flags as of `as_of`; as_of NULL there is the latest state with late against now(), which is
-- what the *_facts views show (their time-invariant flags feed the hourly rollups).

CREATE OR REPLACE FUNCTION ioc_due_soon_horizon() RETURNS interval LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::interval FROM ioc_settings WHERE key = 'due_soon_horizon'),
                    INTERVAL '24 hours')
$$;

CREATE OR REPLACE FUNCTION ioc_pct(part numeric, whole numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$ SELECT round(100 * part / nullif(whole, 0), 2) $$;

CREATE OR REPLACE FUNCTION ioc_bad_group_by(group_by text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RAISE EXCEPTION 'group_by must be ''agency'', ''commune'', ''procedure'' or NULL, not %',
        quote_literal(group_by) USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- The group of a row: its agency, its commune/ward code or its procedure ('' when it has none;
-- procedures: dossiers only), or NULL (one group) when `group_by` is NULL.
CREATE OR REPLACE FUNCTION ioc_group_key(group_by text, agency_code text, commune_code text,
                                         procedure_code text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN group_by IS NULL THEN NULL
                WHEN group_by = 'agency' THEN agency_code
                WHEN group_by = 'commune' THEN commune_code
                WHEN group_by = 'procedure' THEN coalesce(procedure_code, '')
                ELSE ioc_bad_group_by(group_by) END
$$;

-- Whether a step dated `at` of a row whose newest event is at `last_at` is taken as of
-- `as_of`: the row as it stands holds when no event of it came after as_of (or as_of is NULL:
-- the latest state); otherwise the step's date says, and a step without one counts as taken.
CREATE OR REPLACE FUNCTION ioc_done_by(at timestamptz, as_of timestamptz, last_at timestamptz)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT as_of IS NULL OR last_at <= as_of OR at IS NULL OR at <= as_of
$$;

---------------------------------------------------------------------------------------------
-- Dossiers. One row per dossier with the flags the KPIs count: on time is finished (9, 10)
-- by its due date; in process (1, 2, 4, 5, 6) is late past it, due soon within the
-- `due_soon_horizon` setting, else not yet due. As of a moment, a dossier finished (refused)
-- after it was in process then. The moment, its clock and the due-soon horizon are computed
-- once per query, in the one-row subquery `k` (OFFSET 0 keeps it apart): inlined into every
-- flag, `as_of` (least($__timeTo(), now()) on the dashboards) was evaluated some twenty
-- times per row, and the horizon setting read per row took half of a 30-day table's time
-- (bench/panels.py).
CREATE OR REPLACE FUNCTION dossier_facts_at(as_of timestamptz)
RETURNS TABLE (dossier_code text, province_code text, commune_code text, agency_code text,
               agency_name text, former_district_code text, procedure_code text,
               procedure_name text, field_code text, status smallint, channel smallint,
               submitted_at timestamptz, received_at timestamptz, due_at timestamptz,
               finished_at timestamptz, returned_at timestamptz, refused_at timestamptz,
               digitized boolean, fee_required boolean, paid_online boolean,
               satisfaction text, complaint boolean, first_occurred_at timestamptz,
               last_occurred_at timestamptz, events integer, stored_at timestamptz,
               anchor_at timestamptz, to_handle boolean, finished boolean,
               in_process boolean, late_finished boolean, late_in_process boolean,
               due_soon boolean, online boolean, is_digitized boolean, has_fee boolean,
               is_paid_online boolean, dissatisfied boolean, evaluated boolean,
               marked_dissatisfied boolean)
LANGUAGE sql STABLE AS $$
SELECT d.dossier_code, d.province_code, d.commune_code, d.agency_code, d.agency_name,
       d.former_district_code, d.procedure_code, d.procedure_name, d.field_code, d.status,
       d.channel, d.submitted_at, d.received_at, d.due_at, d.finished_at, d.returned_at,
       d.refused_at, d.digitized, d.fee_required, d.paid_online, d.satisfaction, d.complaint,
       d.first_occurred_at, d.last_occurred_at, d.events, d.stored_at, d.anchor_at,
       NOT (d.status IN (7, 8) OR t.refused)                       AS to_handle,
       t.finished,
       a.in_process,
       coalesce(t.finished AND d.finished_at > d.due_at, false)     AS late_finished,
       coalesce(a.in_process AND d.due_at < k.clock, false)         AS late_in_process,
       coalesce(a.in_process AND d.due_at >= k.clock
                AND d.due_at < k.horizon, false)                    AS due_soon,
       d.channel IS NOT DISTINCT FROM 2                             AS online,
       coalesce(d.digitized, false)                                 AS is_digitized,
       coalesce(d.fee_required, false)                              AS has_fee,
       coalesce(d.fee_required AND d.paid_online, false)            AS is_paid_online,
       coalesce(d.satisfaction = 'unsatisfied', false)
           OR coalesce(d.complaint, false)                          AS dissatisfied,
       -- A citizen's evaluation received, on the dossier's record or as evaluation events
       -- (the `evaluations` table; as of a moment, one first given by then), and whether it
       -- marks the dossier unsatisfied or complained about (Decision 766's satisfaction).
       e.dossier_code IS NOT NULL OR d.satisfaction IS NOT NULL
           OR d.complaint IS NOT NULL                               AS evaluated,
       coalesce(d.satisfaction = 'unsatisfied', false) OR coalesce(d.complaint, false)
           OR coalesce(e.level = 'unsatisfied', false)
           OR coalesce(e.complaint, false)                          AS marked_dissatisfied
FROM (SELECT as_of AS at, coalesce(as_of, now()) AS clock,
             coalesce(as_of, now()) + ioc_due_soon_horizon() AS horizon OFFSET 0) k
     CROSS JOIN dossiers d
     LEFT JOIN evaluations e ON e.dossier_code = d.dossier_code
                            AND (k.at IS NULL OR e.first_occurred_at <= k.at),
     LATERAL (SELECT d.status IN (9, 10) AND ioc_done_by(d.finished_at, k.at,
                                                         d.last_occurred_at) AS finished,
                     d.status = 3 AND ioc_done_by(d.refused_at, k.at,
                                                  d.last_occurred_at) AS refused) t,
     LATERAL (SELECT d.status IN (1, 2, 4, 5, 6) OR d.status IN (9, 10) AND NOT t.finished
                     OR d.status = 3 AND NOT t.refused AS in_process) a
WHERE ioc_done_by(d.anchor_at, k.at, d.last_occurred_at)
$$;

CREATE OR REPLACE VIEW dossier_facts AS SELECT * FROM dossier_facts_at(NULL);

-- The dossier KPIs per group of the selection, in one GROUP BY (`group_by`: 'agency',
-- 'commune', 'procedure', or NULL for one group, the whole selection, no row when it is
-- empty): the group's code, its name (agency or procedure groups) and every KPI.
CREATE OR REPLACE FUNCTION kpi_dossiers_by(since timestamptz, until timestamptz, group_by text,
                                           unit text DEFAULT NULL, agency text DEFAULT NULL,
                                           former_district text DEFAULT NULL,
                                           as_of timestamptz DEFAULT now())
RETURNS TABLE (group_code text, group_name text,
               received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint, evaluated bigint,
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
               count(*) FILTER (WHERE to_handle AND (marked_dissatisfied OR late_finished
                                                     OR late_in_process)) AS dissatisfied_or_late,
               count(*) FILTER (WHERE to_handle AND evaluated)             AS evaluated
        FROM (SELECT ioc_group_key(group_by, agency_code, commune_code, procedure_code)
                     AS group_code, *
              FROM dossier_facts_at(as_of)
              WHERE anchor_at >= since AND anchor_at < until
                AND (unit IS NULL OR unit IN (province_code, commune_code))
                AND (agency IS NULL OR agency_code = agency)
                AND (former_district IS NULL OR former_district_code = former_district)) f
        GROUP BY group_code
    )
    SELECT c.*,
           ioc_pct(c.to_handle - c.finished_late - c.late_in_process, c.to_handle),  -- on time
           ioc_pct(c.online, c.received),
           ioc_pct(c.digitized, c.received),
           ioc_pct(c.paid_online, c.with_fee),
           ioc_pct(c.to_handle - c.dissatisfied_or_late, c.to_handle)  -- satisfaction (766)
    FROM c
$$;

-- The selection's KPIs as one row: kpi_dossiers_by's single group, or zeros and no rates when
-- the selection is empty.
CREATE OR REPLACE FUNCTION kpi_dossiers(since timestamptz DEFAULT '-infinity',
                                        until timestamptz DEFAULT 'infinity',
                                        unit text DEFAULT NULL, agency text DEFAULT NULL,
                                        former_district text DEFAULT NULL,
                                        as_of timestamptz DEFAULT now())
RETURNS TABLE (received bigint, to_handle bigint, finished bigint, finished_on_time bigint,
               finished_late bigint, in_process bigint, late_in_process bigint, due_soon bigint,
               not_yet_due bigint, online bigint, digitized bigint, with_fee bigint,
               paid_online bigint, dissatisfied_or_late bigint, evaluated bigint,
               on_time_rate numeric, online_rate numeric, digitized_rate numeric,
               paid_online_rate numeric, satisfaction_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(k.received, 0), coalesce(k.to_handle, 0), coalesce(k.finished, 0),
           coalesce(k.finished_on_time, 0), coalesce(k.finished_late, 0),
           coalesce(k.in_process, 0), coalesce(k.late_in_process, 0), coalesce(k.due_soon, 0),
           coalesce(k.not_yet_due, 0), coalesce(k.online, 0), coalesce(k.digitized, 0),
           coalesce(k.with_fee, 0), coalesce(k.paid_online, 0),
           coalesce(k.dissatisfied_or_late, 0), coalesce(k.evaluated, 0), k.on_time_rate,
           k.online_rate, k.digitized_rate, k.paid_online_rate, k.satisfaction_rate
    FROM (VALUES (1)) AS one
    LEFT JOIN kpi_dossiers_by(since, until, NULL, unit, agency, former_district, as_of) k ON true
$$;

---------------------------------------------------------------------------------------------
-- Documents. One row per document; one without a status message yet has arrived (01). A
-- completed (06) copy is on time by its deadline, or without one; an incoming copy is in the
-- backlog until rejected (02), completed (06) or recalled (15), overdue past its deadline.
-- An outgoing copy is signed when its attachments carry a signature that is not broken;
-- unknown (not unsigned) without attachment bytes: the signed rate is over the known ones.
-- As of a moment, a copy completed (its first 06) after it, or whose newest status, rejected
-- or recalled, came after it, was in the backlog then.
CREATE OR REPLACE FUNCTION document_facts_at(as_of timestamptz)
RETURNS TABLE (document_id text, province_code text, commune_code text, agency_code text,
               agency_name text, former_district_code text, status text,
               status_at timestamptz, direction text, signed boolean, deadline timestamptz,
               document_type text, code_notation text, from_organ_id text, to_organ_id text,
               attachment_count integer, attachment_bytes bigint, meta_at timestamptz,
               completed_at timestamptz, first_occurred_at timestamptz,
               last_occurred_at timestamptz, events integer, stored_at timestamptz,
               anchor_at timestamptz, incoming boolean, outgoing boolean,
               outgoing_signed boolean, completed boolean, completed_on_time boolean,
               in_backlog boolean, overdue boolean, signature_intact boolean,
               signed_at timestamptz, outgoing_signed_unknown boolean)
LANGUAGE sql STABLE AS $$
SELECT d.document_id, d.province_code, d.commune_code, d.agency_code, d.agency_name,
       d.former_district_code, d.status, d.status_at, d.direction, d.signed, d.deadline,
       d.document_type, d.code_notation, d.from_organ_id, d.to_organ_id, d.attachment_count,
       d.attachment_bytes, d.meta_at, d.completed_at, d.first_occurred_at, d.last_occurred_at,
       d.events, d.stored_at, d.anchor_at,
       d.direction = 'incoming'                                     AS incoming,
       d.direction = 'outgoing'                                     AS outgoing,
       coalesce(d.direction = 'outgoing' AND d.signed
                AND d.signature_intact IS NOT FALSE, false)         AS outgoing_signed,
       a.completed,
       coalesce(a.completed AND (d.deadline IS NULL OR d.completed_at <= d.deadline),
                false)                                              AS completed_on_time,
       coalesce(d.direction = 'incoming', false) AND NOT a.left_backlog AS in_backlog,
       coalesce(d.direction = 'incoming', false) AND NOT a.left_backlog
           AND coalesce(d.deadline < a.clock, false)                AS overdue,
       d.signature_intact, d.signed_at,
       coalesce(d.direction = 'outgoing' AND d.signed IS NULL, false) AS outgoing_signed_unknown
FROM (SELECT as_of AS at, coalesce(as_of, now()) AS clock OFFSET 0) k
     CROSS JOIN documents d,
     LATERAL (SELECT coalesce(d.status = '06' AND ioc_done_by(d.completed_at, k.at,
                                                              d.last_occurred_at), false)
                         AS completed,
                     coalesce(d.status IN ('02', '15') AND ioc_done_by(d.status_at, k.at,
                                                                       d.last_occurred_at),
                              false) AS rejected_or_recalled) t,
     LATERAL (SELECT k.clock, t.completed, t.completed OR t.rejected_or_recalled AS left_backlog) a
WHERE ioc_done_by(d.anchor_at, k.at, d.last_occurred_at)
$$;

CREATE OR REPLACE VIEW document_facts AS SELECT * FROM document_facts_at(NULL);

-- Per group of documents ('agency', 'commune' or NULL), as kpi_dossiers_by.
CREATE OR REPLACE FUNCTION kpi_documents_by(since timestamptz, until timestamptz, group_by text,
                                            unit text DEFAULT NULL, agency text DEFAULT NULL,
                                            former_district text DEFAULT NULL,
                                            as_of timestamptz DEFAULT now())
RETURNS TABLE (group_code text, group_name text,
               documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               outgoing_signed_unknown bigint,
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
               count(*) FILTER (WHERE outgoing_signed_unknown) AS outgoing_signed_unknown,
               count(*) FILTER (WHERE completed)          AS completed,
               count(*) FILTER (WHERE completed_on_time)  AS completed_on_time,
               count(*) FILTER (WHERE in_backlog)         AS backlog,
               count(*) FILTER (WHERE overdue)            AS backlog_overdue
        FROM (SELECT ioc_group_key(group_by, agency_code, commune_code) AS group_code, *
              FROM document_facts_at(as_of)
              WHERE anchor_at >= since AND anchor_at < until
                AND (unit IS NULL OR unit IN (province_code, commune_code))
                AND (agency IS NULL OR agency_code = agency)
                AND (former_district IS NULL OR former_district_code = former_district)) f
        GROUP BY group_code
    )
    SELECT c.*, ioc_pct(c.outgoing_signed, c.outgoing - c.outgoing_signed_unknown),
           ioc_pct(c.completed_on_time, c.completed)
    FROM c
$$;

CREATE OR REPLACE FUNCTION kpi_documents(since timestamptz DEFAULT '-infinity',
                                         until timestamptz DEFAULT 'infinity',
                                         unit text DEFAULT NULL, agency text DEFAULT NULL,
                                         former_district text DEFAULT NULL,
                                         as_of timestamptz DEFAULT now())
RETURNS TABLE (documents bigint, incoming bigint, outgoing bigint, outgoing_signed bigint,
               outgoing_signed_unknown bigint,
               completed bigint, completed_on_time bigint, backlog bigint, backlog_overdue bigint,
               signed_rate numeric, on_time_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(k.documents, 0), coalesce(k.incoming, 0), coalesce(k.outgoing, 0),
           coalesce(k.outgoing_signed, 0), coalesce(k.outgoing_signed_unknown, 0),
           coalesce(k.completed, 0),
           coalesce(k.completed_on_time, 0), coalesce(k.backlog, 0),
           coalesce(k.backlog_overdue, 0), k.signed_rate, k.on_time_rate
    FROM (VALUES (1)) AS one
    LEFT JOIN kpi_documents_by(since, until, NULL, unit, agency, former_district, as_of) k ON true
$$;

---------------------------------------------------------------------------------------------
-- Field reports. One row per report (its free text stays out: no dashboard shows it); an open
-- report is overdue past its expected time; resolving takes from the request to the update
-- that fixed or closed it. As of a moment, a report resolved (marked duplicate) after it was
-- open then.
CREATE OR REPLACE FUNCTION field_report_facts_at(as_of timestamptz)
RETURNS TABLE (service_request_id text, province_code text, commune_code text,
               agency_code text, agency_name text, former_district_code text,
               service_code text, service_name text, service_group text, status text,
               lat double precision, long double precision, requested_datetime timestamptz,
               updated_datetime timestamptz, expected_datetime timestamptz,
               resolved_at timestamptz, first_occurred_at timestamptz,
               last_occurred_at timestamptz, events integer, stored_at timestamptz,
               anchor_at timestamptz, is_open boolean, resolved boolean,
               is_duplicate boolean, overdue boolean, resolve_seconds numeric)
LANGUAGE sql STABLE AS $$
SELECT r.service_request_id, r.province_code, r.commune_code, r.agency_code, r.agency_name,
       r.former_district_code, r.service_code, r.service_name, r.service_group, r.status,
       r.lat, r.long, r.requested_datetime, r.updated_datetime, r.expected_datetime,
       r.resolved_at, r.first_occurred_at, r.last_occurred_at, r.events, r.stored_at,
       r.anchor_at,
       a.is_open,
       a.resolved,
       a.is_duplicate,
       coalesce(a.is_open AND r.expected_datetime < a.clock, false) AS overdue,
       CASE WHEN a.resolved
            THEN extract(epoch FROM r.resolved_at - r.requested_datetime) END AS resolve_seconds
FROM (SELECT as_of AS at, coalesce(as_of, now()) AS clock OFFSET 0) k
     CROSS JOIN field_reports r,
     LATERAL (SELECT r.status IN ('fixed', 'closed') AND ioc_done_by(r.resolved_at, k.at,
                                                                     r.last_occurred_at)
                         AS resolved,
                     r.status = 'duplicate' AND ioc_done_by(r.updated_datetime, k.at,
                                                            r.last_occurred_at)
                         AS is_duplicate) s,
     LATERAL (SELECT k.clock, s.resolved, s.is_duplicate,
                     r.status IN ('open', 'investigating', 'in_progress', 'fixed', 'closed',
                                  'duplicate') AND NOT s.resolved AND NOT s.is_duplicate
                         AS is_open) a
WHERE ioc_done_by(r.anchor_at, k.at, r.last_occurred_at)
$$;

CREATE OR REPLACE VIEW field_report_facts AS SELECT * FROM field_report_facts_at(NULL);

CREATE OR REPLACE FUNCTION kpi_field_reports(since timestamptz DEFAULT '-infinity',
                                             until timestamptz DEFAULT 'infinity',
                                             unit text DEFAULT NULL, agency text DEFAULT NULL,
                                             former_district text DEFAULT NULL,
                                             as_of timestamptz DEFAULT now())
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
    FROM field_report_facts_at(as_of)
    WHERE anchor_at >= since AND anchor_at < until
      AND (unit IS NULL OR unit IN (province_code, commune_code))
      AND (agency IS NULL OR agency_code = agency)
      AND (former_district IS NULL OR former_district_code = former_district)
$$;

---------------------------------------------------------------------------------------------
-- The whole province, all time, as of now.
CREATE OR REPLACE VIEW kpi_dossiers AS SELECT * FROM kpi_dossiers();
CREATE OR REPLACE VIEW kpi_documents AS SELECT * FROM kpi_documents();
CREATE OR REPLACE VIEW kpi_field_reports AS SELECT * FROM kpi_field_reports();

---------------------------------------------------------------------------------------------
-- League tables in the style of Decision 766/QĐ-TTg (docs/domain.md, "Ratings"): a rate at or
-- above its target earns the group's full points, otherwise rate / target × points (rounded to
-- 2 decimals); a rate without data (NULL: nothing to handle) earns none. The default targets
-- are the catalogue's `target_766` (kpis.py). Transparency (18 points) is not measured from
-- these events: the maximum total is 82. Equal totals share a rank (1, 1, 3...).
CREATE OR REPLACE FUNCTION ioc_766_points(rate numeric, target numeric, points numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN rate IS NULL THEN NULL
                WHEN rate >= target THEN points
                ELSE round(rate * points / target, 2) END
$$;

-- One grouping ('agency' or 'commune'), from the grouped dossier KPIs.
CREATE OR REPLACE FUNCTION kpi_ranking(since timestamptz, until timestamptz, group_by text,
                                       unit text, on_time_target numeric,
                                       digitized_target numeric, online_target numeric,
                                       satisfaction_target numeric,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (rank bigint, group_code text, group_name text, received bigint,
               to_handle bigint, evaluated bigint, on_time_rate numeric, digitized_rate numeric,
               online_rate numeric, satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    WITH p AS (
        SELECT k.group_code, k.group_name, k.received, k.to_handle, k.evaluated,
               k.on_time_rate, k.digitized_rate, k.online_rate, k.satisfaction_rate,
               ioc_766_points(k.on_time_rate, on_time_target, 20)           AS progress_points,
               ioc_766_points(k.digitized_rate, digitized_target, 22)       AS digitization_points,
               ioc_766_points(k.online_rate, online_target, 22)             AS online_points,
               ioc_766_points(k.satisfaction_rate, satisfaction_target, 18) AS satisfaction_points
        FROM kpi_dossiers_by(since, until, group_by, unit, as_of => as_of) k
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

CREATE OR REPLACE FUNCTION kpi_agency_ranking(since timestamptz DEFAULT '-infinity',
                                              until timestamptz DEFAULT 'infinity',
                                              unit text DEFAULT NULL,
                                              on_time_target numeric DEFAULT 99,
                                              digitized_target numeric DEFAULT 90,
                                              online_target numeric DEFAULT 80,
                                              satisfaction_target numeric DEFAULT 95,
                                              as_of timestamptz DEFAULT now())
RETURNS TABLE (rank bigint, agency_code text, agency_name text, received bigint,
               to_handle bigint, evaluated bigint, on_time_rate numeric, digitized_rate numeric,
               online_rate numeric, satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    SELECT * FROM kpi_ranking(since, until, 'agency', unit, on_time_target, digitized_target,
                              online_target, satisfaction_target, as_of)
$$;

-- Per commune/ward (dossiers with a commune code).
CREATE OR REPLACE FUNCTION kpi_commune_ranking(since timestamptz DEFAULT '-infinity',
                                               until timestamptz DEFAULT 'infinity',
                                               on_time_target numeric DEFAULT 99,
                                               digitized_target numeric DEFAULT 90,
                                               online_target numeric DEFAULT 80,
                                               satisfaction_target numeric DEFAULT 95,
                                               as_of timestamptz DEFAULT now())
RETURNS TABLE (rank bigint, commune_code text, received bigint, to_handle bigint,
               evaluated bigint, on_time_rate numeric, digitized_rate numeric, online_rate numeric,
               satisfaction_rate numeric, progress_points numeric,
               digitization_points numeric, online_points numeric,
               satisfaction_points numeric, total_points numeric)
LANGUAGE sql STABLE AS $$
    SELECT rank, group_code, received, to_handle, evaluated, on_time_rate, digitized_rate,
           online_rate, satisfaction_rate, progress_points, digitization_points, online_points,
           satisfaction_points, total_points
    FROM kpi_ranking(since, until, 'commune', NULL, on_time_target, digitized_target,
                     online_target, satisfaction_target, as_of)
$$;

---------------------------------------------------------------------------------------------
-- Time-invariant counts per entity, unpivoted: what the worker adds to the hourly rollups
-- (streams/store.py), which the dashboards' series sum per bucket.
CREATE OR REPLACE VIEW dossier_metrics AS
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

CREATE OR REPLACE VIEW document_metrics AS
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

CREATE OR REPLACE VIEW field_report_metrics AS
SELECT f.service_request_id AS entity_id, f.anchor_at, f.province_code, f.commune_code,
       f.agency_code, m.metric, m.value
FROM field_report_facts f,
     LATERAL (VALUES ('reports', 1::numeric),
                     ('open', f.is_open::int),
                     ('resolved', f.resolved::int),
                     ('duplicate', f.is_duplicate::int),
                     ('resolve_seconds', coalesce(f.resolve_seconds, 0))) AS m(metric, value)
WHERE m.value <> 0;
