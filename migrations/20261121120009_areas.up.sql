-- Polygon areas of a world. The type fixes SRID 4326 and MultiPolygon; the
-- check refuses invalid geometry (self-intersections, open rings).
CREATE TABLE areas (
    id         uuid        PRIMARY KEY,
    world_id   uuid        NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    kind       text        NOT NULL
               CHECK (kind IN ('blocked', 'speed_limit', 'safe', 'spawn', 'zone')),
    geom       geometry(MultiPolygon, 4326) NOT NULL CHECK (ST_IsValid(geom)),
    properties jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX areas_world_id ON areas (world_id);
CREATE INDEX areas_geom ON areas USING gist (geom);

CREATE TRIGGER areas_updated_at BEFORE UPDATE ON areas
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
