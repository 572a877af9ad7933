//! `/metrics`: the shard's figures in the Prometheus text exposition format.
//!
//! Events are counted where they happen, through the `metrics` facade (the
//! tick's moves and durations, bytes on the sockets, logins, flushes,
//! outbound drops); figures that are states rather than events (players,
//! pending positions, the bus's counters and lag, memory) are read from
//! their owners when Prometheus scrapes, so that nothing on a hot path keeps
//! them up to date.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::OpsState;

/// Histogram buckets of every `_seconds` metric: from 50 µs (a quiet tick)
/// to 10 s (a flush against a struggling database).
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How often histograms are folded into their buckets when nobody scrapes,
/// so that samples do not pile up.
pub const UPKEEP: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's metrics recorder, installed on first use. Every shard in a
/// process (tests run several) shares it.
///
/// # Panics
/// If another global `metrics` recorder was installed first.
pub fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .inspect(|_| describe())
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "meridian_players",
        "Players in a world: this shard's (local) and other shards' shown here (ghost)"
    );
    describe_gauge!(
        "meridian_connections",
        "Open game WebSockets, joined or not yet"
    );
    describe_histogram!(
        "meridian_tick_duration_seconds",
        Unit::Seconds,
        "Duration of whole ticks"
    );
    describe_histogram!(
        "meridian_tick_step_duration_seconds",
        Unit::Seconds,
        "Duration of each step of the tick"
    );
    describe_histogram!(
        "meridian_tick_lateness_seconds",
        Unit::Seconds,
        "How long after it was due each tick started"
    );
    describe_counter!(
        "meridian_tick_overruns_total",
        "Ticks that took longer than the tick period"
    );
    describe_counter!(
        "meridian_moves_accepted_total",
        "Moves validated and applied"
    );
    describe_counter!(
        "meridian_moves_refused_total",
        "Moves refused with a Correction, by reason"
    );
    describe_counter!(
        "meridian_outbound_drops_total",
        "Connections dropped as too slow: outbox full, or a write blocked past the timeout"
    );
    describe_counter!(
        "meridian_bytes_total",
        Unit::Bytes,
        "WebSocket payload bytes, in from clients and out to them"
    );
    describe_counter!(
        "meridian_login_attempts_total",
        "Requests to the token-issuing account routes, by outcome"
    );
    describe_histogram!(
        "meridian_flush_duration_seconds",
        Unit::Seconds,
        "Duration of position flushes to the store"
    );
    describe_counter!(
        "meridian_flushed_positions_total",
        "Positions written by the flusher"
    );
    describe_counter!(
        "meridian_flush_failures_total",
        "Position flushes that failed (positions kept for retry)"
    );
    describe_gauge!(
        "meridian_flush_pending_positions",
        "Positions waiting for the next flush"
    );
    describe_gauge!(
        "meridian_flush_lag_seconds",
        "Time since the last successful flush"
    );
    describe_gauge!(
        "meridian_flush_failing",
        "1 while the last flush attempt failed"
    );
    describe_counter!(
        "meridian_bus_messages_total",
        "Messages between shards through Redis, by channel and direction"
    );
    describe_gauge!(
        "meridian_bus_lag_seconds",
        "Age of the last player batch from another shard when it arrived"
    );
    describe_gauge!(
        "meridian_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the shard process"
    );
}

/// Fold histogram samples into buckets every `UPKEEP` until `stop`.
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP);
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// The resident set size of this process, from `/proc` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Bring the state-like figures up to date.
fn refresh(state: &OpsState) {
    gauge!("meridian_uptime_seconds").set(state.shard.started.elapsed().as_secs_f64());
    gauge!("meridian_build_info", "version" => env!("CARGO_PKG_VERSION"), "shard" => state.shard.shard_id.clone())
        .set(1.0);
    for world in &state.worlds {
        let snapshot = world.snapshots.borrow().clone();
        let name = world.name.clone();
        gauge!("meridian_players", "world" => name.clone(), "kind" => "local")
            .set(snapshot.population() as f64);
        gauge!("meridian_players", "world" => name.clone(), "kind" => "ghost")
            .set(snapshot.ghosts as f64);
        gauge!("meridian_tick", "world" => name).set(snapshot.tick as f64);
    }
    gauge!("meridian_flush_pending_positions").set(state.pending.len() as f64);
    gauge!("meridian_flush_failing").set(if state.pending.is_failing() { 1.0 } else { 0.0 });
    let since = state
        .pending
        .flushed_at_ms()
        .map_or(state.shard.started.elapsed().as_secs_f64(), |at| {
            (crate::store::now_ms() - at).max(0) as f64 / 1000.0
        });
    gauge!("meridian_flush_lag_seconds").set(since);
    if let Some(sync) = &state.sync {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter!("meridian_bus_messages_total", "channel" => "players", "direction" => "out")
            .absolute(get(&sync.published));
        counter!("meridian_bus_messages_total", "channel" => "players", "direction" => "in")
            .absolute(get(&sync.received));
        counter!("meridian_bus_rejected_total").absolute(get(&sync.rejected));
        counter!("meridian_bus_dropped_total").absolute(get(&sync.dropped));
        counter!("meridian_bus_connects_total").absolute(get(&sync.connects));
        gauge!("meridian_bus_cells_subscribed").set(get(&sync.cells) as f64);
        gauge!("meridian_bus_lag_seconds").set(get(&sync.lag_ms) as f64 / 1000.0);
    }
    if let Some(bus) = &state.bus {
        let stats = bus.stats();
        counter!("meridian_bus_messages_total", "channel" => "control", "direction" => "out")
            .absolute(stats.sent);
        counter!("meridian_bus_messages_total", "channel" => "control", "direction" => "in")
            .absolute(stats.received);
        counter!("meridian_bus_control_dropped_total").absolute(stats.dropped);
    }
    if let Some(bytes) = resident_bytes() {
        gauge!("meridian_process_resident_memory_bytes").set(bytes as f64);
    }
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    refresh(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
