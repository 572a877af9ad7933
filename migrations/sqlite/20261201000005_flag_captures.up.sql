-- Capture history: one row per committed capture, with what a shard needs to
-- announce it (the player's display name, the flag's version and the team's
-- score after it). `announced_at_ms` stays NULL until a shard has announced
-- it, so captures committed by a shard that stopped before announcing them are
-- found again. The flag is not a foreign key: the history outlives deleted
-- flags. A deleted account's captures stay, without the account.
CREATE TABLE flag_captures (
    id              TEXT    PRIMARY KEY NOT NULL,
    world_id        TEXT    NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    object_id       TEXT    NOT NULL,
    user_id         TEXT    REFERENCES users (id) ON DELETE SET NULL,
    team            TEXT    NOT NULL,
    name            TEXT    NOT NULL DEFAULT '',
    version         INTEGER NOT NULL DEFAULT 0,
    score           INTEGER NOT NULL DEFAULT 0,
    captured_at_ms  INTEGER NOT NULL,
    announced_at_ms INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE INDEX flag_captures_world_time ON flag_captures (world_id, captured_at_ms);

-- The unannounced captures are few (normally none), and shards look for them
-- often: a partial index keeps that lookup tiny whatever the history's size.
CREATE INDEX flag_captures_unannounced ON flag_captures (captured_at_ms)
    WHERE announced_at_ms IS NULL;

-- Deleting an account clears its captures' user_id: without an index that
-- would scan the whole history.
CREATE INDEX flag_captures_user_id ON flag_captures (user_id);
