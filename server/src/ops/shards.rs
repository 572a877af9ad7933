//! `/api/shards`: every live shard of the deployment, from their presence
//! records in Redis, or this shard alone when it has no Redis.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::OpsState;
use crate::bus::ShardRecord;
use crate::store::now_ms;

pub(super) async fn shards(State(state): State<OpsState>) -> impl IntoResponse {
    let Some(bus) = &state.bus else {
        let players: usize = state
            .worlds
            .iter()
            .map(|w| w.snapshots.borrow().population())
            .sum();
        let alone = ShardRecord {
            shard_id: state.shard.shard_id.clone(),
            game_addr: state.shard.game_addr.clone(),
            ops_addr: state.shard.ops_addr.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at_ms: now_ms() - state.shard.started.elapsed().as_millis() as i64,
            players: players as u64,
            heartbeat_ms: now_ms(),
        };
        return (StatusCode::OK, Json(json!({ "shards": [alone] })));
    };
    match bus.shards().await {
        Ok(shards) => (StatusCode::OK, Json(json!({ "shards": shards }))),
        Err(err) => {
            tracing::warn!(error = %err, "cannot list shards");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "unavailable", "message": "Redis does not answer" })),
            )
        }
    }
}
