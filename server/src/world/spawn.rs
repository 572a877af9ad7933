//! Where a player appears: their stored position if it is still a legal place,
//! else a random point of a `spawn` area, else the world's centre.

use geo::{BoundingRect, Intersects, Point};
use meridian_protocol::{AreaKind, LonLat};
use rand::Rng;

use super::areas::AreaIndex;
use crate::store::{StoredPosition, WorldDef};

/// Tries at sampling a point inside a spawn area before giving up on it.
const SAMPLES: usize = 64;

/// The stored position if it is inside the bounds and not inside a blocked
/// area (the map may have changed since the player left).
pub fn restore(stored: &StoredPosition, world: &WorldDef, areas: &AreaIndex) -> Option<LonLat> {
    let p = stored.position;
    let legal =
        world.bounds.contains(p) && !areas.containing(p).any(|a| a.kind == AreaKind::Blocked);
    legal.then_some(p)
}

/// A fresh spawn point.
pub fn spawn_point(world: &WorldDef, areas: &AreaIndex, rng: &mut impl Rng) -> LonLat {
    let spawns: Vec<_> = areas.of_kind(AreaKind::Spawn).collect();
    if !spawns.is_empty() {
        let area = spawns[rng.random_range(0..spawns.len())];
        if let Some(rect) = area.geometry.bounding_rect() {
            for _ in 0..SAMPLES {
                let lon = rng.random_range(rect.min().x..=rect.max().x);
                let lat = rng.random_range(rect.min().y..=rect.max().y);
                let p = LonLat { lon, lat };
                if area.geometry.intersects(&Point::new(lon, lat))
                    && world.bounds.contains(p)
                    && !areas.containing(p).any(|a| a.kind == AreaKind::Blocked)
                {
                    return p;
                }
            }
        }
    }
    world.center
}
