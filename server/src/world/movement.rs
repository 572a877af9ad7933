//! Movement validation: whether a player may go from where the server says
//! they are to where they say they are going.
//!
//! Speed is judged with a **distance budget**, a token bucket refilled at the
//! speed limit times server-measured time and capped at a few seconds' worth.
//! Moves from a phone arrive bunched and jittery (three in one tick, then none
//! for half a second); a bucket accepts those as long as the average speed is
//! legal, while sustained speeding drains it and is refused.

use std::time::{Duration, Instant};

use meridian_protocol::{CorrectionReason, LonLat};

use super::areas::AreaIndex;
use super::geodesy::{checked_point, distance_m};
use crate::store::{Bounds, MovementMode};

/// Seconds of movement at the speed limit the budget can hold.
pub const BURST_S: f64 = 3.0;

/// Metres of slack on every move, for rounding on the client.
pub const TOLERANCE_M: f64 = 1.0;

/// The most a reported GPS accuracy may widen the tolerance, in metres.
pub const MAX_GPS_TOLERANCE_M: f64 = 50.0;

/// A player's distance budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Metres the player may still move without waiting.
    available_m: f64,
    /// When the budget was last refilled.
    refilled_at: Instant,
}

impl Budget {
    /// A full budget for a player who just arrived.
    #[must_use]
    pub fn full(speed_mps: f64, now: Instant) -> Self {
        Self {
            available_m: speed_mps * BURST_S,
            refilled_at: now,
        }
    }

    /// Metres available now (for tests and diagnostics).
    #[must_use]
    pub fn available_m(&self) -> f64 {
        self.available_m
    }

    fn refill(&mut self, speed_mps: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        let cap = speed_mps * BURST_S;
        self.available_m = (self.available_m + speed_mps * elapsed.as_secs_f64()).min(cap);
    }
}

/// The rules of one world that movement is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The world's speed limit in m/s, before `speed_limit` areas lower it.
    pub speed_mps: f64,
    /// Input or GPS.
    pub mode: MovementMode,
    /// Players must stay inside.
    pub bounds: Bounds,
}

/// Where a client says the player is going.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// Longitude as sent (any finite value; wrapped).
    pub lon: f64,
    /// Latitude as sent.
    pub lat: f64,
    /// GPS accuracy radius in metres, if the client reported one.
    pub accuracy_m: Option<f32>,
}

/// A move that passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    /// The normalized destination.
    pub to: LonLat,
    /// How far it is from the previous position, in metres.
    pub distance_m: f64,
}

/// Judge one move. On success the budget is charged; on refusal it is left as it was.
///
/// # Errors
/// The `CorrectionReason` to send back, checked in this order: coordinates,
/// bounds, blocked areas, speed.
pub fn validate(
    from: LonLat,
    proposal: Proposal,
    budget: &mut Budget,
    now: Instant,
    rules: &Rules,
    areas: &AreaIndex,
) -> Result<Accepted, CorrectionReason> {
    let Proposal {
        lon,
        lat,
        accuracy_m,
    } = proposal;
    let to = checked_point(lon, lat).ok_or(CorrectionReason::InvalidCoordinates)?;
    if !rules.bounds.contains(to) {
        return Err(CorrectionReason::OutOfBounds);
    }
    if areas.path_blocked(from, to) {
        return Err(CorrectionReason::Blocked);
    }
    let distance = distance_m(from, to);
    // The slowest limit at either end governs, so a speed zone cannot be crossed fast.
    let speed = [areas.speed_limit_at(from), areas.speed_limit_at(to)]
        .into_iter()
        .flatten()
        .fold(rules.speed_mps, f64::min);
    budget.refill(speed, now);
    let tolerance = TOLERANCE_M
        + match rules.mode {
            MovementMode::Input => 0.0,
            MovementMode::Gps => accuracy_m
                .map(f64::from)
                .filter(|a| a.is_finite() && *a > 0.0)
                .unwrap_or(0.0)
                .min(MAX_GPS_TOLERANCE_M),
        };
    if distance > budget.available_m + tolerance {
        return Err(CorrectionReason::TooFast);
    }
    budget.available_m = (budget.available_m - distance).max(0.0);
    Ok(Accepted {
        to,
        distance_m: distance,
    })
}

/// How long strikes are remembered: a player who moves cleanly this long starts over.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(60);

/// Correction episodes within `STRIKE_MEMORY` after which a player is kicked.
pub const STRIKE_LIMIT: u32 = 10;

/// Whether a refusal counts as a strike. In GPS mode speed alone never does:
/// real fixes jump, and a phone in a car is not a cheater.
#[must_use]
pub fn is_strike(reason: CorrectionReason, mode: MovementMode) -> bool {
    !(mode == MovementMode::Gps && reason == CorrectionReason::TooFast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::areas::tests::square;
    use meridian_protocol::AreaKind;

    const START: LonLat = LonLat {
        lon: 4.8932,
        lat: 52.3731,
    };
    /// Metres per degree of longitude at the test latitude.
    fn m_per_deg_lon() -> f64 {
        111_195.0 * START.lat.to_radians().cos()
    }

    fn rules(mode: MovementMode) -> Rules {
        Rules {
            speed_mps: 10.0,
            mode,
            bounds: Bounds {
                min_lon: 4.7,
                min_lat: 52.3,
                max_lon: 5.0,
                max_lat: 52.45,
            },
        }
    }

    fn east(from: LonLat, metres: f64) -> (f64, f64) {
        (from.lon + metres / m_per_deg_lon(), from.lat)
    }

    #[test]
    fn bunched_jittery_moves_at_a_legal_average_pass() {
        let areas = AreaIndex::default();
        let t0 = Instant::now();
        let mut budget = Budget::full(10.0, t0);
        let mut at = START;
        // 60 s at 9 m/s average, in bursts: nothing for 400 ms, then four moves at once.
        for burst in 1..=150u32 {
            let now = t0 + Duration::from_millis(u64::from(burst) * 400);
            for _ in 0..4 {
                let jitter = if burst % 2 == 0 { 0.4 } else { -0.4 };
                let (lon, lat) = east(at, 0.9 + jitter);
                let ok = validate(
                    at,
                    Proposal {
                        lon,
                        lat,
                        accuracy_m: None,
                    },
                    &mut budget,
                    now,
                    &rules(MovementMode::Input),
                    &areas,
                );
                at = ok.expect("legal bunched move refused").to;
            }
        }
    }

    #[test]
    fn sustained_speeding_and_teleports_are_refused() {
        let areas = AreaIndex::default();
        let t0 = Instant::now();
        let mut budget = Budget::full(10.0, t0);
        let mut at = START;
        let mut refused = None;
        for tick in 1..=100u64 {
            let now = t0 + Duration::from_millis(tick * 100);
            let (lon, lat) = east(at, 2.0); // 20 m/s
            match validate(
                at,
                Proposal {
                    lon,
                    lat,
                    accuracy_m: None,
                },
                &mut budget,
                now,
                &rules(MovementMode::Input),
                &areas,
            ) {
                Ok(ok) => at = ok.to,
                Err(reason) => {
                    refused = Some((tick, reason));
                    break;
                }
            }
        }
        let (tick, reason) = refused.expect("speeding never refused");
        assert_eq!(reason, CorrectionReason::TooFast);
        assert!(tick <= 40, "refused only after {tick} ticks");
        let mut budget = Budget::full(10.0, t0);
        let (lon, lat) = east(START, 5_000.0);
        assert_eq!(
            validate(
                START,
                Proposal {
                    lon,
                    lat,
                    accuracy_m: None
                },
                &mut budget,
                t0,
                &rules(MovementMode::Input),
                &areas
            ),
            Err(CorrectionReason::TooFast)
        );
        assert!(
            (budget.available_m() - 30.0).abs() < 1e-9,
            "refusal must not charge the budget"
        );
    }

    #[test]
    fn coordinates_bounds_and_blocked_areas_are_checked() {
        let blocked = square(
            AreaKind::Blocked,
            START.lon + 0.0002,
            START.lat,
            0.0001,
            serde_json::json!({}),
        );
        let areas = AreaIndex::new(&[blocked]);
        let t0 = Instant::now();
        let r = rules(MovementMode::Input);
        let mut budget = Budget::full(10.0, t0);
        let mut check = |lon, lat| {
            validate(
                START,
                Proposal {
                    lon,
                    lat,
                    accuracy_m: None,
                },
                &mut budget,
                t0,
                &r,
                &areas,
            )
        };
        assert_eq!(
            check(f64::NAN, 52.0),
            Err(CorrectionReason::InvalidCoordinates)
        );
        assert_eq!(
            check(4.8, f64::INFINITY),
            Err(CorrectionReason::InvalidCoordinates)
        );
        assert_eq!(check(4.8, 91.0), Err(CorrectionReason::InvalidCoordinates));
        assert_eq!(check(5.5, 52.37), Err(CorrectionReason::OutOfBounds));
        let (lon, lat) = east(START, 25.0);
        assert_eq!(check(lon, lat), Err(CorrectionReason::Blocked));
        let (lon, lat) = east(START, 5.0);
        assert!(check(lon, lat).is_ok());
    }

    #[test]
    fn speed_limit_areas_lower_the_limit() {
        let zone = square(
            AreaKind::SpeedLimit,
            START.lon,
            START.lat,
            0.01,
            serde_json::json!({"max_speed_mps": 2.0}),
        );
        let areas = AreaIndex::new(&[zone]);
        let t0 = Instant::now();
        let mut budget = Budget::full(2.0, t0);
        let r = rules(MovementMode::Input);
        // 3 m/s for ten seconds inside a 2 m/s zone drains the 6 m burst.
        let mut at = START;
        let mut refused = false;
        for s in 1..=10u64 {
            let (lon, lat) = east(at, 3.0);
            match validate(
                at,
                Proposal {
                    lon,
                    lat,
                    accuracy_m: None,
                },
                &mut budget,
                t0 + Duration::from_secs(s),
                &r,
                &areas,
            ) {
                Ok(ok) => at = ok.to,
                Err(reason) => {
                    assert_eq!(reason, CorrectionReason::TooFast);
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
    }

    #[test]
    fn gps_accuracy_widens_the_tolerance_and_speed_is_no_strike() {
        let areas = AreaIndex::default();
        let t0 = Instant::now();
        let (lon, lat) = east(START, 45.0);
        let mut budget = Budget::full(10.0, t0);
        assert!(validate(
            START,
            Proposal {
                lon,
                lat,
                accuracy_m: Some(20.0)
            },
            &mut budget,
            t0,
            &rules(MovementMode::Gps),
            &areas
        )
        .is_ok());
        let mut budget = Budget::full(10.0, t0);
        assert!(validate(
            START,
            Proposal {
                lon,
                lat,
                accuracy_m: Some(20.0)
            },
            &mut budget,
            t0,
            &rules(MovementMode::Input),
            &areas
        )
        .is_err());
        assert!(!is_strike(CorrectionReason::TooFast, MovementMode::Gps));
        assert!(is_strike(CorrectionReason::Blocked, MovementMode::Gps));
        assert!(is_strike(CorrectionReason::TooFast, MovementMode::Input));
    }

    #[test]
    fn moving_across_the_antimeridian_is_a_short_step() {
        let areas = AreaIndex::default();
        let t0 = Instant::now();
        let from = LonLat {
            lon: 179.99995,
            lat: 0.0,
        };
        let mut budget = Budget::full(10.0, t0);
        let r = Rules {
            bounds: Bounds::WORLD,
            ..rules(MovementMode::Input)
        };
        let ok = validate(
            from,
            Proposal {
                lon: 180.00005,
                lat: 0.0,
                accuracy_m: None,
            },
            &mut budget,
            t0,
            &r,
            &areas,
        )
        .unwrap();
        assert!((ok.to.lon - -179.99995).abs() < 1e-9);
        assert!(ok.distance_m < 12.0);
    }
}
