-- Every dead letter (streams/dead_letters.py, written by the worker's store_dead_letters agent):
-- where it came from, why, and its size. Never the payload: it may hold personal data, and
-- stays on the dead-letter topic (dead_letter_partition / dead_letter_offset find it there).
-- One row per dead letter: `origin_key` is the source (topic, partition, offset) of a worker's
-- dead letter, or a hash of a connector's (its name, reason, error, key and record), so a
-- replayed or re-sent dead letter is stored once. A hypertable's unique index must hold the
-- time column, so here the writer keeps `origin_key` unique (an advisory lock per key, then
-- insert if absent); retention as the events' (`ioc db migrate`). The plain variant
-- (.plain.sql) creates the same table with a unique `origin_key`.
CREATE TABLE dead_letters (
    at                    timestamptz NOT NULL,  -- when it was dead-lettered
    origin                text        NOT NULL,  -- the source topic or connector
    reason                text        NOT NULL,  -- ioc.reason: invalid_json, unmappable...
    error                 text,                  -- ioc.error, truncated
    message_key           text,                  -- the entity id (dossier code...), truncated
    payload_bytes         integer     NOT NULL,
    source_topic          text,
    source_partition      integer,
    source_offset         bigint,
    source_connector      text,
    dead_letter_partition integer     NOT NULL,
    dead_letter_offset    bigint      NOT NULL,
    origin_key            text        NOT NULL,
    stored_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_origin_key ON dead_letters (origin_key);
-- create_hypertable adds the index on `at` (dead_letters_at_idx).
SELECT create_hypertable('dead_letters', by_range('at', INTERVAL '30 days'));
