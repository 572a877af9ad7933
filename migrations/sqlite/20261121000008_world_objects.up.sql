-- Objects placed in a world (flags and others) at a lon/lat point, with
-- type-specific settings as a JSON object.
CREATE TABLE world_objects (
    id            TEXT    PRIMARY KEY NOT NULL,
    world_id      TEXT    NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    lon           REAL    NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat           REAL    NOT NULL CHECK (lat BETWEEN -90 AND 90),
    properties    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(properties)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE INDEX world_objects_world_id ON world_objects (world_id);
