-- Access tokens of alert channels that expire, and the refresh token that renews them
-- (ioc/alerts/zalo.py). The refresh token rotates at each use: it lives here, not in memory,
-- so a restart renews with the latest one. `seed_sha256`: the SHA-256 of the refresh token
-- setting the row started from; a new setting (the OA authorized again) replaces the row.
-- Renewal happens with this row locked (SELECT ... FOR UPDATE): one deliverer at a time.
CREATE TABLE channel_tokens (
    channel       text        PRIMARY KEY,   -- 'zalo'
    access_token  text,                      -- NULL: renew before the first use
    expires_at    timestamptz,               -- NULL: unknown, used until refused
    refresh_token text        NOT NULL,
    seed_sha256   text        NOT NULL,
    renewed_at    timestamptz                -- the last successful renewal
);
