-- The profiles the up migration created stay: at epoch 0 they behave exactly
-- like the missing rows they replaced.
DROP INDEX IF EXISTS player_profiles_team;
ALTER TABLE player_profiles DROP COLUMN IF EXISTS team;
