-- Alert transitions (ioc/alerts): one row per change of state of a (rule, scope), never a row
-- per evaluation. The current state of a (rule, scope) is its newest row (none, or
-- `resolved`: ok). The TimescaleDB variant (0006_alerts.timescale.sql) creates the same table
-- as a hypertable.
CREATE TABLE alerts (
    at           timestamptz NOT NULL,            -- the evaluation time of the transition
    rule         text        NOT NULL,
    scope        text        NOT NULL,            -- province | agency:CODE | commune:CODE
    state        text        NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    value        numeric,                         -- the metric's value at `at`
    threshold    numeric     NOT NULL,
    comparison   text        NOT NULL,
    severity     text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    recipients   text[]      NOT NULL DEFAULT '{}',
    notify_after timestamptz,                     -- firing only: when delivery may start
    seq          bigint GENERATED ALWAYS AS IDENTITY  -- orders rows of the same `at`
);
CREATE INDEX alerts_rule_scope_at ON alerts (rule, scope, at DESC);
CREATE INDEX alerts_at ON alerts (at DESC);
