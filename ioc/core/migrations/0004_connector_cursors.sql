-- Where each connector stopped reading its source: written only after the broker acknowledged
-- every event of the batch (see connectors/base.py), so a restart neither skips nor loses.
CREATE TABLE connector_cursors (
    connector  text        PRIMARY KEY,
    cursor     text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
