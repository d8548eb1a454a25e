-- API keys for write access (agencies updating report status). Only a salted hash of the
-- secret is stored; the key id (the part before the secret) finds the row without a scan.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    name         text NOT NULL,
    scopes       text[] NOT NULL,
    kdf          text NOT NULL,
    salt         bytea NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
-- One live key per name; revoked keys stay for the record.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
