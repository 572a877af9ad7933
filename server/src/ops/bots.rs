//! `POST /admin/bots`: access tokens for load-test bots without password
//! logins, optionally placing the bots at random legal points of a box, and
//! the boxes bots must keep out of to walk without corrections.
//!
//! Request: `Authorization: Bearer <OPS_TOKEN or an admin's access token>` and
//! `{"count": N, "prefix": "bot", "first": 0, "world": "demo", "within": [min_lon, min_lat, max_lon, max_lat]}`
//! (all but `count` optional). Answer: `{"world", "tokens": [{"user_id", "token", "team"}], "obstacles":
//! [{"kind", "bbox", "max_speed_mps"}]}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use geo::BoundingRect;
use meridian_protocol::{AreaKind, LonLat};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::admin::{is_box, world, Admin, AdminError};
use super::OpsState;
use crate::store::{now_ms, Area, StoredPosition, WorldDef};

/// The most bots one call creates: enough for any single shard, small enough
/// that one call cannot tie up the store for long.
pub const MAX_BOTS_PER_CALL: usize = 20_000;

/// Random points tried per bot before it is left to spawn normally.
const PLACEMENT_TRIES: usize = 64;

/// Positions written per store call.
const PLACEMENT_BATCH: usize = 1_000;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BotsRequest {
    /// How many bots, at most `MAX_BOTS_PER_CALL`; 0 just returns the obstacles.
    count: usize,
    /// Bots are named `<prefix>-<i>`.
    #[serde(default = "default_prefix")]
    prefix: String,
    /// The number of the first bot, so that calls in batches name bots on.
    #[serde(default)]
    first: usize,
    /// The world to place bots in and describe; the shard's default world if absent.
    world: Option<String>,
    /// Place each bot at a random legal point of this box
    /// (`[min_lon, min_lat, max_lon, max_lat]`) instead of where it last was.
    within: Option<[f64; 4]>,
}

fn default_prefix() -> String {
    "bot".into()
}

/// One bot's credentials.
#[derive(Debug, Serialize)]
pub(super) struct BotToken {
    user_id: Uuid,
    token: String,
    /// The bot's team, so a swarm can send teams different ways (flag rush).
    team: Option<String>,
}

/// A box a bot must not walk into: a blocked area, or an area with a lower
/// speed limit, as the bounding box of its shape.
#[derive(Debug, Serialize)]
pub(super) struct Obstacle {
    kind: AreaKind,
    /// `[min_lon, min_lat, max_lon, max_lat]`.
    bbox: [f64; 4],
    /// The limit inside a `speed_limit` area.
    max_speed_mps: Option<f64>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub(super) struct BotsResponse {
    world: String,
    tokens: Vec<BotToken>,
    obstacles: Vec<Obstacle>,
}

/// `POST /admin/bots`.
pub(super) async fn mint(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<BotsRequest>, JsonRejection>,
) -> Result<Json<BotsResponse>, AdminError> {
    let Json(request) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    if request.count > MAX_BOTS_PER_CALL {
        return Err(AdminError::Invalid(format!(
            "count must be at most {MAX_BOTS_PER_CALL}"
        )));
    }
    if request.first > usize::MAX / 2 {
        return Err(AdminError::Invalid("first is too large".into()));
    }
    if let Some(within) = request.within {
        if !is_box(within) {
            return Err(AdminError::Invalid(
                "within must be [min_lon, min_lat, max_lon, max_lat] with min < max".into(),
            ));
        }
    }
    let world = world(&state, request.world).await?;
    let areas = state.store.areas(world.id).await?;
    let obstacles = obstacles(&areas);

    let grants = state
        .auth
        .bot_sessions(&request.prefix, request.first, request.count)
        .await?;
    if let Some(within) = request.within {
        place(&state, &world, &obstacles, within, &grants).await?;
    }
    tracing::info!(
        count = grants.len(),
        world = %world.name,
        placed = request.within.is_some(),
        "bot sessions opened"
    );
    let mut tokens = Vec::with_capacity(grants.len());
    for grant in grants {
        let team = state
            .store
            .profile(grant.user_id)
            .await?
            .and_then(|p| p.team);
        tokens.push(BotToken {
            user_id: grant.user_id,
            token: grant.token,
            team,
        });
    }
    Ok(Json(BotsResponse {
        world: world.name,
        tokens,
        obstacles,
    }))
}

/// The boxes of the areas that refuse or slow movement.
fn obstacles(areas: &[Area]) -> Vec<Obstacle> {
    areas
        .iter()
        .filter(|a| matches!(a.kind, AreaKind::Blocked | AreaKind::SpeedLimit))
        .filter_map(|a| {
            let rect = a.geometry.bounding_rect()?;
            Some(Obstacle {
                kind: a.kind,
                bbox: [rect.min().x, rect.min().y, rect.max().x, rect.max().y],
                max_speed_mps: a.properties.get("max_speed_mps").and_then(|v| v.as_f64()),
            })
        })
        .collect()
}

/// Store a random legal position inside `within` for each bot, under a fresh
/// epoch so that it wins over wherever the bot was left last time.
async fn place(
    state: &OpsState,
    world: &WorldDef,
    obstacles: &[Obstacle],
    within: [f64; 4],
    grants: &[crate::auth::Grant],
) -> Result<(), AdminError> {
    let inside =
        |p: LonLat, b: &[f64; 4]| p.lon >= b[0] && p.lat >= b[1] && p.lon <= b[2] && p.lat <= b[3];
    let mut batch = Vec::with_capacity(PLACEMENT_BATCH.min(grants.len()));
    for grant in grants {
        let point = {
            let mut rng = rand::rng();
            (0..PLACEMENT_TRIES)
                .map(|_| LonLat {
                    lon: rng.random_range(within[0]..=within[2]),
                    lat: rng.random_range(within[1]..=within[3]),
                })
                .find(|&p| {
                    world.bounds.contains(p) && !obstacles.iter().any(|o| inside(p, &o.bbox))
                })
        };
        // A box with no legal point leaves the bot to spawn as usual.
        let Some(position) = point else { continue };
        batch.push(StoredPosition {
            user_id: grant.user_id,
            world_id: world.id,
            position,
            heading: 0.0,
            epoch: state.store.next_epoch(grant.user_id).await?,
            seq: 0,
            updated_at_ms: now_ms(),
        });
        if batch.len() == PLACEMENT_BATCH {
            state.store.save_positions(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        state.store.save_positions(&batch).await?;
    }
    Ok(())
}
