//! The tick's clock: when each tick is due, and how late it started.
//!
//! The tick runs on a thread of its own, not as a task of the async runtime.
//! As a task, a due tick waited behind whatever the runtime's workers were
//! running: at 4,000 players, thousands of reader tasks and the fan-out's
//! rounds. Measured there, ticks started 0.7–0.9 ms late at the median but 14–35 ms
//! late at the 99th percentile (50 ms at worst), and every move waiting for
//! that tick waited as long again. A thread that sleeps until its deadline is
//! woken by the kernel, which lets a thread that mostly sleeps run at once.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A tick this much late is not caught up: the next one is due a full period
/// after it started, so a stalled machine gets fewer ticks, not a burst of
/// them (what `tokio::time::MissedTickBehavior::Delay` did for the task).
const CATCH_UP_LIMIT: Duration = Duration::from_millis(5);

/// Paces one world's ticks.
#[derive(Debug)]
pub struct Pacer {
    /// Time between ticks.
    period: Duration,
    /// When the next tick is due.
    due: Instant,
}

impl Pacer {
    /// A pacer whose first tick is due now.
    #[must_use]
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            due: Instant::now(),
        }
    }

    /// Sleep until the next tick is due and return when it started and how
    /// late that was; `None` once `shutdown` is cancelled (noticed within
    /// one period).
    pub fn wait(&mut self, shutdown: &CancellationToken) -> Option<(Instant, Duration)> {
        if shutdown.is_cancelled() {
            return None;
        }
        if let Some(left) = self.due.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        if shutdown.is_cancelled() {
            return None;
        }
        let now = Instant::now();
        let late = now.saturating_duration_since(self.due);
        self.due = if late > CATCH_UP_LIMIT {
            now + self.period
        } else {
            self.due + self.period
        };
        Some((now, late))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_come_one_period_apart() {
        let period = Duration::from_millis(20);
        let mut pacer = Pacer::new(period);
        let stop = CancellationToken::new();
        let (first, _) = pacer.wait(&stop).expect("first tick");
        let (second, late) = pacer.wait(&stop).expect("second tick");
        assert!(second.duration_since(first) >= period);
        assert!(late < Duration::from_secs(1));
    }

    #[test]
    fn a_late_tick_is_not_caught_up() {
        let period = Duration::from_millis(10);
        let mut pacer = Pacer::new(period);
        let stop = CancellationToken::new();
        pacer.wait(&stop).expect("first tick");
        // The tick's work took three periods.
        std::thread::sleep(3 * period);
        let (late_start, late) = pacer.wait(&stop).expect("late tick");
        assert!(late >= 2 * period, "late by {late:?}");
        let (next, _) = pacer.wait(&stop).expect("next tick");
        assert!(
            next.duration_since(late_start) >= period,
            "the tick after a late one still waits a full period"
        );
    }

    #[test]
    fn cancelling_ends_the_wait() {
        let mut pacer = Pacer::new(Duration::from_millis(10));
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(pacer.wait(&stop).is_none());
    }
}
