//! What the bots count while they run: cheap shared counters for everything
//! every bot sees, and latency histograms (in µs) merged from the probes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// The largest latency recorded, in µs; anything slower is clamped to it.
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// The wall clock in Unix µs: the clock `server_time_ms` is read off.
#[must_use]
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The wall clock in Unix ms.
#[must_use]
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// A histogram of µs with 3 significant figures.
#[must_use]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static bounds are valid")
}

/// Counters shared by all bots. Relaxed atomics: they are read as totals,
/// never to order anything.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bots that got their `Welcome`.
    pub connected: AtomicU64,
    /// Bots that never got a `Welcome`.
    pub failed: AtomicU64,
    /// Sockets that ended before the test did.
    pub disconnects: AtomicU64,
    /// `Kicked` messages.
    pub kicks: AtomicU64,
    /// `Correction` messages.
    pub corrections: AtomicU64,
    /// `Error` messages.
    pub errors: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// `Update` frames received.
    pub updates_in: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// `Move`s sent.
    pub moves_out: AtomicU64,
}

/// The counters at one moment, to take differences over the steady state.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterValues {
    pub connected: u64,
    pub failed: u64,
    pub disconnects: u64,
    pub kicks: u64,
    pub corrections: u64,
    pub errors: u64,
    pub frames_in: u64,
    pub updates_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub moves_out: u64,
}

impl CounterValues {
    /// Bots connected and not disconnected.
    #[must_use]
    pub fn present(&self) -> u64 {
        self.connected.saturating_sub(self.disconnects)
    }
}

/// Bot-seconds of presence over the steady state: the bots present,
/// integrated over time from samples of the counters. A rate per bot divides
/// by it, so that a bot that joined or left during the steady state (late,
/// from a ramp that fell behind) counts only for the time it was there.
#[derive(Debug, Clone, Copy)]
pub struct Presence {
    /// The last sample: seconds since the start, bots present.
    last: (f64, u64),
    bot_seconds: f64,
}

impl Presence {
    /// Start counting at second `at` with `present` bots.
    #[must_use]
    pub fn start(at: f64, present: u64) -> Self {
        Self {
            last: (at, present),
            bot_seconds: 0.0,
        }
    }

    /// `present` bots at second `at` (samples in order): the time since the
    /// last sample counts at the mean of the two.
    pub fn sample(&mut self, at: f64, present: u64) {
        let (t, before) = self.last;
        if at > t {
            self.bot_seconds += (at - t) * (before + present) as f64 / 2.0;
            self.last = (at, present);
        }
    }

    /// The bot-seconds so far.
    #[must_use]
    pub fn bot_seconds(&self) -> f64 {
        self.bot_seconds
    }
}

impl Counters {
    /// Add one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n`.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The values now.
    pub fn read(&self) -> CounterValues {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            connected: r(&self.connected),
            failed: r(&self.failed),
            disconnects: r(&self.disconnects),
            kicks: r(&self.kicks),
            corrections: r(&self.corrections),
            errors: r(&self.errors),
            frames_in: r(&self.frames_in),
            updates_in: r(&self.updates_in),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            moves_out: r(&self.moves_out),
        }
    }
}

/// Everything the bots share.
#[derive(Debug)]
pub struct Stats {
    /// The counters.
    pub counters: Counters,
    /// Move→ack latency of the probes during the steady state, merged as
    /// each probe ends (a std `Mutex`: taken once per probe, never across `.await`).
    pub move_ack: Mutex<Histogram<u64>>,
    /// Staleness of the probes' `Update`s during the steady state, merged
    /// like `move_ack`.
    pub staleness: Mutex<Histogram<u64>>,
    /// Connect (TCP + upgrade + `Welcome`) latency of every bot.
    pub connect: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            move_ack: Mutex::new(histogram()),
            staleness: Mutex::new(histogram()),
            connect: Mutex::new(histogram()),
        }
    }
}

impl Stats {
    /// Record one latency in µs into a shared histogram.
    pub fn record(histogram: &Mutex<Histogram<u64>>, us: u64) {
        let mut h = histogram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Merge a probe's histogram.
    pub fn merge(histogram: &Mutex<Histogram<u64>>, other: &Histogram<u64>) {
        let mut h = histogram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Same bounds everywhere, so adding cannot fail.
        let _ = h.add(other);
    }
}

#[cfg(test)]
mod tests {
    use super::Presence;

    #[test]
    fn presence_counts_each_bot_for_the_time_it_was_there() {
        // 100 bots throughout, and 100 more seen from second 6 of 10.
        let mut presence = Presence::start(0.0, 100);
        for second in 1..=10 {
            let present = if second > 5 { 200 } else { 100 };
            // Those seen first at a sample count half the interval before it.
            presence.sample(f64::from(second), present);
        }
        let expected = 100.0 * 10.0 + 100.0 * 4.5;
        assert!((presence.bot_seconds() - expected).abs() < 1e-9);
        // A sample out of order adds nothing.
        presence.sample(3.0, 1_000);
        assert!((presence.bot_seconds() - expected).abs() < 1e-9);
    }
}
