-- Each team's score per world: flags captured since the last reset. A missing
-- row means 0, so a new world or team needs no rows; the first capture inserts
-- it. The check keeps a bug from ever showing a negative score. Rows go with
-- their world and their team.
CREATE TABLE team_scores (
    world_id   uuid        NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    team       text        NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    score      bigint      NOT NULL DEFAULT 0 CHECK (score >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (world_id, team)
);

CREATE TRIGGER team_scores_updated_at BEFORE UPDATE ON team_scores
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
