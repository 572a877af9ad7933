-- Each player's last position per world, upserted in batches by the flusher
-- and ordered by (epoch, seq). The hottest table: no trigger (the upsert sets
-- updated_at), and a fillfactor below 100 so that most updates find room on
-- their page (HOT updates, no index churn). Positions are personal data:
-- rows go with the account and with the world.
CREATE TABLE player_positions (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    world_id   uuid        NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    geom       geometry(Point, 4326) NOT NULL,
    heading    real        NOT NULL,
    epoch      bigint      NOT NULL CHECK (epoch >= 0),
    seq        bigint      NOT NULL CHECK (seq >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, world_id),
    CHECK (ST_X(geom) BETWEEN -180 AND 180 AND ST_Y(geom) BETWEEN -90 AND 90)
) WITH (fillfactor = 70);

CREATE INDEX player_positions_world_id ON player_positions (world_id);
