-- Rotating refresh tokens. The SHA-256 (hex) of the session's current refresh
-- secret, and of the one the last rotation replaced: presenting that one again
-- means a copy of a used token is in someone else's hands. Sessions opened
-- before this migration have neither and cannot be refreshed.
ALTER TABLE sessions ADD COLUMN refresh_hash TEXT;
ALTER TABLE sessions ADD COLUMN previous_refresh_hash TEXT;
