-- The team each account plays for, on its profile. Accounts are created with
-- their profile from now on (epoch 0, which `next_epoch` counts up from exactly
-- as from a missing row), so every account has a team. A team with members
-- cannot be deleted: players would silently lose theirs.
ALTER TABLE player_profiles ADD COLUMN team TEXT REFERENCES teams (name);

-- New accounts join the team with the fewest members: the index keeps that
-- count off the table itself.
CREATE INDEX player_profiles_team ON player_profiles (team);

-- Existing accounts: give each one a profile if it has none yet, then deal the
-- teams out in turn by account id (UUIDv7 text, so by age): red, blue, red, ...
-- The positions are 1..n here, as the teams migration seeded them.
INSERT INTO player_profiles (user_id, epoch, created_at_ms, updated_at_ms)
SELECT u.id, 0, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM users u
WHERE NOT EXISTS (SELECT 1 FROM player_profiles p WHERE p.user_id = u.id);

UPDATE player_profiles SET team = t.name
FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS n FROM player_profiles) AS o
JOIN teams t ON t.position = o.n % (SELECT count(*) FROM teams) + 1
WHERE player_profiles.user_id = o.user_id;
