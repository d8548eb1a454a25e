-- Core tables, the same on plain PostgreSQL and on TimescaleDB.

-- Settings the SQL views read (the due-soon horizon...), written by `ioc db migrate`.
CREATE TABLE ioc_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Every validated event, once (the primary key is the idempotency key).
CREATE TABLE events (
    occurred_at   timestamptz NOT NULL,
    event_id      uuid        NOT NULL,
    kind          text        NOT NULL,
    entity_id     text        NOT NULL,
    source        text        NOT NULL,
    province_code text        NOT NULL,
    commune_code  text        NOT NULL DEFAULT '',
    agency_code   text        NOT NULL,
    status        text,
    ingested_at   timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT now(),
    body          jsonb       NOT NULL,
    PRIMARY KEY (event_id, occurred_at)
);
CREATE INDEX events_entity ON events (kind, entity_id);

-- Current state: one row per dossier / document / field report.
-- `*_at` clocks record the newest event that set a group of columns, so that events
-- arriving late or out of order never overwrite newer facts.
CREATE TABLE dossiers (
    dossier_code         text PRIMARY KEY,
    province_code        text NOT NULL,
    commune_code         text NOT NULL DEFAULT '',
    agency_code          text NOT NULL,
    agency_name          text,
    former_district_code text,
    procedure_code       text,
    procedure_name       text,
    field_code           text,
    status               smallint NOT NULL,
    channel              smallint,
    submitted_at         timestamptz,
    received_at          timestamptz,
    due_at               timestamptz,
    finished_at          timestamptz,
    returned_at          timestamptz,
    refused_at           timestamptz,
    digitized            boolean,
    fee_required         boolean,
    paid_online          boolean,
    satisfaction         text,
    complaint            boolean,
    first_occurred_at    timestamptz NOT NULL,
    last_occurred_at     timestamptz NOT NULL,
    events               integer NOT NULL,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    -- The period a dossier counts in: when it was received.
    anchor_at            timestamptz GENERATED ALWAYS AS
                         (coalesce(received_at, submitted_at, first_occurred_at)) STORED
);
CREATE INDEX dossiers_group ON dossiers (agency_code, commune_code, anchor_at);
CREATE INDEX dossiers_anchor ON dossiers (anchor_at);
CREATE INDEX dossiers_in_process ON dossiers (due_at) WHERE status IN (1, 2, 4, 5, 6);

CREATE TABLE documents (
    document_id          text PRIMARY KEY,
    province_code        text NOT NULL,
    commune_code         text NOT NULL DEFAULT '',
    agency_code          text NOT NULL,
    agency_name          text,
    former_district_code text,
    status               text,
    status_at            timestamptz,
    direction            text,
    signed               boolean,
    deadline             timestamptz,
    document_type        text,
    code_notation        text,
    from_organ_id        text,
    to_organ_id          text,
    attachment_count     integer,
    attachment_bytes     bigint,
    meta_at              timestamptz,
    completed_at         timestamptz,
    first_occurred_at    timestamptz NOT NULL,
    last_occurred_at     timestamptz NOT NULL,
    events               integer NOT NULL,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    anchor_at            timestamptz GENERATED ALWAYS AS (first_occurred_at) STORED
);
CREATE INDEX documents_group ON documents (agency_code, commune_code, anchor_at);
CREATE INDEX documents_anchor ON documents (anchor_at);

CREATE TABLE field_reports (
    service_request_id   text PRIMARY KEY,
    province_code        text NOT NULL,
    commune_code         text NOT NULL DEFAULT '',
    agency_code          text NOT NULL,
    agency_name          text,
    former_district_code text,
    service_code         text NOT NULL,
    service_name         text,
    service_group        text,
    status               text NOT NULL,
    lat                  double precision,
    long                 double precision,
    requested_datetime   timestamptz,
    updated_datetime     timestamptz,
    expected_datetime    timestamptz,
    resolved_at          timestamptz,
    first_occurred_at    timestamptz NOT NULL,
    last_occurred_at     timestamptz NOT NULL,
    events               integer NOT NULL,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    anchor_at            timestamptz GENERATED ALWAYS AS
                         (coalesce(requested_datetime, first_occurred_at)) STORED
);
CREATE INDEX field_reports_group ON field_reports (agency_code, commune_code, anchor_at);
CREATE INDEX field_reports_anchor ON field_reports (anchor_at);
CREATE INDEX field_reports_open ON field_reports (expected_datetime)
    WHERE status IN ('open', 'investigating', 'in_progress');

-- KPI rollups: entities counted in the bucket of their anchor time. The worker adds, per
-- entity a batch changes, its new counts minus its old ones (numeric: sums stay exact).
CREATE TABLE rollup_minute (
    bucket        timestamptz NOT NULL,
    kind          text        NOT NULL,
    province_code text        NOT NULL,
    commune_code  text        NOT NULL,
    agency_code   text        NOT NULL,
    metric        text        NOT NULL,
    value         numeric     NOT NULL,
    PRIMARY KEY (kind, agency_code, commune_code, province_code, bucket, metric)
);
CREATE INDEX rollup_minute_bucket ON rollup_minute (bucket);

CREATE TABLE rollup_hour (LIKE rollup_minute INCLUDING ALL);

-- Heartbeats and counters of the running workers (for /readyz and /metrics of the API).
CREATE TABLE worker_status (
    instance_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    counters     jsonb NOT NULL DEFAULT '{}'
);
