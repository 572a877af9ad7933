-- The team each account plays for, on its profile. Accounts are created with
-- their profile from now on (epoch 0, which `next_epoch` counts up from exactly
-- as from a missing row), so every account has a team. A team with members
-- cannot be deleted (no ON DELETE action): players would silently lose theirs.
ALTER TABLE player_profiles ADD COLUMN team text REFERENCES teams (name);

-- New accounts join the team with the fewest members: this index makes that
-- count an index-only scan instead of a pass over every profile.
CREATE INDEX player_profiles_team ON player_profiles (team);

-- Existing accounts: give each one a profile if it has none yet, then deal the
-- teams out in turn by account id (UUIDv7, so by age): red, blue, red, ... The
-- positions are 1..n here, as the teams migration seeded them.
INSERT INTO player_profiles (user_id, epoch)
SELECT id, 0 FROM users
ON CONFLICT (user_id) DO NOTHING;

UPDATE player_profiles p SET team = t.name
FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS n FROM player_profiles) o
JOIN teams t ON t.position = o.n % (SELECT count(*) FROM teams) + 1
WHERE p.user_id = o.user_id;
