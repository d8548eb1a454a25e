-- League tables in the style of Decision 766/QĐ-TTg (docs/domain.md): per agency and per
-- commune, the dossier rates of ioc_migrations/0003_kpis.sql turned into points.
--
-- Scoring rule: a rate at or above its target earns the group's full points, otherwise
-- rate / target × points (rounded to 2 decimals). A rate without data (NULL: nothing to handle)
-- earns no points of that group. Groups measured here, with their default targets (the
-- thresholds of the overview wall):
--   progress and results  20 points  on_time_rate       target 99 %
--   digitization          22 points  digitized_rate     target 90 %
--   online service        22 points  online_rate        target 80 %
--   satisfaction          18 points  satisfaction_rate  target 95 %
-- Transparency (18 points) is not measured from these events: the maximum total is 82.
-- Rank: by total points, highest first; equal totals share a rank (1, 1, 3...).

CREATE OR REPLACE FUNCTION ioc_766_points(rate numeric, target numeric, points numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN rate IS NULL THEN NULL
                WHEN rate >= target THEN points
                ELSE round(rate * points / target, 2) END
$$;

-- Per agency, dossiers anchored in [since, until), in `unit` (province or commune code;
-- NULL: the whole province).
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
    WITH a AS (
        SELECT d.agency_code, max(d.agency_name) AS agency_name
        FROM dossiers d
        WHERE d.anchor_at >= since AND d.anchor_at < until
          AND (unit IS NULL OR unit IN (d.province_code, d.commune_code))
        GROUP BY d.agency_code
    ), p AS (
        SELECT a.agency_code, a.agency_name, k.received, k.to_handle, k.on_time_rate,
               k.digitized_rate, k.online_rate, k.satisfaction_rate,
               ioc_766_points(k.on_time_rate, on_time_target, 20)           AS progress_points,
               ioc_766_points(k.digitized_rate, digitized_target, 22)       AS digitization_points,
               ioc_766_points(k.online_rate, online_target, 22)             AS online_points,
               ioc_766_points(k.satisfaction_rate, satisfaction_target, 18) AS satisfaction_points
        FROM a, LATERAL kpi_dossiers(since, until, unit, a.agency_code) k
    ), t AS (
        SELECT p.*, coalesce(p.progress_points, 0) + coalesce(p.digitization_points, 0)
                    + coalesce(p.online_points, 0) + coalesce(p.satisfaction_points, 0)
                    AS total_points
        FROM p
    )
    SELECT rank() OVER (ORDER BY t.total_points DESC), t.*
    FROM t
    ORDER BY t.total_points DESC, t.agency_code
$$;

-- Per commune/ward (dossiers with a commune code), the same scoring.
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
    WITH c AS (
        SELECT DISTINCT d.commune_code
        FROM dossiers d
        WHERE d.anchor_at >= since AND d.anchor_at < until AND d.commune_code <> ''
    ), p AS (
        SELECT c.commune_code, k.received, k.to_handle, k.on_time_rate,
               k.digitized_rate, k.online_rate, k.satisfaction_rate,
               ioc_766_points(k.on_time_rate, on_time_target, 20)           AS progress_points,
               ioc_766_points(k.digitized_rate, digitized_target, 22)       AS digitization_points,
               ioc_766_points(k.online_rate, online_target, 22)             AS online_points,
               ioc_766_points(k.satisfaction_rate, satisfaction_target, 18) AS satisfaction_points
        FROM c, LATERAL kpi_dossiers(since, until, c.commune_code) k
    ), t AS (
        SELECT p.*, coalesce(p.progress_points, 0) + coalesce(p.digitization_points, 0)
                    + coalesce(p.online_points, 0) + coalesce(p.satisfaction_points, 0)
                    AS total_points
        FROM p
    )
    SELECT rank() OVER (ORDER BY t.total_points DESC), t.*
    FROM t
    ORDER BY t.total_points DESC, t.commune_code
$$;
