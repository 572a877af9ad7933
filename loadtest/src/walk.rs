//! How a bot walks: a random walk at a steady legal speed inside the test
//! area, turning back toward the centre at its edge and around the boxes of
//! areas that would refuse or slow it, so that a correct server never has to
//! correct it.

use std::sync::Arc;

use meridian_protocol::{ClientMessage, LonLat};
use rand::rngs::SmallRng;
use rand::Rng;
use serde::Deserialize;

use crate::options::{BBox, M_PER_DEG};
use crate::rush::{Duty, Rush, RADIUS_M};

/// How far bots keep from an obstacle's box, in metres. A step is far shorter,
/// so a step that ends outside the widened box cannot touch the area.
const MARGIN_M: f64 = 3.0;

/// Chance per step of a small change of direction, so paths wander.
const TURN_CHANCE: f64 = 0.05;

/// Headings tried before a bot stands still for a step.
const TRIES: usize = 12;

/// An area bots must keep out of, as the server's admin API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Obstacle {
    /// `blocked` or `speed_limit`.
    pub kind: String,
    /// `[min_lon, min_lat, max_lon, max_lat]`.
    pub bbox: [f64; 4],
    /// The limit inside a `speed_limit` area.
    pub max_speed_mps: Option<f64>,
}

/// Where bots may walk, shared by all of them.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The test area.
    area: BBox,
    /// Obstacle boxes widened by the margin, with their speed limits.
    obstacles: Vec<(BBox, Option<f64>)>,
    /// The flag rush the bots with a duty follow, if one runs.
    pub rush: Option<Arc<Rush>>,
}

impl Walk {
    /// The area with its obstacles.
    #[must_use]
    pub fn new(area: BBox, obstacles: &[Obstacle]) -> Self {
        let lat = area.center().lat.to_radians().cos();
        let (dlat, dlon) = (MARGIN_M / M_PER_DEG, MARGIN_M / (M_PER_DEG * lat));
        let obstacles = obstacles
            .iter()
            .map(|o| {
                let b = o.bbox;
                let widened =
                    BBox::from_array([b[0] - dlon, b[1] - dlat, b[2] + dlon, b[3] + dlat]);
                let limit = if o.kind == "speed_limit" {
                    o.max_speed_mps
                } else {
                    Some(0.0)
                };
                (widened, limit)
            })
            .collect();
        Self {
            area,
            obstacles,
            rush: None,
        }
    }

    /// Whether stepping from `from` to `to` enters an obstacle `from` is not in.
    fn enters_obstacle(&self, from: LonLat, to: LonLat) -> bool {
        self.obstacles
            .iter()
            .any(|(b, _)| b.contains(to) && !b.contains(from))
    }

    /// The lowest speed limit of the obstacles containing `p`, if any.
    fn limit_at(&self, p: LonLat) -> Option<f64> {
        self.obstacles
            .iter()
            .filter(|(b, _)| b.contains(p))
            .filter_map(|(_, limit)| *limit)
            .reduce(f64::min)
    }
}

/// One bot's walk.
#[derive(Debug)]
pub struct Walker {
    /// Where the bot is (as last sent, or as corrected).
    pub position: LonLat,
    /// Degrees clockwise from north.
    heading: f64,
    /// Metres per second.
    speed: f64,
    /// Which flags it rushes to, in a flag rush.
    duty: Option<Duty>,
    rng: SmallRng,
}

impl Walker {
    /// A walker starting at `position` with a random heading and a speed in `speeds`.
    #[must_use]
    pub fn new(
        position: LonLat,
        speeds: (f64, f64),
        duty: Option<Duty>,
        mut rng: SmallRng,
    ) -> Self {
        Self {
            position,
            heading: rng.random_range(0.0..360.0),
            speed: rng.random_range(speeds.0..=speeds.1),
            duty,
            rng,
        }
    }

    /// Advance by `dt` seconds and say so: the `Move` numbered `seq`.
    pub fn next_move(&mut self, dt: f64, walk: &Walk, seq: u32) -> ClientMessage {
        let (p, heading) = self.step(dt, walk);
        ClientMessage::Move {
            seq,
            lon: p.lon,
            lat: p.lat,
            heading,
            accuracy_m: None,
            fix_time_ms: None,
        }
    }

    /// Advance by `dt` seconds; returns the new position and heading. A bot
    /// boxed in stands still for a step rather than make an illegal move.
    pub fn step(&mut self, dt: f64, walk: &Walk) -> (LonLat, f32) {
        if self.rng.random_bool(TURN_CHANCE) {
            self.heading += self.rng.random_range(-30.0..30.0);
        }
        // Inside a slower area (a bot may spawn in one), keep well under its limit.
        let speed = match walk.limit_at(self.position) {
            Some(limit) => self.speed.min(limit * 0.8),
            None => self.speed,
        };
        let centre = walk.area.center();
        let home = bearing(self.position, centre);
        // In a flag rush: head for the duty's flag, and once there, wander
        // near its middle so as to stay in the zone.
        let rush_target = walk
            .rush
            .as_ref()
            .zip(self.duty)
            .map(|(rush, duty)| rush.target(duty, tokio::time::Instant::now()));
        if let Some(target) = rush_target {
            if distance_sq(self.position, target).sqrt() * M_PER_DEG > RADIUS_M * 0.4 {
                self.heading = bearing(self.position, target);
            }
        }
        for attempt in 0..TRIES {
            let heading = match attempt {
                0 => self.heading,
                1 if !walk.area.contains(self.position) => home,
                1 if rush_target.is_some() => bearing(self.position, rush_target.unwrap_or(centre)),
                _ => self.rng.random_range(0.0..360.0),
            };
            let next = advance(self.position, heading, speed * dt);
            // Inside, stay inside; outside (spawned there), get closer.
            let inside = if walk.area.contains(self.position) {
                walk.area.contains(next)
            } else {
                distance_sq(next, centre) < distance_sq(self.position, centre)
            };
            if inside && !walk.enters_obstacle(self.position, next) {
                self.heading = heading.rem_euclid(360.0);
                self.position = next;
                break;
            }
        }
        (self.position, self.heading as f32)
    }
}

/// The point `distance_m` metres from `from` along `heading_deg`.
fn advance(from: LonLat, heading_deg: f64, distance_m: f64) -> LonLat {
    let (sin, cos) = heading_deg.to_radians().sin_cos();
    LonLat {
        lon: from.lon + distance_m * sin / (M_PER_DEG * from.lat.to_radians().cos()),
        lat: from.lat + distance_m * cos / M_PER_DEG,
    }
}

/// The heading from `from` toward `to`, in degrees.
fn bearing(from: LonLat, to: LonLat) -> f64 {
    let east = (to.lon - from.lon) * from.lat.to_radians().cos();
    let north = to.lat - from.lat;
    east.atan2(north).to_degrees()
}

/// A squared distance in local units, good enough to compare.
fn distance_sq(a: LonLat, b: LonLat) -> f64 {
    let east = (a.lon - b.lon) * a.lat.to_radians().cos();
    let north = a.lat - b.lat;
    east * east + north * north
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::options::DEMO_CENTER;

    #[test]
    fn walkers_stay_in_the_area_and_out_of_obstacles_at_their_speed() {
        let area = BBox::square(DEMO_CENTER, 400.0);
        let wall = BBox::square(DEMO_CENTER, 60.0);
        let walk = Walk::new(
            area,
            &[Obstacle {
                kind: "blocked".into(),
                bbox: wall.to_array(),
                max_speed_mps: None,
            }],
        );
        let start = LonLat {
            lon: DEMO_CENTER.lon,
            lat: DEMO_CENTER.lat + 100.0 / M_PER_DEG,
        };
        for seed in 0..20 {
            let mut walker = Walker::new(start, (1.4, 5.0), None, SmallRng::seed_from_u64(seed));
            for _ in 0..3000 {
                let before = walker.position;
                let (p, _) = walker.step(0.1, &walk);
                let moved = distance_sq(before, p).sqrt() * M_PER_DEG;
                assert!(moved <= 0.51, "a step of {moved} m");
                assert!(!wall.contains(p), "walked into the wall at {p:?}");
                assert!(area.contains(p), "left the area at {p:?}");
            }
        }
    }

    #[test]
    fn walkers_outside_the_area_head_back() {
        let area = BBox::square(DEMO_CENTER, 100.0);
        let walk = Walk::new(area, &[]);
        let far = LonLat {
            lon: DEMO_CENTER.lon + 0.01,
            lat: DEMO_CENTER.lat,
        };
        let mut walker = Walker::new(far, (5.0, 5.0), None, SmallRng::seed_from_u64(1));
        for _ in 0..2000 {
            walker.step(0.1, &walk);
        }
        assert!(area.contains(walker.position));
    }
}
