-- Each player's last position per world, written in batches by the flusher and
-- ordered by (epoch, seq). It is the hottest table: no triggers and no index
-- beyond the primary key. Real-world locations are personal data, so rows go
-- with the account (and with the world).
CREATE TABLE player_positions (
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    world_id      TEXT    NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    lon           REAL    NOT NULL,
    lat           REAL    NOT NULL,
    heading       REAL    NOT NULL,
    epoch         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, world_id)
) WITHOUT ROWID;

-- Deleting a world must not scan the whole table for its positions.
CREATE INDEX player_positions_world_id ON player_positions (world_id);
