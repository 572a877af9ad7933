//! The admin API's areas: list, read, create, replace and delete a world's
//! areas as GeoJSON, validated before anything is stored. Every change is
//! announced as `AreasChanged` on the bus, so every shard of the world
//! reloads the areas from the store and the tick applies them from its next
//! step on, without a restart.
//!
//! A feature's `properties` hold `name`, `kind` (`blocked`, `speed_limit`,
//! `safe`, `spawn`, `zone`), optionally `world` (the shard's default world
//! otherwise) and `max_speed_mps` (required for `speed_limit`); any other
//! properties are stored with the area and given back.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use geo::Validation;
use geojson::{Feature, FeatureCollection, GeometryValue, PolygonType};
use meridian_protocol::AreaKind;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::admin::{self, world, Admin, AdminError};
use super::OpsState;
use crate::bus::ControlEvent;
use crate::store::{Area, WorldDef};

/// The longest area name: it travels in every `AreaEvent`.
pub const MAX_NAME_CHARS: usize = 64;

/// The most vertices one area may have: the tick tests paths against areas,
/// so their size is the tick's cost.
pub const MAX_VERTICES: usize = 10_000;

/// `?world=` of the lists.
#[derive(Debug, Deserialize)]
pub(super) struct WorldQuery {
    pub(super) world: Option<String>,
}

/// The area id of a path, or why it is not one.
fn area_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, AdminError> {
    id.map(|Path(id)| id)
        .map_err(|_| AdminError::Invalid("an area id is a UUID".into()))
}

/// An area and the world it is in, found by id.
async fn find(state: &OpsState, id: Uuid) -> Result<(WorldDef, Area), AdminError> {
    for world in state.store.worlds().await? {
        if let Some(area) = state
            .store
            .areas(world.id)
            .await?
            .into_iter()
            .find(|a| a.id == id)
        {
            return Ok((world, area));
        }
    }
    Err(AdminError::NotFound(format!("no area with id {id}")))
}

/// An area as a GeoJSON feature.
fn feature(world: &WorldDef, area: &Area) -> Feature {
    let shown = [
        ("name", area.name.clone().into()),
        ("kind", area.kind.as_str().into()),
        ("world", world.name.clone().into()),
    ];
    let shape = geojson::Geometry::from(&area.geometry);
    admin::feature(area.id, shape, &area.properties, shown)
}

/// `GET /admin/areas?world=NAME`: the world's areas as a `FeatureCollection`.
pub(super) async fn list(
    _: Admin,
    State(state): State<OpsState>,
    query: Result<Query<WorldQuery>, QueryRejection>,
) -> Result<Json<FeatureCollection>, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let world = world(&state, query.world).await?;
    let features = state
        .store
        .areas(world.id)
        .await?
        .iter()
        .map(|area| feature(&world, area))
        .collect();
    Ok(Json(admin::collection(features)))
}

/// `GET /admin/areas/{id}`.
pub(super) async fn get(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Feature>, AdminError> {
    let id = area_id(id)?;
    let (world, area) = find(&state, id).await?;
    Ok(Json(feature(&world, &area)))
}

/// `POST /admin/areas`: a new area; 201 with its feature (and id).
pub(super) async fn create(
    _: Admin,
    State(state): State<OpsState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let (world, area) = parse(&state, Uuid::now_v7(), body).await?;
    store(&state, &world, &area).await?;
    tracing::info!(area = %area.id, kind = area.kind.as_str(), world = %world.name, "area created");
    Ok((StatusCode::CREATED, Json(feature(&world, &area))))
}

/// `PUT /admin/areas/{id}`: replace an existing area.
pub(super) async fn replace(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Feature>, AdminError> {
    let id = area_id(id)?;
    let Json(body) = body.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let (old_world, _) = find(&state, id).await?;
    let (world, area) = parse(&state, id, body).await?;
    store(&state, &world, &area).await?;
    if old_world.id != world.id {
        // The area moved to another world: that one reloads too.
        state.control.send_control(ControlEvent::AreasChanged {
            world_id: old_world.id,
        });
    }
    tracing::info!(area = %area.id, kind = area.kind.as_str(), world = %world.name, "area replaced");
    Ok(Json(feature(&world, &area)))
}

/// `DELETE /admin/areas/{id}`: 204.
pub(super) async fn delete(
    _: Admin,
    State(state): State<OpsState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = area_id(id)?;
    let (world, _) = find(&state, id).await?;
    if !state.store.delete_area(id).await? {
        return Err(AdminError::NotFound(format!("no area with id {id}")));
    }
    state
        .control
        .send_control(ControlEvent::AreasChanged { world_id: world.id });
    tracing::info!(area = %id, world = %world.name, "area deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Write an area and tell every shard of its world.
async fn store(state: &OpsState, world: &WorldDef, area: &Area) -> Result<(), AdminError> {
    state.store.put_area(area).await?;
    state
        .control
        .send_control(ControlEvent::AreasChanged { world_id: world.id });
    Ok(())
}

/// The area a request body describes, with id `id`.
async fn parse(state: &OpsState, id: Uuid, body: Value) -> Result<(WorldDef, Area), AdminError> {
    reject_other_crs(&body)?;
    let feature: Feature = serde_json::from_value(body)
        .map_err(|e| AdminError::Invalid(format!("expected a GeoJSON Feature: {e}")))?;
    let mut properties = feature.properties.unwrap_or_default();
    let name = take_name(&mut properties)?;
    let kind = properties
        .remove("kind")
        .and_then(|k| k.as_str().and_then(AreaKind::parse))
        .ok_or_else(|| {
            AdminError::Invalid(
                "properties.kind must be one of blocked, speed_limit, safe, spawn, zone".into(),
            )
        })?;
    let world_name = take_world(&mut properties)?;
    if let Some(limit) = properties.get("max_speed_mps") {
        if !limit.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) {
            return Err(AdminError::Invalid(
                "properties.max_speed_mps must be a positive number".into(),
            ));
        }
    } else if kind == AreaKind::SpeedLimit {
        return Err(AdminError::Invalid(
            "a speed_limit area needs properties.max_speed_mps".into(),
        ));
    }
    let geometry = feature
        .geometry
        .ok_or_else(|| AdminError::InvalidGeometry("the feature has no geometry".into()))?;
    let geometry = multipolygon(&geometry.value).map_err(AdminError::InvalidGeometry)?;
    let world = world(state, world_name).await?;
    Ok((
        world.clone(),
        Area {
            id,
            world_id: world.id,
            name,
            kind,
            geometry,
            properties: Value::Object(properties),
        },
    ))
}

/// Take a feature's `properties.name`: 1 to `MAX_NAME_CHARS` characters
/// without control characters, trimmed.
pub(super) fn take_name(properties: &mut Map<String, Value>) -> Result<String, AdminError> {
    let name = match properties.remove("name") {
        Some(Value::String(name)) => name.trim().to_owned(),
        _ => {
            return Err(AdminError::Invalid(
                "properties.name must be a string".into(),
            ))
        }
    };
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AdminError::Invalid(format!(
            "properties.name must be 1 to {MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name)
}

/// Take a feature's optional `properties.world`.
pub(super) fn take_world(
    properties: &mut Map<String, Value>,
) -> Result<Option<String>, AdminError> {
    match properties.remove("world") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => Ok(Some(name)),
        Some(_) => Err(AdminError::Invalid(
            "properties.world must be a string".into(),
        )),
    }
}

/// GeoJSON (RFC 7946) is WGS 84 longitude/latitude only. The older 2008
/// format allowed a `crs` member naming another system; such a body is
/// refused rather than read in the wrong coordinates.
pub(super) fn reject_other_crs(body: &Value) -> Result<(), AdminError> {
    let named = |v: &Value| -> Option<String> {
        let crs = v.get("crs")?;
        Some(
            crs.pointer("/properties/name")
                .and_then(Value::as_str)
                .unwrap_or("an unnamed one")
                .to_owned(),
        )
    };
    for crs in [named(body), body.get("geometry").and_then(named)]
        .into_iter()
        .flatten()
    {
        let wgs84 = [
            "EPSG:4326",
            "urn:ogc:def:crs:OGC:1.3:CRS84",
            "urn:ogc:def:crs:EPSG::4326",
        ];
        if !wgs84.iter().any(|w| crs.eq_ignore_ascii_case(w)) {
            return Err(AdminError::InvalidGeometry(format!(
                "coordinates must be WGS 84 longitude/latitude (SRID 4326), not {crs}"
            )));
        }
    }
    Ok(())
}

/// A valid multipolygon from a GeoJSON `Polygon` or `MultiPolygon`, or why
/// it is not one: rings must be closed and have at least four positions,
/// positions must be finite longitude/latitude, and the shape must be valid
/// (no self-intersecting rings, holes inside their shells, and so on).
///
/// # Errors
/// The reason, for the operator.
pub fn multipolygon(value: &GeometryValue) -> Result<geo::MultiPolygon<f64>, String> {
    let polygons: Vec<&PolygonType> = match value {
        GeometryValue::Polygon { coordinates } => vec![coordinates],
        GeometryValue::MultiPolygon { coordinates } => coordinates.iter().collect(),
        other => {
            return Err(format!(
                "the geometry must be a Polygon or MultiPolygon, not a {}",
                other.type_name()
            ))
        }
    };
    if polygons.is_empty() {
        return Err("the MultiPolygon has no polygons".into());
    }
    let vertices: usize = polygons.iter().flat_map(|p| p.iter()).map(Vec::len).sum();
    if vertices > MAX_VERTICES {
        return Err(format!(
            "the shape has {vertices} positions; at most {MAX_VERTICES} are allowed"
        ));
    }
    let mut out = Vec::with_capacity(polygons.len());
    for (p, rings) in polygons.iter().enumerate() {
        let where_ = |r: usize| {
            let ring = if r == 0 {
                "the outer ring".to_owned()
            } else {
                format!("hole {r}")
            };
            if polygons.len() > 1 {
                format!("{ring} of polygon {}", p + 1)
            } else {
                ring
            }
        };
        if rings.is_empty() {
            return Err(format!("polygon {} has no rings", p + 1));
        }
        let mut lines = Vec::with_capacity(rings.len());
        for (r, ring) in rings.iter().enumerate() {
            if ring.len() < 4 {
                return Err(format!(
                    "{} has {} positions; a closed ring needs at least 4",
                    where_(r),
                    ring.len()
                ));
            }
            let mut coords = Vec::with_capacity(ring.len());
            for position in ring {
                let xy = position.as_slice();
                let (lon, lat) = match xy {
                    [lon, lat] | [lon, lat, _] => (*lon, *lat),
                    _ => {
                        return Err(format!(
                            "{} has a position with {} numbers; expected [lon, lat]",
                            where_(r),
                            xy.len()
                        ))
                    }
                };
                let on_the_map = (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat);
                if !on_the_map {
                    return Err(format!(
                        "{} has the position [{lon}, {lat}], outside longitude -180..180 and latitude -90..90 (SRID 4326)",
                        where_(r)
                    ));
                }
                coords.push(geo::coord! { x: lon, y: lat });
            }
            if coords.first() != coords.last() {
                return Err(format!(
                    "{} is not closed: its first and last positions differ",
                    where_(r)
                ));
            }
            lines.push(geo::LineString::new(coords));
        }
        let exterior = lines.remove(0);
        out.push(geo::Polygon::new(exterior, lines));
    }
    let shape = geo::MultiPolygon::new(out);
    shape
        .check_validation()
        .map_err(|e| format!("the shape is not a valid polygon: {e}"))?;
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        json!({
            "type": "Feature",
            "geometry": { "type": "Polygon", "coordinates": [[[4.89, 52.37], [4.891, 52.37], [4.891, 52.371], [4.89, 52.37]]] },
            "properties": { "name": "Roadworks", "kind": "blocked" }
        })
    }

    fn polygon(rings: Vec<Vec<[f64; 2]>>) -> GeometryValue {
        GeometryValue::Polygon {
            coordinates: rings
                .into_iter()
                .map(|ring| ring.into_iter().map(geojson::Position::from).collect())
                .collect(),
        }
    }

    #[test]
    fn a_closed_square_is_accepted() {
        let square = polygon(vec![vec![
            [4.0, 52.0],
            [4.001, 52.0],
            [4.001, 52.001],
            [4.0, 52.001],
            [4.0, 52.0],
        ]]);
        let shape = multipolygon(&square).unwrap();
        assert_eq!(shape.0.len(), 1);
        assert_eq!(shape.0[0].exterior().0.len(), 5);
    }

    #[test]
    fn bad_shapes_are_refused_with_the_reason() {
        let cases = [
            (
                polygon(vec![vec![
                    [4.0, 52.0],
                    [4.001, 52.0],
                    [4.001, 52.001],
                    [4.0, 52.001],
                ]]),
                "not closed",
            ),
            (
                polygon(vec![vec![[4.0, 52.0], [4.001, 52.0], [4.0, 52.0]]]),
                "at least 4",
            ),
            (
                // A bow tie: the ring crosses itself.
                polygon(vec![vec![
                    [4.0, 52.0],
                    [4.001, 52.001],
                    [4.001, 52.0],
                    [4.0, 52.001],
                    [4.0, 52.0],
                ]]),
                "not a valid polygon",
            ),
            (
                polygon(vec![vec![
                    [400.0, 52.0],
                    [401.0, 52.0],
                    [401.0, 53.0],
                    [400.0, 52.0],
                ]]),
                "SRID 4326",
            ),
            (
                GeometryValue::Point {
                    coordinates: geojson::Position::from([4.0, 52.0]),
                },
                "not a Point",
            ),
        ];
        for (value, fragment) in cases {
            let err = multipolygon(&value).unwrap_err();
            assert!(
                err.contains(fragment),
                "{err:?} should mention {fragment:?}"
            );
        }
    }

    #[test]
    fn another_crs_is_refused() {
        let mut body = example();
        body["crs"] = json!({ "type": "name", "properties": { "name": "EPSG:3857" } });
        let err = reject_other_crs(&body).unwrap_err();
        assert!(err.to_string().contains("EPSG:3857"), "{err}");
        body["crs"] =
            json!({ "type": "name", "properties": { "name": "urn:ogc:def:crs:OGC:1.3:CRS84" } });
        assert!(reject_other_crs(&body).is_ok());
    }
}
