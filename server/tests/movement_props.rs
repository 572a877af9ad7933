//! Property tests of movement validation, over random walks, timings and
//! blocked squares: a refused move never charges the distance budget (and
//! the player stays put), no accepted step crosses a blocked area, and no
//! run of accepted moves goes faster than the speed limit allows (the limit
//! times the time taken, plus the burst and the per-move tolerance).

use std::time::{Duration, Instant};

use geo::{polygon, Intersects, Line, MultiPolygon};
use meridian_protocol::{AreaKind, LonLat};
use meridian_server::store::{Area, Bounds, MovementMode};
use meridian_server::world::areas::AreaIndex;
use meridian_server::world::geodesy::distance_m;
use meridian_server::world::movement::{validate, Budget, Proposal, Rules, BURST_S, TOLERANCE_M};
use proptest::prelude::*;
use uuid::Uuid;

const CENTER: LonLat = LonLat {
    lon: 4.9,
    lat: 52.37,
};
const M_PER_DEG: f64 = 111_194.93;
const SPEED_MPS: f64 = 10.0;

fn offset(from: LonLat, east_m: f64, north_m: f64) -> LonLat {
    LonLat {
        lon: from.lon + east_m / (M_PER_DEG * from.lat.to_radians().cos()),
        lat: from.lat + north_m / M_PER_DEG,
    }
}

/// A blocked square of `half_m` around `centre`.
fn wall(centre: LonLat, half_m: f64) -> MultiPolygon<f64> {
    let (sw, ne) = (
        offset(centre, -half_m, -half_m),
        offset(centre, half_m, half_m),
    );
    MultiPolygon(vec![polygon![
        (x: sw.lon, y: sw.lat), (x: ne.lon, y: sw.lat), (x: ne.lon, y: ne.lat), (x: sw.lon, y: ne.lat),
    ]])
}

fn rules() -> Rules {
    Rules {
        speed_mps: SPEED_MPS,
        mode: MovementMode::Input,
        bounds: Bounds {
            min_lon: CENTER.lon - 0.05,
            min_lat: CENTER.lat - 0.05,
            max_lon: CENTER.lon + 0.05,
            max_lat: CENTER.lat + 0.05,
        },
    }
}

/// One attempted move: metres east and north of the current position, and
/// the milliseconds since the previous attempt.
fn step() -> impl Strategy<Value = (f64, f64, u64)> {
    (-60.0..60.0f64, -60.0..60.0f64, 0u64..1_500)
}

/// A wall somewhere within 150 m of the start, 5 to 40 m across each way.
fn a_wall() -> impl Strategy<Value = (f64, f64, f64)> {
    (-150.0..150.0f64, -150.0..150.0f64, 2.5..20.0f64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn refusals_change_nothing_and_accepted_walks_keep_the_rules(
        steps in prop::collection::vec(step(), 1..80),
        (wall_east, wall_north, half) in a_wall(),
    ) {
        let shape = wall(offset(CENTER, wall_east, wall_north), half);
        let areas = AreaIndex::new(&[Area {
            id: Uuid::now_v7(),
            world_id: Uuid::nil(),
            name: "Wall".into(),
            kind: AreaKind::Blocked,
            geometry: shape.clone(),
            properties: serde_json::json!({}),
        }]);
        // Start outside the wall (the tick never places anyone inside one).
        let start = if areas.path_blocked(CENTER, CENTER) {
            offset(CENTER, 0.0, 200.0)
        } else {
            CENTER
        };
        let rules = rules();
        let t0 = Instant::now();
        let mut now = t0;
        let mut budget = Budget::full(SPEED_MPS, t0);
        let mut position = start;
        let (mut travelled, mut accepted) = (0.0, 0usize);
        for (east, north, dt) in steps {
            now += Duration::from_millis(dt);
            let to = offset(position, east, north);
            let before = budget.available_m();
            let proposal = Proposal { lon: to.lon, lat: to.lat, accuracy_m: None };
            match validate(position, proposal, &mut budget, now, &rules, &areas) {
                Ok(step) => {
                    // Never across the wall.
                    let line = Line::new((position.lon, position.lat), (step.to.lon, step.to.lat));
                    prop_assert!(!line.intersects(&shape), "an accepted step crosses the wall");
                    prop_assert!((step.distance_m - distance_m(position, step.to)).abs() < 1e-6);
                    travelled += step.distance_m;
                    accepted += 1;
                    position = step.to;
                }
                Err(_) => {
                    // Refused: the player stays put (`position` is not
                    // touched) and the budget is not charged: it can only
                    // have been refilled by the time that passed.
                    prop_assert!(budget.available_m() >= before - 1e-9);
                }
            }
            // However the walk went, it was never faster than the limit.
            let elapsed = now.duration_since(t0).as_secs_f64();
            let allowed = SPEED_MPS * (elapsed + BURST_S) + TOLERANCE_M * accepted as f64;
            prop_assert!(
                travelled <= allowed + 1e-6,
                "{travelled:.1} m in {elapsed:.2} s (at most {allowed:.1} m)"
            );
        }
    }
}
