//! The admin API's moderation: kick a player off whichever shard holds them,
//! and broadcast an operator's message to every player of a world (or of all
//! worlds). Both travel as control events, so they reach every shard.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::admin::{world, Admin, AdminError};
use super::OpsState;
use crate::bus::ControlEvent;
use crate::world::chat::clean;

/// The longest broadcast, in characters: the players' chat limit.
pub const MAX_BROADCAST_CHARS: usize = meridian_protocol::limits::MAX_CHAT_CHARS;

/// `POST /admin/kick` body: the account, by id or by username.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KickRequest {
    user_id: Option<Uuid>,
    username: Option<String>,
}

/// `POST /admin/kick`: the player gets `Kicked { admin }` and close 4007 on
/// whichever shard holds them. 202: the kick is on its way to every shard.
pub(super) async fn kick(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<KickRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let Json(request) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let user_id = match (request.user_id, request.username) {
        (Some(id), None) => id,
        (None, Some(name)) => {
            state
                .store
                .user_by_name(&name)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no account named {name:?}")))?
                .id
        }
        _ => {
            return Err(AdminError::Invalid(
                "send exactly one of user_id and username".into(),
            ))
        }
    };
    state.control.send_control(ControlEvent::Kick { user_id });
    tracing::info!(user = %user_id, "player kicked by an operator");
    Ok((StatusCode::ACCEPTED, Json(json!({ "kicked": user_id }))))
}

/// `POST /admin/broadcast` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BroadcastRequest {
    /// What to say.
    text: String,
    /// Only this world's players; every world's if absent.
    world: Option<String>,
}

/// `POST /admin/broadcast`: every player of the world, on every shard, gets
/// a `ChatMessage` on the `world` channel from the nil account, named
/// `operator`. 202.
pub(super) async fn broadcast(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<BroadcastRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let Json(request) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let text = clean(&request.text);
    if text.is_empty() || text.chars().count() > MAX_BROADCAST_CHARS {
        return Err(AdminError::Invalid(format!(
            "text must be 1 to {MAX_BROADCAST_CHARS} characters"
        )));
    }
    let world_id = match request.world {
        Some(name) => Some(world(&state, Some(name)).await?.id),
        None => None,
    };
    state
        .control
        .send_control(ControlEvent::Broadcast { world_id, text });
    tracing::info!(world = ?world_id, "operator broadcast sent");
    Ok((StatusCode::ACCEPTED, Json(json!({ "sent": true }))))
}
