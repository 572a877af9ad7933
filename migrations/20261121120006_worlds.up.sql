-- Worlds. Bounds in lon/lat degrees (SRID 4326); min_lon > max_lon means the
-- box crosses the antimeridian, so longitude has no ordering check.
CREATE TABLE worlds (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    min_lon       double precision NOT NULL CHECK (min_lon BETWEEN -180 AND 180),
    min_lat       double precision NOT NULL CHECK (min_lat BETWEEN -90 AND 90),
    max_lon       double precision NOT NULL CHECK (max_lon BETWEEN -180 AND 180),
    max_lat       double precision NOT NULL CHECK (max_lat BETWEEN -90 AND 90),
    center        geometry(Point, 4326) NOT NULL,
    movement_mode text        NOT NULL CHECK (movement_mode IN ('input', 'gps')),
    max_speed_mps double precision CHECK (max_speed_mps > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (min_lat <= max_lat)
);

CREATE TRIGGER worlds_updated_at BEFORE UPDATE ON worlds
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
