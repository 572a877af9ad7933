//! The tick's Prometheus instruments: tick and step durations, overruns, and
//! moves accepted and refused by reason, labelled with the world.
//!
//! The handles are registered once, when the world is built, so that the
//! tick only adds to atomics (no name lookups, no allocation, no I/O); with
//! no recorder installed they do nothing at all.

use meridian_protocol::CorrectionReason;
use metrics::{counter, histogram, Counter, Histogram};

use super::snapshot::TickTimings;

/// Every refusal reason, in the order of `TickMeters::refused`.
const REASONS: [CorrectionReason; 4] = [
    CorrectionReason::InvalidCoordinates,
    CorrectionReason::TooFast,
    CorrectionReason::Blocked,
    CorrectionReason::OutOfBounds,
];

/// The tick's steps as they are labelled, in the order of `TickTimings`.
pub const STEPS: [&str; 6] = [
    "commands", "movement", "sessions", "publish", "persist", "flags",
];

/// One world's instruments.
pub struct TickMeters {
    /// `meridian_tick_duration_seconds`: whole ticks.
    tick: Histogram,
    /// `meridian_tick_step_duration_seconds{step}`, in the order of `STEPS`.
    steps: [Histogram; 6],
    /// `meridian_tick_lateness_seconds`: how long after it was due each tick
    /// started.
    late: Histogram,
    /// `meridian_tick_overruns_total`: ticks longer than the tick period.
    overruns: Counter,
    /// `meridian_moves_accepted_total`.
    pub accepted: Counter,
    /// `meridian_moves_refused_total{reason}`, in the order of `REASONS`.
    refused: [Counter; 4],
}

impl TickMeters {
    /// Register the instruments of the world named `world`.
    #[must_use]
    pub fn new(world: &str) -> Self {
        let world = world.to_owned();
        let step = |name: &'static str| histogram!("meridian_tick_step_duration_seconds", "world" => world.clone(), "step" => name);
        let refused = |reason: CorrectionReason| counter!("meridian_moves_refused_total", "world" => world.clone(), "reason" => reason.as_str());
        Self {
            tick: histogram!("meridian_tick_duration_seconds", "world" => world.clone()),
            steps: STEPS.map(step),
            late: histogram!("meridian_tick_lateness_seconds", "world" => world.clone()),
            overruns: counter!("meridian_tick_overruns_total", "world" => world.clone()),
            accepted: counter!("meridian_moves_accepted_total", "world" => world.clone()),
            refused: REASONS.map(refused),
        }
    }

    /// Record one tick's durations; `overran` if it took longer than its period.
    pub fn record(&self, timings: &TickTimings, overran: bool) {
        let seconds = |us: u32| f64::from(us) / 1e6;
        self.tick.record(seconds(timings.total_us));
        let steps = [
            timings.commands_us,
            timings.movement_us,
            timings.sessions_us,
            timings.publish_us,
            timings.persist_us,
            timings.flags_us,
        ];
        for (histogram, us) in self.steps.iter().zip(steps) {
            histogram.record(seconds(us));
        }
        if overran {
            self.overruns.increment(1);
        }
    }

    /// Record how late a tick started.
    pub fn late(&self, late: std::time::Duration) {
        self.late.record(late.as_secs_f64());
    }

    /// Count a refused move.
    pub fn refused(&self, reason: CorrectionReason) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.refused[i].increment(1);
    }
}
