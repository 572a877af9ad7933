-- Per-account game state. `epoch` is the fencing number taken atomically at
-- every login or takeover, so that positions written by a shard that lost
-- the player are older than the new shard's.
CREATE TABLE player_profiles (
    user_id      uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    display_name text,
    epoch        bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER player_profiles_updated_at BEFORE UPDATE ON player_profiles
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
