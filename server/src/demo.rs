//! The demo world seeded on first start, so that a fresh embedded install has
//! something to walk around in: Amsterdam's old centre around Dam Square, with
//! areas of every kind and a few flags.
//!
//! The data is also available as a pure function, [`demo_world`], for tests and
//! benchmarks that need a realistic world without a store.

use geo::{LineString, MultiPolygon, Polygon};
use meridian_protocol::{AreaKind, LonLat};
use serde_json::json;
use uuid::Uuid;

use crate::store::{Area, Bounds, MovementMode, Store, StoreError, WorldDef, WorldObject};

/// The demo world's name, which clients join by.
pub const DEMO_WORLD_NAME: &str = "demo";

/// Dam Square, Amsterdam: the demo world's centre and where new players appear.
pub const DEMO_CENTER: LonLat = LonLat {
    lon: 4.8932,
    lat: 52.3731,
};

/// Seed the demo world (bounds, areas of every kind, flags) if the store has no world.
///
/// Two shards starting at once on one database may both find it empty; the
/// second one's world then conflicts on the name and it leaves the seeding to
/// the first.
///
/// # Errors
/// `StoreError` if the store fails.
pub async fn seed_if_empty(store: &dyn Store) -> Result<(), StoreError> {
    if !store.worlds().await?.is_empty() {
        return Ok(());
    }
    let (world, areas, objects) = demo_world();
    match store.put_world(&world).await {
        Err(StoreError::Conflict(_)) => return Ok(()),
        other => other?,
    }
    for area in &areas {
        store.put_area(area).await?;
    }
    for object in &objects {
        store.put_world_object(object).await?;
    }
    tracing::info!(
        world = DEMO_WORLD_NAME,
        areas = areas.len(),
        flags = objects.len(),
        "seeded the demo world"
    );
    Ok(())
}

/// The demo world, its areas and its flags, with fresh UUIDv7 ids.
///
/// Invariants the tests keep: every shape lies inside the bounds, the centre is
/// inside a spawn area and outside every blocked area, and no spawn area or flag
/// touches a blocked area.
#[must_use]
pub fn demo_world() -> (WorldDef, Vec<Area>, Vec<WorldObject>) {
    let world = WorldDef {
        id: Uuid::now_v7(),
        name: DEMO_WORLD_NAME.into(),
        // About 14 km by 13 km: the whole city centre and its ring.
        bounds: Bounds {
            min_lon: DEMO_CENTER.lon - 0.10,
            min_lat: DEMO_CENTER.lat - 0.06,
            max_lon: DEMO_CENTER.lon + 0.10,
            max_lat: DEMO_CENTER.lat + 0.06,
        },
        center: DEMO_CENTER,
        movement_mode: MovementMode::Input,
        max_speed_mps: None,
    };
    let area = |name: &str, kind: AreaKind, ring: Vec<(f64, f64)>, properties| Area {
        id: Uuid::now_v7(),
        world_id: world.id,
        name: name.into(),
        kind,
        geometry: MultiPolygon(vec![Polygon::new(LineString::from(ring), vec![])]),
        properties,
    };
    let no_properties = || json!({});
    let areas = vec![
        // Spawns: about 100 m squares on open squares.
        area(
            "Dam Square",
            AreaKind::Spawn,
            rect(4.89246, 52.37265, 4.89394, 52.37355),
            no_properties(),
        ),
        area(
            "Nieuwmarkt",
            AreaKind::Spawn,
            rect(4.89956, 52.37205, 4.90104, 52.37295),
            no_properties(),
        ),
        // Blocked: building footprints and a stretch of canal.
        area(
            "Royal Palace",
            AreaKind::Blocked,
            rect(4.8907, 52.3727, 4.8919, 52.3735),
            no_properties(),
        ),
        area(
            "Nieuwe Kerk",
            AreaKind::Blocked,
            rect(4.8909, 52.3739, 4.8921, 52.3745),
            no_properties(),
        ),
        area(
            "Singel canal",
            AreaKind::Blocked,
            // A 40 m wide strip that bends with the canal (counter-clockwise).
            vec![
                (4.8880, 52.3700),
                (4.8886, 52.3700),
                (4.8890, 52.3730),
                (4.8888, 52.3760),
                (4.8882, 52.3760),
                (4.8884, 52.3730),
                (4.8880, 52.3700),
            ],
            no_properties(),
        ),
        // Speed limits: crowded shopping streets.
        area(
            "Kalverstraat",
            AreaKind::SpeedLimit,
            rect(4.8916, 52.3685, 4.8926, 52.3722),
            json!({ "max_speed_mps": 2.0 }),
        ),
        area(
            "Damrak",
            AreaKind::SpeedLimit,
            rect(4.8937, 52.3742, 4.8950, 52.3770),
            json!({ "max_speed_mps": 3.0 }),
        ),
        // Safe: a quiet courtyard and a corner of a park.
        area(
            "Begijnhof",
            AreaKind::Safe,
            rect(4.8893, 52.3690, 4.8903, 52.3697),
            no_properties(),
        ),
        area(
            "Vondelpark east",
            AreaKind::Safe,
            rect(4.8740, 52.3590, 4.8790, 52.3615),
            no_properties(),
        ),
        // Zones: named neighbourhoods.
        area(
            "De Wallen",
            AreaKind::Zone,
            rect(4.8960, 52.3718, 4.9000, 52.3760),
            no_properties(),
        ),
        area(
            "Jordaan",
            AreaKind::Zone,
            rect(4.8800, 52.3730, 4.8860, 52.3790),
            no_properties(),
        ),
    ];
    let flag = |name: &str, lon: f64, lat: f64| WorldObject {
        id: Uuid::now_v7(),
        world_id: world.id,
        kind: "flag".into(),
        name: name.into(),
        position: LonLat { lon, lat },
        properties: json!({ "capture_radius_m": 20, "capture_time_ms": 5000 }),
        owner: None,
        version: 0,
    };
    let objects = vec![
        flag("Munttoren", 4.8937, 52.3672),
        flag("Westerkerk", 4.8843, 52.3749),
        flag("Oude Kerk", 4.8980, 52.3742),
        flag("Rembrandtplein", 4.8965, 52.3662),
    ];
    (world, areas, objects)
}

/// A closed counter-clockwise ring around a lon/lat rectangle, the winding
/// GeoJSON asks exterior rings to have.
fn rect(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Vec<(f64, f64)> {
    vec![
        (min_lon, min_lat),
        (max_lon, min_lat),
        (max_lon, max_lat),
        (min_lon, max_lat),
        (min_lon, min_lat),
    ]
}

#[cfg(test)]
mod tests {
    use geo::{BoundingRect, Contains, Distance, Haversine, Intersects, Point, Validation};

    use super::*;

    fn point(p: LonLat) -> Point<f64> {
        Point::new(p.lon, p.lat)
    }

    #[test]
    fn the_centre_is_a_spawn_point_and_not_blocked() {
        let (world, areas, _) = demo_world();
        let centre = point(world.center);
        assert!(areas
            .iter()
            .any(|a| a.kind == AreaKind::Spawn && a.geometry.contains(&centre)));
        for a in areas.iter().filter(|a| a.kind == AreaKind::Blocked) {
            assert!(
                !a.geometry.intersects(&centre),
                "{} blocks the centre",
                a.name
            );
        }
    }

    #[test]
    fn spawns_and_flags_keep_clear_of_blocked_areas() {
        let (_, areas, flags) = demo_world();
        let blocked: Vec<&Area> = areas
            .iter()
            .filter(|a| a.kind == AreaKind::Blocked)
            .collect();
        for b in &blocked {
            for s in areas.iter().filter(|a| a.kind == AreaKind::Spawn) {
                assert!(
                    !s.geometry.intersects(&b.geometry),
                    "{} touches {}",
                    s.name,
                    b.name
                );
            }
            for f in &flags {
                assert!(
                    !b.geometry.intersects(&point(f.position)),
                    "{} in {}",
                    f.name,
                    b.name
                );
            }
        }
    }

    #[test]
    fn every_kind_is_present_with_valid_small_shapes_inside_the_bounds() {
        let (world, areas, flags) = demo_world();
        for kind in [
            AreaKind::Blocked,
            AreaKind::SpeedLimit,
            AreaKind::Safe,
            AreaKind::Spawn,
            AreaKind::Zone,
        ] {
            assert!(
                areas.iter().filter(|a| a.kind == kind).count() >= 2,
                "{kind:?}"
            );
        }
        for a in &areas {
            assert!(a.geometry.is_valid(), "{} is not a valid polygon", a.name);
            assert_eq!(a.world_id, world.id);
            let r = a.geometry.bounding_rect().expect("not empty");
            let (min, max) = (r.min(), r.max());
            for corner in [(min.x, min.y), (max.x, max.y)] {
                let corner = LonLat {
                    lon: corner.0,
                    lat: corner.1,
                };
                assert!(
                    world.bounds.contains(corner),
                    "{} leaves the bounds",
                    a.name
                );
            }
            let diagonal_m = Haversine.distance(Point::from(min), Point::from(max));
            assert!(
                (50.0..1_000.0).contains(&diagonal_m),
                "{} spans {diagonal_m} m",
                a.name
            );
        }
        for f in &flags {
            assert!(
                world.bounds.contains(f.position),
                "{} leaves the bounds",
                f.name
            );
            assert_eq!(f.kind, "flag");
            assert_eq!(f.properties["capture_radius_m"], 20);
        }
        for a in areas.iter().filter(|a| a.kind == AreaKind::SpeedLimit) {
            assert!(
                a.properties["max_speed_mps"].as_f64().is_some(),
                "{}",
                a.name
            );
        }
    }
}
