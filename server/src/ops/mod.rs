//! The ops port: liveness and readiness for orchestrators, Prometheus
//! metrics, the shard's status, where players are, and the admin API.
//! Private by default (`OPS_ADDR` is loopback).

mod admin;
mod areas;
mod bots;
mod flags;
mod health;
pub mod metrics;
mod moderation;
mod players;
mod shards;
mod status;

pub use status::ShardInfo;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::store::{PendingPositions, Store};

/// What the ops endpoints work with.
#[derive(Clone)]
pub struct OpsState {
    /// The store, pinged by `/readyz` and used to place bots.
    pub store: Arc<dyn Store>,
    /// The flusher's hand-off, whose failure flag `/readyz` reports.
    pub pending: Arc<PendingPositions>,
    /// Opens sessions for bot accounts.
    pub auth: Arc<Auth>,
    /// The admin API's bearer token (`OPS_TOKEN`); `None` disables the admin API.
    pub ops_token: Option<Arc<str>>,
    /// The world bots are placed in when a request names none.
    pub default_world: String,
    /// The running worlds, whose snapshots `/api/status` reads.
    pub worlds: Vec<crate::world::WorldHandle>,
    /// Facts about the shard for `/api/status`.
    pub shard: ShardInfo,
    /// The player sync's counters, with Redis.
    pub sync: Option<Arc<crate::bus::cells::CellStats>>,
    /// The Redis bus, whose presence records `/api/shards` lists.
    pub bus: Option<Arc<crate::bus::RedisBus>>,
    /// Where control events (area changes, kicks, broadcasts) go to every
    /// shard: the Redis bus, or the in-process one.
    pub control: Arc<dyn Bus>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The database, whose migrations `/readyz` compares with the binary's.
    pub database: Arc<crate::store::Database>,
}

/// The ops routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/dashboard", get(crate::pages::dashboard))
        .route("/api/status", get(status::status))
        .route("/api/shards", get(shards::shards))
        .route("/api/players", get(players::players))
        .route("/api/nearby", get(players::nearby))
        .route("/admin/bots", post(bots::mint))
        .route("/admin/areas", get(areas::list).post(areas::create))
        .route(
            "/admin/areas/{id}",
            get(areas::get).put(areas::replace).delete(areas::delete),
        )
        .route("/admin/flags", get(flags::list).post(flags::create))
        .route(
            "/admin/flags/{id}",
            get(flags::get).put(flags::replace).delete(flags::delete),
        )
        .route("/admin/scores/reset", post(flags::reset_scores))
        .route("/admin/captures", get(flags::captures))
        .route("/admin/kick", post(moderation::kick))
        .route("/admin/broadcast", post(moderation::broadcast))
        .with_state(state)
}
