-- KPIs as of a moment (docs/domain.md, "As of a moment"): every KPI function takes `as_of`
-- last (default now()), and kpi_dossiers, kpi_documents and kpi_field_reports become one
-- function each with every argument defaulted (the four- and five-argument pairs would be
-- ambiguous with a sixth). New signatures: the old functions (and the views over them,
-- CASCADE) are dropped for kpis.sql to create anew, with the *_facts_at(as_of) functions.
DROP FUNCTION IF EXISTS kpi_dossiers_by(timestamptz, timestamptz, text, text, text, text)
    CASCADE;
DROP FUNCTION IF EXISTS kpi_dossiers(timestamptz, timestamptz, text, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_dossiers(timestamptz, timestamptz, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_documents_by(timestamptz, timestamptz, text, text, text, text)
    CASCADE;
DROP FUNCTION IF EXISTS kpi_documents(timestamptz, timestamptz, text, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_documents(timestamptz, timestamptz, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_field_reports(timestamptz, timestamptz, text, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_field_reports(timestamptz, timestamptz, text, text) CASCADE;
DROP FUNCTION IF EXISTS kpi_ranking(timestamptz, timestamptz, text, text, numeric, numeric,
                                    numeric, numeric) CASCADE;
DROP FUNCTION IF EXISTS kpi_agency_ranking(timestamptz, timestamptz, text, numeric, numeric,
                                           numeric, numeric) CASCADE;
DROP FUNCTION IF EXISTS kpi_commune_ranking(timestamptz, timestamptz, numeric, numeric,
                                            numeric, numeric) CASCADE;
