ALTER TABLE sessions
    DROP COLUMN IF EXISTS previous_refresh_hash,
    DROP COLUMN IF EXISTS refresh_hash;
