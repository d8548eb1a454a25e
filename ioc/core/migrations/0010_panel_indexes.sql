-- What keeps the wall's queries fast on a large table (bench/panels.py, 10 million events).

-- Time series of one KPI metric ("Hồ sơ tiếp nhận theo giờ"...): read only that metric's rows,
-- from the index alone. Without it PostgreSQL scans every metric of the range: 1 s for 30 days.
CREATE INDEX rollup_hour_metric ON rollup_hour (kind, metric, bucket)
    INCLUDE (province_code, commune_code, agency_code, value);

-- The `$commune` and `$agency` variable lists without reading every dossier, document and
-- field report (0.5-0.9 s at 10 million events): a loose index scan finds each distinct code
-- with one index probe, a few hundred probes in all.
CREATE INDEX dossiers_commune ON dossiers (commune_code);
CREATE INDEX field_reports_commune ON field_reports (commune_code);

-- The communes/wards that have dossiers or field reports, in code order.
CREATE FUNCTION ioc_communes() RETURNS TABLE (commune_code text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE d(code) AS (
        SELECT min(commune_code) FROM dossiers WHERE commune_code > ''
        UNION ALL
        SELECT (SELECT min(commune_code) FROM dossiers WHERE commune_code > d.code)
        FROM d WHERE d.code IS NOT NULL
    ), r(code) AS (
        SELECT min(commune_code) FROM field_reports WHERE commune_code > ''
        UNION ALL
        SELECT (SELECT min(commune_code) FROM field_reports WHERE commune_code > r.code)
        FROM r WHERE r.code IS NOT NULL
    )
    SELECT code FROM d WHERE code IS NOT NULL
    UNION
    SELECT code FROM r WHERE code IS NOT NULL
    ORDER BY 1
$$;

-- The agencies that have dossiers, documents or field reports, in code order, each with the
-- name of one of its rows (each table's (agency_code, commune_code, anchor_at) index leads
-- with the code).
CREATE FUNCTION ioc_agencies() RETURNS TABLE (agency_code text, agency_name text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE d(code) AS (
        SELECT min(agency_code) FROM dossiers
        UNION ALL
        SELECT (SELECT min(agency_code) FROM dossiers WHERE agency_code > d.code)
        FROM d WHERE d.code IS NOT NULL
    ), o(code) AS (
        SELECT min(agency_code) FROM documents
        UNION ALL
        SELECT (SELECT min(agency_code) FROM documents WHERE agency_code > o.code)
        FROM o WHERE o.code IS NOT NULL
    ), r(code) AS (
        SELECT min(agency_code) FROM field_reports
        UNION ALL
        SELECT (SELECT min(agency_code) FROM field_reports WHERE agency_code > r.code)
        FROM r WHERE r.code IS NOT NULL
    ), codes(code) AS (
        SELECT code FROM d UNION SELECT code FROM o UNION SELECT code FROM r
    )
    SELECT c.code,
           coalesce((SELECT x.agency_name FROM dossiers x
                     WHERE x.agency_code = c.code AND x.agency_name IS NOT NULL LIMIT 1),
                    (SELECT x.agency_name FROM documents x
                     WHERE x.agency_code = c.code AND x.agency_name IS NOT NULL LIMIT 1),
                    (SELECT x.agency_name FROM field_reports x
                     WHERE x.agency_code = c.code AND x.agency_name IS NOT NULL LIMIT 1))
    FROM codes c
    WHERE c.code IS NOT NULL
    ORDER BY 1
$$;
