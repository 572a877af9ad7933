-- Capture history, partitioned by month of `captured_at`. The server creates
-- the coming months' partitions ahead of time; the default partition catches
-- anything that arrives before them, so an insert never finds none.
CREATE TABLE flag_captures (
    id          uuid        NOT NULL,
    world_id    uuid        NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    object_id   uuid        NOT NULL,
    user_id     uuid        REFERENCES users (id) ON DELETE SET NULL,
    team        text        NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, captured_at)
) PARTITION BY RANGE (captured_at);

CREATE TABLE flag_captures_default PARTITION OF flag_captures DEFAULT;

CREATE INDEX flag_captures_world_time ON flag_captures (world_id, captured_at);

CREATE TRIGGER flag_captures_updated_at BEFORE UPDATE ON flag_captures
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
