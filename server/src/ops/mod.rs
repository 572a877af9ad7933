//! The ops port: liveness and readiness for orchestrators, the shard's status,
//! and the admin API.
//! Private by default (`OPS_ADDR` is loopback).

mod bots;
mod health;
mod shards;
mod status;

pub use status::ShardInfo;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::auth::Auth;
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
}

/// The ops routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/status", get(status::status))
        .route("/api/shards", get(shards::shards))
        .route("/admin/bots", post(bots::mint))
        .with_state(state)
}
