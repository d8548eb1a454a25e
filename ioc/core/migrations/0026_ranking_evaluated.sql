-- The rankings gain `evaluated` (dossiers to handle with a citizen's evaluation), so their
-- satisfaction column can say when none was received (the catalogue's inputs): new result
-- columns, so the functions go for kpis.sql to create anew.
DROP FUNCTION IF EXISTS kpi_agency_ranking(timestamptz, timestamptz, text, numeric, numeric,
                                           numeric, numeric, timestamptz);
DROP FUNCTION IF EXISTS kpi_commune_ranking(timestamptz, timestamptz, numeric, numeric,
                                            numeric, numeric, timestamptz);
DROP FUNCTION IF EXISTS kpi_ranking(timestamptz, timestamptz, text, text, numeric, numeric,
                                    numeric, numeric, timestamptz);
