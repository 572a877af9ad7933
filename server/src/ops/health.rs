//! `/healthz` (the process answers) and `/readyz` (the shard can do its job:
//! the database answers and positions are being flushed).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::{PendingPositions, Store};

/// What the health endpoints look at.
#[derive(Clone)]
pub struct OpsState {
    /// The store, pinged by `/readyz`.
    pub store: Arc<dyn Store>,
    /// The flusher's hand-off, whose failure flag `/readyz` reports.
    pub pending: Arc<PendingPositions>,
}

/// The ops routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database check failed");
            "unreachable".to_owned()
        }
    };
    let flush = if state.pending.is_failing() {
        "failing"
    } else {
        "ok"
    };
    let ready = database == "ok" && flush == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "checks": { "database": database, "flush": flush },
        "pending_positions": state.pending.len(),
    });
    (status, Json(body))
}
