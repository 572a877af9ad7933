-- Rotating refresh tokens. The SHA-256 (hex) of the session's current refresh
-- secret, and of the one the last rotation replaced: presenting that one again
-- means a copy of a used token is in someone else's hands. Sessions opened
-- before this migration have neither and cannot be refreshed. Only hashes are
-- kept: a copy of this table cannot be used to refresh anything.
ALTER TABLE sessions
    ADD COLUMN refresh_hash          text CHECK (refresh_hash ~ '^[0-9a-f]{64}$'),
    ADD COLUMN previous_refresh_hash text CHECK (previous_refresh_hash ~ '^[0-9a-f]{64}$');
