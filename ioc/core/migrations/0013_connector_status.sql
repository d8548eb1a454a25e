-- How each connector is doing (connectors/status.py): written by the connector at each batch
-- and each change of health; read by `ioc connectors list` and the alerting.
CREATE TABLE connector_status (
    connector        text             PRIMARY KEY,
    kind             text             NOT NULL,
    health           text             NOT NULL
                     CHECK (health IN ('ok', 'degraded', 'silent', 'stopped')),
    reason           text,             -- why degraded or stopped
    first_run_at     timestamptz      NOT NULL,  -- silence counts from here before any record
    last_success_at  timestamptz,      -- a batch published and its cursor stored
    last_record_at   timestamptz,      -- a record last arrived from the source
    newest_source_at timestamptz,      -- the newest source time of a record seen
    silent_since     timestamptz,      -- set from connector_silent until connector_resumed
    silence_seconds  double precision NOT NULL,  -- the threshold in force; 0: not watched
    updated_at       timestamptz      NOT NULL DEFAULT now()
);

-- Every connector_silent / connector_resumed, with the event id published on the
-- <prefix>connector_status topic.
CREATE TABLE connector_status_events (
    event_id        uuid             PRIMARY KEY,
    connector       text             NOT NULL,
    type            text             NOT NULL
                    CHECK (type IN ('connector_silent', 'connector_resumed')),
    occurred_at     timestamptz      NOT NULL,
    silent_since    timestamptz      NOT NULL,
    silence_seconds double precision NOT NULL
);
CREATE INDEX connector_status_events_by_connector
    ON connector_status_events (connector, occurred_at DESC);
