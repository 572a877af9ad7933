//! The admin API's flags and scores: list, read, create, move and delete a
//! world's flags as GeoJSON points, and reset a world's team scores. Every
//! change is announced on the bus (`FlagsChanged`, `ScoresReset`), so every
//! shard of the world reloads its flags from the store and the players are
//! sent them afresh.
//!
//! A feature's `properties` hold `name`, optionally `world` (the shard's
//! default world otherwise), `capture_radius_m` (20 by default, at most the
//! shard's `AOI_RADIUS_M`), `capture_time_s` (5 by default, at most an hour)
//! and `owner` (a team, or `null`); any other properties are stored with the
//! flag and given back. Replacing a flag without `owner` keeps its owner.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use geojson::{Feature, FeatureCollection, GeometryValue};
use meridian_protocol::LonLat;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::admin::{self, world, Admin, AdminError};
use super::areas::{reject_other_crs, take_name, take_world, WorldQuery};
use super::OpsState;
use crate::bus::ControlEvent;
use crate::store::{WorldDef, WorldObject};
use crate::world::flags::KIND;
use crate::world::geodesy::checked_point;

/// The longest capture time an operator may set.
const MAX_CAPTURE_TIME_S: f64 = 3600.0;

/// The flag id of a path, or why it is not one.
fn flag_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, AdminError> {
    id.map(|Path(id)| id)
        .map_err(|_| AdminError::Invalid("a flag id is a UUID".into()))
}

/// A flag and the world it is in, found by id.
async fn find(state: &OpsState, id: Uuid) -> Result<(WorldDef, WorldObject), AdminError> {
    for world in state.store.worlds().await? {
        if let Some(flag) = state
            .store
            .world_objects(world.id)
            .await?
            .into_iter()
            .find(|o| o.id == id && o.kind == KIND)
        {
            return Ok((world, flag));
        }
    }
    Err(AdminError::NotFound(format!("no flag with id {id}")))
}

/// A flag as a GeoJSON feature.
fn feature(world: &WorldDef, flag: &WorldObject) -> Feature {
    let point = geojson::Geometry::new(GeometryValue::Point {
        coordinates: geojson::Position::from([flag.position.lon, flag.position.lat]),
    });
    let shown = [
        ("name", flag.name.clone().into()),
        ("world", world.name.clone().into()),
        ("owner", flag.owner.clone().into()),
        ("version", flag.version.into()),
    ];
    admin::feature(flag.id, point, &flag.properties, shown)
}

/// `GET /admin/flags?world=NAME`: the world's flags as a `FeatureCollection`.
pub(super) async fn list(
    _: Admin,
    State(state): State<OpsState>,
    query: Result<Query<WorldQuery>, QueryRejection>,
) -> Result<Json<FeatureCollection>, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let world = world(&state, query.world).await?;
    let features = state
        .store
        .world_objects(world.id)
        .await?
        .iter()
        .filter(|o| o.kind == KIND)
        .map(|flag| feature(&world, flag))
        .collect();
    Ok(Json(admin::collection(features)))
}

/// `GET /admin/flags/{id}`.
pub(super) async fn get(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Feature>, AdminError> {
    let (world, flag) = find(&state, flag_id(id)?).await?;
    Ok(Json(feature(&world, &flag)))
}

/// `POST /admin/flags`: a new flag; 201 with its feature (and id).
pub(super) async fn create(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let (world, flag) = parse(&state, Uuid::now_v7(), body, None).await?;
    let flag = store(&state, &world, flag).await?;
    tracing::info!(flag = %flag.id, world = %world.name, "flag created");
    Ok((StatusCode::CREATED, Json(feature(&world, &flag))))
}

/// `PUT /admin/flags/{id}`: replace (move, rename, retune) an existing flag.
pub(super) async fn replace(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Feature>, AdminError> {
    let id = flag_id(id)?;
    let Json(body) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let (old_world, old) = find(&state, id).await?;
    let (world, flag) = parse(&state, id, body, old.owner).await?;
    let flag = store(&state, &world, flag).await?;
    if old_world.id != world.id {
        // The flag moved to another world: that one reloads too.
        state.control.send_control(ControlEvent::FlagsChanged {
            world_id: old_world.id,
        });
    }
    tracing::info!(flag = %flag.id, world = %world.name, "flag replaced");
    Ok(Json(feature(&world, &flag)))
}

/// `DELETE /admin/flags/{id}`: 204. Its captures stay in the history.
pub(super) async fn delete(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = flag_id(id)?;
    let (world, _) = find(&state, id).await?;
    if !state.store.delete_world_object(id).await? {
        return Err(AdminError::NotFound(format!("no flag with id {id}")));
    }
    state
        .control
        .send_control(ControlEvent::FlagsChanged { world_id: world.id });
    tracing::info!(flag = %id, world = %world.name, "flag deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `/admin/scores/reset`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetRequest {
    /// The world; the shard's default world when absent.
    world: Option<String>,
}

/// `POST /admin/scores/reset`: every team's score in the world back to 0
/// (the capture history stays); 204.
pub(super) async fn reset_scores(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<ResetRequest>, JsonRejection>,
) -> Result<StatusCode, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let world = world(&state, body.world).await?;
    state.store.reset_scores(world.id).await?;
    state
        .control
        .send_control(ControlEvent::ScoresReset { world_id: world.id });
    tracing::info!(world = %world.name, "scores reset");
    Ok(StatusCode::NO_CONTENT)
}

/// `?world=&since_ms=` of the capture history.
#[derive(Debug, Deserialize)]
pub(super) struct CapturesQuery {
    world: Option<String>,
    #[serde(default)]
    since_ms: i64,
}

/// `GET /admin/captures?world=&since_ms=`: the world's committed captures
/// since then, oldest first (`{"captures": [...]}`), as the history table
/// holds them: what a load test checks its announcements against.
pub(super) async fn captures(
    _: Admin,
    State(state): State<OpsState>,
    query: Result<Query<CapturesQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let world = world(&state, query.world).await?;
    let captures: Vec<Value> = state
        .store
        .captures(world.id, query.since_ms)
        .await?
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "id": c.capture.id,
                "flag_id": c.capture.flag_id,
                "user_id": c.capture.user_id,
                "team": c.capture.team,
                "captured_at_ms": c.capture.captured_at_ms,
                "version": c.version,
                "score": c.score,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "world": world.name, "captures": captures }),
    ))
}

/// Write a flag, tell every shard of its world, and return it as stored.
async fn store(
    state: &OpsState,
    world: &WorldDef,
    flag: WorldObject,
) -> Result<WorldObject, AdminError> {
    state.store.put_world_object(&flag).await?;
    state
        .control
        .send_control(ControlEvent::FlagsChanged { world_id: world.id });
    let stored = state
        .store
        .world_objects(world.id)
        .await?
        .into_iter()
        .find(|o| o.id == flag.id);
    Ok(stored.unwrap_or(flag))
}

/// The flag a request body describes, with id `id`; `owner` is kept when
/// the body does not name one.
async fn parse(
    state: &OpsState,
    id: Uuid,
    body: Value,
    owner: Option<String>,
) -> Result<(WorldDef, WorldObject), AdminError> {
    reject_other_crs(&body)?;
    let feature: Feature = serde_json::from_value(body)
        .map_err(|e| AdminError::Invalid(format!("expected a GeoJSON Feature: {e}")))?;
    let mut properties = feature.properties.unwrap_or_default();
    let name = take_name(&mut properties)?;
    let world_name = take_world(&mut properties)?;
    let max_radius_m = state.shard.aoi_radius_m;
    check_number(
        &properties,
        "capture_radius_m",
        |r| r > 0.0 && r <= max_radius_m,
        &format!("a number of metres above 0 and at most {max_radius_m} (AOI_RADIUS_M)"),
    )?;
    check_number(
        &properties,
        "capture_time_s",
        |s| (0.0..=MAX_CAPTURE_TIME_S).contains(&s),
        &format!("a number of seconds from 0 to {MAX_CAPTURE_TIME_S}"),
    )?;
    let teams = state.store.teams().await?;
    let owner = match properties.remove("owner") {
        None => owner,
        Some(Value::Null) => None,
        Some(Value::String(team)) if teams.iter().any(|t| t.name == team) => Some(team),
        Some(_) => {
            let names: Vec<&str> = teams.iter().map(|t| t.name.as_str()).collect();
            return Err(AdminError::Invalid(format!(
                "properties.owner must be null or one of the teams: {}",
                names.join(", ")
            )));
        }
    };
    let geometry = feature
        .geometry
        .ok_or_else(|| AdminError::InvalidGeometry("the feature has no geometry".into()))?;
    let position = point(&geometry.value).map_err(AdminError::InvalidGeometry)?;
    let world = world(state, world_name).await?;
    Ok((
        world.clone(),
        WorldObject {
            id,
            world_id: world.id,
            kind: KIND.into(),
            name,
            position,
            properties: Value::Object(properties),
            owner,
            version: 0,
        },
    ))
}

/// Refuse `properties[key]` when present and not a finite number `ok` accepts.
fn check_number(
    properties: &Map<String, Value>,
    key: &str,
    ok: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<(), AdminError> {
    match properties.get(key) {
        None => Ok(()),
        Some(v) if v.as_f64().is_some_and(|n| n.is_finite() && ok(n)) => Ok(()),
        Some(_) => Err(AdminError::Invalid(format!(
            "properties.{key} must be {expected}"
        ))),
    }
}

/// A position from a GeoJSON `Point`, or why it is not one.
///
/// # Errors
/// The reason, for the operator.
pub fn point(value: &GeometryValue) -> Result<LonLat, String> {
    let GeometryValue::Point { coordinates } = value else {
        return Err(format!(
            "a flag's geometry must be a Point, not a {}",
            value.type_name()
        ));
    };
    match *coordinates.as_slice() {
        // Taken as given once checked, not re-wrapped: wrapping adds float noise.
        [lon, lat] | [lon, lat, _] => checked_point(lon, lat)
            .filter(|_| (-180.0..=180.0).contains(&lon))
            .map(|_| LonLat { lon, lat })
            .ok_or_else(|| format!("[{lon}, {lat}] is not a longitude/latitude position")),
        _ => Err("a Point has two coordinates, longitude and latitude".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_must_be_positions_on_the_map() {
        let at = |coordinates: Vec<f64>| {
            point(&GeometryValue::Point {
                coordinates: coordinates.into(),
            })
        };
        assert_eq!(
            at(vec![4.9, 52.37]),
            Ok(LonLat {
                lon: 4.9,
                lat: 52.37
            })
        );
        assert!(at(vec![4.9, 91.0]).unwrap_err().contains("not a longitude"));
        assert!(at(vec![200.0, 0.0])
            .unwrap_err()
            .contains("not a longitude"));
        assert!(at(vec![f64::NAN, 0.0]).is_err());
        assert!(at(vec![1.0]).unwrap_err().contains("two coordinates"));
        let line = GeometryValue::LineString {
            coordinates: vec![[0.0, 0.0].into(), [1.0, 1.0].into()],
        };
        assert!(point(&line).unwrap_err().contains("must be a Point"));
    }
}
