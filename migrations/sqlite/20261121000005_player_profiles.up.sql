-- Per-account game state. `epoch` is the fencing number taken at every login or
-- takeover, so that positions written by a shard that lost the player are older
-- than the new shard's.
CREATE TABLE player_profiles (
    user_id       TEXT    PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display_name  TEXT,
    epoch         INTEGER NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
