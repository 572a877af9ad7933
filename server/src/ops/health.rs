//! `/healthz` (the process answers) and `/readyz` (the shard can do its job:
//! the database answers, positions are being flushed, and Redis answers when
//! the shard is configured with one).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::OpsState;
use crate::store::database::{MigrationInfo, MigrationState};

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
    // A database that answers may still lack this binary's schema (a shard
    // started with NO_MIGRATE before the migration job ran).
    let migrations = if database == "ok" {
        match tokio::time::timeout(PING_TIMEOUT, state.database.info()).await {
            Ok(Ok(lines)) => migration_state(&lines),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness: cannot read the applied migrations");
                "unreadable"
            }
            Err(_) => "unreadable",
        }
    } else {
        "unknown"
    };
    let flush = if state.pending.is_failing() {
        "failing"
    } else {
        "ok"
    };
    // With Redis configured, a shard that cannot reach it still serves its
    // own players, but no longer shows them the other shards' nor takes part
    // in one login per account: new players belong on another shard.
    let redis = match &state.bus {
        None => None,
        Some(bus) => Some(match tokio::time::timeout(PING_TIMEOUT, bus.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness: Redis check failed");
                "unreachable"
            }
            Err(_) => {
                tracing::warn!("readiness: Redis did not answer in time");
                "unreachable"
            }
        }),
    };
    let ready =
        database == "ok" && migrations == "ok" && flush == "ok" && redis.is_none_or(|r| r == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut checks = json!({ "database": database, "migrations": migrations, "flush": flush });
    if let Some(redis) = redis {
        checks["redis"] = redis.into();
    }
    let body = json!({
        "ready": ready,
        "checks": checks,
        "pending_positions": state.pending.len(),
    });
    (status, Json(body))
}

/// `ok` when every migration of this binary is applied unchanged (newer ones,
/// from a newer binary during a rolling upgrade, are fine); else `pending`
/// or `edited`.
fn migration_state(lines: &[MigrationInfo]) -> &'static str {
    if lines.iter().any(|l| l.state == MigrationState::Edited) {
        "edited"
    } else if lines.iter().any(|l| l.state == MigrationState::Pending) {
        "pending"
    } else {
        "ok"
    }
}
