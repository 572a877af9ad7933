-- Polygon areas of a world. `geometry` is a GeoJSON MultiPolygon in lon/lat
-- (SRID 4326), `properties` a JSON object of kind-specific settings. Spatial
-- logic runs in the shard, so no spatial index is needed here.
CREATE TABLE areas (
    id            TEXT    PRIMARY KEY NOT NULL,
    world_id      TEXT    NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL
                  CHECK (kind IN ('blocked', 'speed_limit', 'safe', 'spawn', 'zone')),
    geometry      TEXT    NOT NULL CHECK (json_valid(geometry)),
    properties    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(properties)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE INDEX areas_world_id ON areas (world_id);
