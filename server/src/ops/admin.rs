//! Who may use the admin API and the endpoints that show positions: the
//! holder of `OPS_TOKEN`, or a logged-in account with the `admin` role, as a
//! Bearer token. Also the admin API's error type, shared by its endpoints.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::OpsState;
use crate::auth::{AuthError, BotError};
use crate::store::{Role, StoreError, WorldDef};

/// A refused or failed admin request. Clients see `code()` and the message;
/// the causes of `Unavailable` and `Internal` are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No Bearer token.
    #[error("send Authorization: Bearer <OPS_TOKEN or an admin's access token>")]
    MissingToken,
    /// A token that is neither `OPS_TOKEN` nor a live admin session's.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// A geometry that is not a valid polygon; the message says why.
    #[error("{0}")]
    InvalidGeometry(String),
    /// No world of that name.
    #[error("no world named {0:?}")]
    UnknownWorld(String),
    /// No such area, player or object.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// The store or Redis cannot be reached.
    #[error("try again later")]
    Unavailable(String),
    /// A bug or corrupt data.
    #[error("internal error")]
    Internal(String),
}

impl AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) | Self::InvalidGeometry(_) => StatusCode::BAD_REQUEST,
            Self::UnknownWorld(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients match on.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid(_) => "invalid_request",
            Self::InvalidGeometry(_) => "invalid_geometry",
            Self::UnknownWorld(_) => "unknown_world",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(cause) => tracing::warn!(error = %cause, "admin request failed"),
            Self::Internal(cause) => tracing::error!(error = %cause, "admin request failed"),
            _ => {}
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        (self.status_code(), Json(body)).into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Migration(_) => {
                Self::Unavailable(e.to_string())
            }
            StoreError::Conflict(_) | StoreError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<BotError> for AdminError {
    fn from(e: BotError) -> Self {
        match e {
            BotError::Prefix(_) => Self::Invalid(e.to_string()),
            BotError::Taken(_) => Self::Conflict(e.to_string()),
            BotError::Auth(AuthError::Store(e)) => e.into(),
            BotError::Auth(e) => Self::Internal(e.to_string()),
        }
    }
}

/// The world named `name`, or the shard's default world.
///
/// # Errors
/// `AdminError::UnknownWorld` if there is none of that name.
pub(super) async fn world(state: &OpsState, name: Option<String>) -> Result<WorldDef, AdminError> {
    let name = name.unwrap_or_else(|| state.default_world.clone());
    state
        .store
        .worlds()
        .await?
        .into_iter()
        .find(|w| w.name == name)
        .ok_or(AdminError::UnknownWorld(name))
}

/// Whether `[min_lon, min_lat, max_lon, max_lat]` is a box of the map:
/// finite, in range, and not empty.
pub(super) fn is_box(b: [f64; 4]) -> bool {
    let [min_lon, min_lat, max_lon, max_lat] = b;
    b.iter().all(|v| v.is_finite())
        && min_lon < max_lon
        && min_lat < max_lat
        && (-180.0..=180.0).contains(&min_lon)
        && (-180.0..=180.0).contains(&max_lon)
        && (-90.0..=90.0).contains(&min_lat)
        && (-90.0..=90.0).contains(&max_lat)
}

/// Proof that a request may use the admin API: take it as a handler argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// The request carried `OPS_TOKEN`.
    Operator,
    /// The request carried the access token of a live session of an account
    /// with the `admin` role.
    Account,
}

/// The Bearer token of a request, if it has one.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// Decide who `given` speaks for.
async fn admin(state: &OpsState, given: &str) -> Result<Admin, AdminError> {
    // Comparing digests keeps the comparison's timing independent of how much
    // of the token an attacker has guessed.
    if let Some(expected) = state.ops_token.as_deref() {
        if Sha256::digest(given) == Sha256::digest(expected) {
            return Ok(Admin::Operator);
        }
    }
    match state.auth.authenticate(given).await {
        Ok(identity) if identity.roles.contains(&Role::Admin) => Ok(Admin::Account),
        Ok(_) => Err(AdminError::Forbidden("this account is not an admin")),
        Err(AuthError::InvalidToken) => Err(AdminError::Forbidden(if state.ops_token.is_some() {
            "wrong admin token"
        } else {
            "wrong admin token (OPS_TOKEN is not set on this shard: use an admin's access token)"
        })),
        Err(e) => Err(AdminError::Unavailable(e.to_string())),
    }
}

impl FromRequestParts<OpsState> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &OpsState,
    ) -> Result<Self, Self::Rejection> {
        let given = bearer(parts).ok_or(AdminError::MissingToken)?;
        admin(state, given).await
    }
}

/// A stored shape as a GeoJSON feature: its id, its geometry, and its stored
/// `properties` with the `shown` ones (name, world, …) laid over them.
pub(super) fn feature<'a>(
    id: uuid::Uuid,
    geometry: geojson::Geometry,
    stored: &serde_json::Value,
    shown: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
) -> geojson::Feature {
    let mut properties = match stored {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    for (key, value) in shown {
        properties.insert(key.into(), value);
    }
    geojson::Feature {
        bbox: None,
        geometry: Some(geometry),
        id: Some(geojson::feature::Id::String(id.to_string())),
        properties: Some(properties),
        foreign_members: None,
    }
}

/// Features as a `FeatureCollection`.
pub(super) fn collection(features: Vec<geojson::Feature>) -> geojson::FeatureCollection {
    geojson::FeatureCollection {
        bbox: None,
        features,
        foreign_members: None,
    }
}
