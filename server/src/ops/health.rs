//! `/healthz` (the process answers) and `/readyz` (the shard can do its job:
//! the database answers and positions are being flushed).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::OpsState;

/// How long the database may take to answer the readiness ping. A database
/// that is down can otherwise hold the check for the pool's whole acquire
/// timeout, and an orchestrator's probe gives up long before that.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database check failed");
            "unreachable".to_owned()
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer in time");
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
