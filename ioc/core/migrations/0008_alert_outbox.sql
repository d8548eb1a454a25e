-- Alert notifications to send (ioc/alerts/outbox.py, deliver.py): one row per (firing or
-- resolved transition, recipient address, channel). The unique key means a transition is
-- never queued twice; `alert_seq` is the transition's `alerts.seq` (no foreign key: `alerts`
-- may be a hypertable).
CREATE TABLE alert_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_seq       bigint      NOT NULL,
    recipient       text        NOT NULL,            -- the address (e-mail)
    channel         text        NOT NULL DEFAULT 'email',
    role            text        NOT NULL,            -- the rule's recipient it came from
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,            -- not before notify_after
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (alert_seq, recipient, channel)
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE state = 'pending';
-- Delivery joins each outbox row to its transition.
CREATE INDEX alerts_seq ON alerts (seq);
