-- Each team's score per world: flags captured since the last reset. A missing
-- row means 0; the first capture inserts it. Rows go with their world and
-- their team.
CREATE TABLE team_scores (
    world_id      TEXT    NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    team          TEXT    NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    score         INTEGER NOT NULL DEFAULT 0 CHECK (score >= 0),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (world_id, team)
) WITHOUT ROWID;
