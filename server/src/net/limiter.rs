//! Per-connection limits on what a client sends: a message rate (token bucket)
//! and a budget of refused frames after which the client is disconnected.

use std::time::{Duration, Instant};

/// Refused frames (malformed, unknown, over the rate…) tolerated per window.
pub const MAX_REFUSED: u32 = 20;

/// The window over which refused frames are counted.
pub const REFUSED_WINDOW: Duration = Duration::from_secs(10);

/// One connection's limiter.
#[derive(Debug)]
pub struct Limiter {
    /// Messages per second.
    rate: f64,
    /// Bucket size: a short burst of twice the rate is fine.
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    refused: u32,
    window_start: Instant,
}

impl Limiter {
    /// A limiter allowing `rate` messages per second.
    #[must_use]
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            refilled_at: now,
            refused: 0,
            window_start: now,
        }
    }

    /// Whether one more message is allowed now.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Count a refused frame; returns true once the client has used up its budget.
    pub fn refuse(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) > REFUSED_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        self.refused > MAX_REFUSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_rate_with_a_burst_and_refuses_a_flood() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(10, t0);
        let allowed = (0..100).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, 20);
        assert!(limiter.allow(t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(t0 + Duration::from_millis(100)));
        // A steady 10/s for 10 s is always allowed.
        let mut limiter = Limiter::new(10, t0);
        assert!((1..=100).all(|i| limiter.allow(t0 + Duration::from_millis(i * 100))));
    }

    #[test]
    fn too_many_refusals_in_a_window_disconnect() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(10, t0);
        assert!((0..MAX_REFUSED).all(|_| !limiter.refuse(t0)));
        assert!(limiter.refuse(t0));
        // A fresh window forgives.
        let mut limiter = Limiter::new(10, t0);
        for _ in 0..MAX_REFUSED {
            limiter.refuse(t0);
        }
        assert!(!limiter.refuse(t0 + REFUSED_WINDOW + Duration::from_millis(1)));
    }
}
