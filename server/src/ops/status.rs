//! `/api/status`: what this shard is and how its worlds' ticks are doing, as
//! JSON for dashboards and the benchmark script. Never includes secrets.

use std::time::Instant;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::OpsState;

/// Facts about the shard fixed at startup.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    /// `SHARD_ID`.
    pub shard_id: String,
    /// When the shard started.
    pub started: Instant,
    /// The non-secret part of the configuration.
    pub config: serde_json::Value,
    /// The bound game address (the configured one until bound).
    pub game_addr: String,
    /// The bound ops address.
    pub ops_addr: String,
    /// `AOI_RADIUS_M`, the largest capture radius a flag may have.
    pub aoi_radius_m: f64,
}

impl ShardInfo {
    /// The shard's facts from its configuration (secrets left out).
    #[must_use]
    pub fn new(config: &crate::Config) -> Self {
        Self {
            shard_id: config.shard_id.clone(),
            started: Instant::now(),
            config: json!({
                "game_addr": config.game_addr.to_string(),
                "ops_addr": config.ops_addr.to_string(),
                "tick_hz": config.tick_hz,
                "flush_interval_ms": config.flush_interval.as_millis() as u64,
                "aoi_radius_m": config.aoi_radius_m,
                "aoi_max": config.aoi_max,
                "chat_radius_m": config.chat_radius_m,
                "max_speed_mps": config.max_speed_mps,
                "resume_grace_ms": config.resume_grace.as_millis() as u64,
                "idle_timeout_ms": config.idle_timeout.as_millis() as u64,
                "client_msg_rate": config.client_msg_rate,
                "login_rate_per_min": config.login_rate_per_min,
            }),
            game_addr: config.game_addr.to_string(),
            ops_addr: config.ops_addr.to_string(),
            aoi_radius_m: config.aoi_radius_m,
        }
    }
}

pub(super) async fn status(State(state): State<OpsState>) -> impl IntoResponse {
    let worlds: Vec<serde_json::Value> = state
        .worlds
        .iter()
        .map(|world| {
            let snapshot = world.snapshots.borrow().clone();
            let t = snapshot.timings;
            let s = snapshot.stats;
            json!({
                "name": world.name,
                "players": snapshot.population(),
                "ghosts": snapshot.ghosts,
                "tick": snapshot.tick,
                "tick_us": {
                    "p50": s.p50_us,
                    "p99": s.p99_us,
                    "max": s.max_us,
                    "recent_p99": s.recent_p99_us,
                    "last": t.total_us,
                },
                "last_tick_steps_us": {
                    "commands": t.commands_us,
                    "movement": t.movement_us,
                    "sessions": t.sessions_us,
                    "publish": t.publish_us,
                    "persist": t.persist_us,
                    "flags": t.flags_us,
                },
                "overruns": snapshot.overruns,
                "teams": snapshot.board.teams,
                "flags": snapshot.board.flags.iter().map(|f| json!({
                    "id": f.id,
                    "name": f.name,
                    "owner": f.owner,
                    "capturable": f.capturable,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "shard_id": state.shard.shard_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.shard.started.elapsed().as_secs(),
        "config": state.shard.config,
        "pending_positions": state.pending.len(),
        "flush_failing": state.pending.is_failing(),
        "worlds": worlds,
        "sync": state.sync.as_ref().map(|stats| stats.to_json()),
    }))
}
