-- Objects placed in a world (flags and others) at a point, with type-specific
-- settings. `version` increases with every change, so that a capture can be a
-- conditional update on the version it saw.
CREATE TABLE world_objects (
    id         uuid        PRIMARY KEY,
    world_id   uuid        NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    kind       text        NOT NULL,
    name       text        NOT NULL,
    geom       geometry(Point, 4326) NOT NULL
               CHECK (ST_X(geom) BETWEEN -180 AND 180 AND ST_Y(geom) BETWEEN -90 AND 90),
    properties jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    version    bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX world_objects_world_id ON world_objects (world_id);
CREATE INDEX world_objects_geom ON world_objects USING gist (geom);

CREATE TRIGGER world_objects_updated_at BEFORE UPDATE ON world_objects
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
