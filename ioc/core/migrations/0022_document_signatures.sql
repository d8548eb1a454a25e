-- Digital signatures read from the attachments' bytes (connectors/mappings/signatures.py), not
-- from their names: whether every signature verifies over the bytes it signed, and when the
-- signer says it signed (`signed` itself is 0001's column; NULL: unknown, no attachment bytes).
ALTER TABLE documents
    ADD COLUMN signature_intact boolean,
    ADD COLUMN signed_at        timestamptz;

-- What was stored before came from attachment names and descriptions (".signed.", ".p7s",
-- "ký số"), which decide nothing: unknown, not a guess. With no document signed, no rollup
-- counts one (rollups only hold non-zero counts, kept as deltas of document_metrics).
UPDATE documents SET signed = NULL WHERE signed IS NOT NULL;
DELETE FROM rollup_hour WHERE kind = 'document' AND metric = 'outgoing_signed';

-- The document KPIs gain `outgoing_signed_unknown` (kpis.sql): every overload of the
-- functions goes (whatever parameters it has by now), with the all-time view on kpi_documents;
-- kpis.sql creates them again.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.proname IN ('kpi_documents', 'kpi_documents_by')
               AND p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
    LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', f);
    END LOOP;
END
$$;
