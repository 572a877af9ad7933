-- What a shard needs to announce a capture from its history row alone: the
-- player's display name, the flag's version after the capture and the team's
-- score after it. `announced_at` stays NULL until a shard has announced the
-- capture, so captures committed by a shard that died before announcing them
-- are found again. Added to the partitioned parent, so every partition,
-- existing and future, gets the columns.
ALTER TABLE flag_captures
    ADD COLUMN name         text        NOT NULL DEFAULT '',
    ADD COLUMN version      bigint      NOT NULL DEFAULT 0,
    ADD COLUMN score        bigint      NOT NULL DEFAULT 0,
    ADD COLUMN announced_at timestamptz;

-- Rows from before this migration were never meant to be announced by this
-- mechanism; announcing them now would replay old history to every player.
UPDATE flag_captures SET announced_at = captured_at;

-- The unannounced captures are few (normally none), and shards look for them
-- often: a partial index keeps that lookup tiny whatever the history's size.
CREATE INDEX flag_captures_unannounced ON flag_captures (captured_at)
    WHERE announced_at IS NULL;

-- Deleting an account sets its captures' user_id to NULL: without an index
-- that would scan the whole history.
CREATE INDEX flag_captures_user_id ON flag_captures (user_id);
