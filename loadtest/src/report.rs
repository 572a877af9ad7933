//! The outcome of a load test: a JSON-serializable `Report` and the table
//! printed for people.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::options::{BBox, EncodingArg};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// From a histogram of µs.
    #[must_use]
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// CPU and memory of a process during the steady state.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessStats {
    /// The process (`None` for the bots' own).
    pub pid: Option<u32>,
    /// CPU time over wall time, in percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Largest resident set seen, MiB.
    pub rss_mib_max: f64,
    /// Resident set at the end, MiB.
    pub rss_mib_last: f64,
}

/// One load test's results. Rates are per second of steady state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The game URLs.
    pub urls: Vec<String>,
    /// Bots started.
    pub bots: usize,
    /// Bots that decoded everything and measured latency.
    pub probes: usize,
    /// The wire encoding.
    pub encoding: EncodingArg,
    /// How tokens were obtained: `mint`, `login` or `token-free`.
    pub auth: &'static str,
    /// Seconds of ramp.
    pub ramp_s: f64,
    /// Seconds of steady state measured.
    pub duration_s: f64,
    /// Moves per second per bot.
    pub move_hz: f64,
    /// Where the bots walked.
    pub area: BBox,
    /// Bots that got their `Welcome`.
    pub connected: u64,
    /// Bots that never did.
    pub failed: u64,
    /// Bots that got a token (every bot with `--token-free`).
    pub tokens: u64,
    /// From starting to connect until `Welcome`.
    pub connect_ms: Latency,
    /// Token calls: one per minted batch, or one register+login per bot.
    pub login_ms: Latency,
    /// From sending `Move` seq N to the first `Update` with `ack_seq >= N`
    /// (probes, steady state).
    pub move_ack_ms: Latency,
    /// How old the world an `Update` shows is when a probe reads it: from
    /// the tick's `server_time_ms` to its arrival (probes, steady state). It
    /// reads both ends off the wall clock, so it holds on one host or with
    /// synchronized clocks; the server's whole milliseconds add up to 1 ms.
    pub staleness_ms: Latency,
    /// `Update`s per bot per second of the steady state, each bot counted
    /// for the time it was connected in it.
    pub updates_per_bot_per_s: f64,
    /// Frames received per second, all bots.
    pub frames_in_per_s: f64,
    /// WebSocket payload bytes received per second, all bots.
    pub bytes_in_per_s: f64,
    /// WebSocket payload bytes sent per second, all bots.
    pub bytes_out_per_s: f64,
    /// Moves sent per second, all bots.
    pub moves_per_s: f64,
    /// `Correction`s received (whole run; a legal walk gets none).
    pub corrections: u64,
    /// `Error` messages received (whole run).
    pub errors: u64,
    /// `Kicked` messages received (whole run).
    pub kicks: u64,
    /// Sockets that ended before the test did.
    pub disconnects: u64,
    /// (failed + errors + disconnects) / bots.
    pub error_rate: f64,
    /// The threshold it was held to.
    pub max_error_rate: f64,
    /// Whether the error rate stayed within it.
    pub passed: bool,
    /// The server process, when it could be sampled.
    pub server: Option<ProcessStats>,
    /// The load test's own process.
    pub bots_process: Option<ProcessStats>,
    /// The flag rush's captures and their check, when one ran.
    pub flag_rush: Option<crate::rush::RushReport>,
    /// The flooders' sessions and what they were told, when there were any.
    pub flood: Option<crate::flood::FloodReport>,
}

impl Report {
    /// A plain-text table for a terminal.
    #[must_use]
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "{k:<26} {v}");
        };
        let lat = |l: &Latency| {
            format!(
                "p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1} ms  (n={})",
                l.p50, l.p95, l.p99, l.max, l.count
            )
        };
        let proc = |p: &Option<ProcessStats>| match p {
            Some(p) => format!(
                "CPU {:.0}%  RSS {:.0} MiB (max {:.0}){}",
                p.cpu_percent,
                p.rss_mib_last,
                p.rss_mib_max,
                p.pid.map_or(String::new(), |pid| format!("  pid {pid}"))
            ),
            None => "not sampled".into(),
        };
        row(
            "bots",
            format!(
                "{} ({} probes, {:?}, {} auth, {} moves/s each)",
                self.bots, self.probes, self.encoding, self.auth, self.move_hz
            ),
        );
        row(
            "run",
            format!(
                "ramp {:.0} s + steady {:.0} s",
                self.ramp_s, self.duration_s
            ),
        );
        row("tokens", format!("{} of {}", self.tokens, self.bots));
        row(
            "connected / failed",
            format!("{} / {}", self.connected, self.failed),
        );
        row("connect", lat(&self.connect_ms));
        row("login / mint", lat(&self.login_ms));
        row("move→ack", lat(&self.move_ack_ms));
        row("update staleness", lat(&self.staleness_ms));
        row(
            "updates/s per bot",
            format!("{:.2}", self.updates_per_bot_per_s),
        );
        row(
            "frames in /s",
            format!(
                "{:.0}  (moves out {:.0}/s)",
                self.frames_in_per_s, self.moves_per_s
            ),
        );
        row(
            "bytes in / out per s",
            format!(
                "{:.2} MB / {:.2} MB",
                self.bytes_in_per_s / 1e6,
                self.bytes_out_per_s / 1e6
            ),
        );
        row(
            "corrections / errors",
            format!("{} / {}", self.corrections, self.errors),
        );
        row(
            "disconnects / kicks",
            format!("{} / {}", self.disconnects, self.kicks),
        );
        row(
            "error rate",
            format!(
                "{:.3}% (max {:.3}%) {}",
                self.error_rate * 100.0,
                self.max_error_rate * 100.0,
                if self.passed { "ok" } else { "FAILED" }
            ),
        );
        row("server", proc(&self.server));
        row("bots", proc(&self.bots_process));
        if let Some(r) = &self.flag_rush {
            row(
                "flag rush",
                format!(
                    "{} flags, {:.0} s rounds: {} captures ({:.2}/s)",
                    r.flags, r.round_s, r.captures, r.captures_per_s
                ),
            );
            row(
                "captures checked",
                format!(
                    "{} probes: {} duplicate, {} lost, {} phantom {}",
                    r.probes_checked,
                    r.duplicates,
                    r.lost,
                    r.phantom,
                    if r.passed { "ok" } else { "FAILED" }
                ),
            );
        }
        if let Some(f) = &self.flood {
            row(
                "flood",
                format!(
                    "{} flooders at {:.0} moves/s: {} sessions, {} throttled, {} kicked, {} failed joins {}",
                    f.flooders,
                    f.hz,
                    f.sessions,
                    f.rate_limited,
                    f.kicked,
                    f.failed,
                    if f.passed { "ok" } else { "FAILED" }
                ),
            );
        }
        t
    }
}
