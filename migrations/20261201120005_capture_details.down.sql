DROP INDEX IF EXISTS flag_captures_user_id;
DROP INDEX IF EXISTS flag_captures_unannounced;
ALTER TABLE flag_captures
    DROP COLUMN IF EXISTS announced_at,
    DROP COLUMN IF EXISTS score,
    DROP COLUMN IF EXISTS version,
    DROP COLUMN IF EXISTS name;
