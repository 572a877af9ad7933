-- Worlds: bounds and centre in lon/lat degrees (SRID 4326). A bounds box with
-- min_lon > max_lon crosses the antimeridian, so no ordering check on longitude.
CREATE TABLE worlds (
    id            TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL UNIQUE,
    min_lon       REAL    NOT NULL CHECK (min_lon BETWEEN -180 AND 180),
    min_lat       REAL    NOT NULL CHECK (min_lat BETWEEN -90 AND 90),
    max_lon       REAL    NOT NULL CHECK (max_lon BETWEEN -180 AND 180),
    max_lat       REAL    NOT NULL CHECK (max_lat BETWEEN -90 AND 90),
    center_lon    REAL    NOT NULL,
    center_lat    REAL    NOT NULL,
    movement_mode TEXT    NOT NULL CHECK (movement_mode IN ('input', 'gps')),
    max_speed_mps REAL    CHECK (max_speed_mps > 0),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    CHECK (min_lat <= max_lat)
);
