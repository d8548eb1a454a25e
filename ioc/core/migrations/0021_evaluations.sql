-- Citizens' evaluations of dossiers (Decision 766's satisfaction: docs/domain.md): one row
-- per dossier evaluated, folded from its `evaluation` events (streams/state.py). The newest
-- level wins by its own clock, `level_at`; a complaint, once filed, stays filed.
CREATE TABLE evaluations (
    dossier_code         text PRIMARY KEY,
    province_code        text NOT NULL,
    commune_code         text NOT NULL DEFAULT '',
    agency_code          text NOT NULL,
    agency_name          text,
    former_district_code text,
    level                text CHECK (level IN ('very_satisfied', 'satisfied', 'unsatisfied')),
    level_at             timestamptz,
    complaint            boolean,
    first_occurred_at    timestamptz NOT NULL,
    last_occurred_at     timestamptz NOT NULL,
    events               integer NOT NULL,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    -- The period an evaluation counts in on its own (the rollups): when it was first given.
    -- The KPIs count it with its dossier, in the dossier's period.
    anchor_at            timestamptz GENERATED ALWAYS AS (first_occurred_at) STORED
);
CREATE INDEX evaluations_group ON evaluations (agency_code, commune_code, anchor_at);
CREATE INDEX evaluations_anchor ON evaluations (anchor_at);

-- Counts per evaluation, unpivoted, for the hourly rollups (streams/store.py, kind
-- 'evaluation'), as dossier_metrics for dossiers.
CREATE VIEW evaluation_metrics AS
SELECT e.dossier_code AS entity_id, e.anchor_at, e.province_code, e.commune_code,
       e.agency_code, m.metric, m.value
FROM evaluations e,
     LATERAL (VALUES ('evaluations', 1),
                     ('unsatisfied', coalesce(e.level = 'unsatisfied', false)::int),
                     ('complaint', coalesce(e.complaint, false)::int)) AS m(metric, value)
WHERE m.value <> 0;

-- The dossier KPIs gain `evaluated` (dossiers to handle with an evaluation received), which
-- says whether the satisfaction rate measured anything but lateness: new result columns, so
-- the functions (and the views over them, CASCADE) are dropped for kpis.sql to create anew.
DROP FUNCTION IF EXISTS kpi_dossiers_by(timestamptz, timestamptz, text, text, text, text)
    CASCADE;
DROP FUNCTION IF EXISTS kpi_dossiers(timestamptz, timestamptz, text, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_dossiers(timestamptz, timestamptz, text, text) CASCADE;

-- What an alert's value lacked when it was measured (the KPI catalogue's `inputs`, e.g. "no
-- evaluation received" next to a satisfaction rate), for its messages to say so.
ALTER TABLE alerts ADD COLUMN missing text[] NOT NULL DEFAULT '{}';
