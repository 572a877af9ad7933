//! Where players are, for operators: `/api/players` reads the live positions
//! from the worlds' newest snapshots (the dashboard's map), `/api/nearby`
//! asks the store for stored positions and placed objects around a point
//! (PostGIS's `ST_DWithin` in production). Positions are personal data, so
//! both need the admin token, and both are capped.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use meridian_protocol::LonLat;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{is_box, world, Admin, AdminError};
use super::OpsState;

/// Players `/api/players` answers with when no `limit` is given.
pub const DEFAULT_PLAYERS: usize = 2_000;

/// The most players or objects one answer holds.
pub const MAX_RESULTS: usize = 10_000;

/// The widest `/api/nearby` radius: 50 km is a city and its suburbs.
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// `/api/players` query.
#[derive(Debug, Deserialize)]
pub(super) struct PlayersQuery {
    /// `min_lon,min_lat,max_lon,max_lat`; the whole world if absent.
    bbox: Option<String>,
    world: Option<String>,
    limit: Option<usize>,
}

fn parse_bbox(text: &str) -> Result<[f64; 4], AdminError> {
    let refused = || {
        AdminError::Invalid(
            "bbox must be min_lon,min_lat,max_lon,max_lat with min < max in degrees".into(),
        )
    };
    let numbers: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| refused())?;
    let Ok(b) = <[f64; 4]>::try_from(numbers) else {
        return Err(refused());
    };
    if is_box(b) {
        Ok(b)
    } else {
        Err(refused())
    }
}

/// `GET /api/players?bbox=&world=&limit=`: the live players of a world inside
/// the box (this shard's and the ghosts of other shards near them).
pub(super) async fn players(
    _: Admin,
    State(state): State<OpsState>,
    query: Result<Query<PlayersQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let bbox = query.bbox.as_deref().map(parse_bbox).transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PLAYERS).min(MAX_RESULTS);
    let name = query.world.unwrap_or_else(|| state.default_world.clone());
    let handle = state
        .worlds
        .iter()
        .find(|w| w.name == name)
        .ok_or(AdminError::UnknownWorld(name))?;
    let snapshot = handle.snapshots.borrow().clone();
    let mut players = Vec::new();
    let mut truncated = false;
    for (slot, entity) in snapshot.slots.iter().enumerate() {
        let Some(entity) = entity else { continue };
        let s = &entity.state;
        let (lon, lat) = (f64::from(s.lon_e7) * 1e-7, f64::from(s.lat_e7) * 1e-7);
        if let Some([min_lon, min_lat, max_lon, max_lat]) = bbox {
            if lon < min_lon || lon > max_lon || lat < min_lat || lat > max_lat {
                continue;
            }
        }
        if players.len() == limit {
            truncated = true;
            break;
        }
        let identity = snapshot.roster.get(slot).and_then(Option::as_ref);
        players.push(json!({
            "id": s.id,
            "player_id": identity.map(|i| i.player_id),
            "name": identity.map(|i| &*i.name),
            "lon": lon,
            "lat": lat,
            "heading": f64::from(s.heading_cdeg) / 100.0,
            "speed_mps": f64::from(s.speed_cms) / 100.0,
        }));
    }
    Ok(Json(json!({
        "world": handle.name,
        "tick": snapshot.tick,
        "server_time_ms": snapshot.server_time_ms,
        "players": players,
        "truncated": truncated,
    })))
}

/// `/api/nearby` query.
#[derive(Debug, Deserialize)]
pub(super) struct NearbyQuery {
    lon: f64,
    lat: f64,
    radius_m: f64,
    world: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/nearby?lon=&lat=&radius_m=&world=&limit=`: stored positions and
/// placed objects within `radius_m` of the point, nearest first.
pub(super) async fn nearby(
    _: Admin,
    State(state): State<OpsState>,
    query: Result<Query<NearbyQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let center = LonLat {
        lon: query.lon,
        lat: query.lat,
    };
    if !(center.lon.is_finite()
        && center.lat.is_finite()
        && (-180.0..=180.0).contains(&center.lon)
        && (-90.0..=90.0).contains(&center.lat))
    {
        return Err(AdminError::Invalid(
            "lon must be within -180..180 and lat within -90..90".into(),
        ));
    }
    if !(query.radius_m.is_finite() && query.radius_m > 0.0 && query.radius_m <= MAX_RADIUS_M) {
        return Err(AdminError::Invalid(format!(
            "radius_m must be more than 0 and at most {MAX_RADIUS_M}"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PLAYERS).min(MAX_RESULTS);
    let world = world(&state, query.world).await?;
    let found = state
        .store
        .nearby(world.id, center, query.radius_m, limit)
        .await?;
    let players: Vec<Value> = found
        .players
        .iter()
        .map(|p| {
            json!({
                "user_id": p.user_id,
                "username": p.username,
                "lon": p.position.lon,
                "lat": p.position.lat,
                "updated_at_ms": p.updated_at_ms,
                "distance_m": p.distance_m,
            })
        })
        .collect();
    let objects: Vec<Value> = found
        .objects
        .iter()
        .map(|o| {
            json!({
                "id": o.object.id,
                "kind": o.object.kind,
                "name": o.object.name,
                "lon": o.object.position.lon,
                "lat": o.object.position.lat,
                "properties": o.object.properties,
                "distance_m": o.distance_m,
            })
        })
        .collect();
    Ok(Json(json!({
        "world": world.name,
        "center": { "lon": center.lon, "lat": center.lat },
        "radius_m": query.radius_m,
        "players": players,
        "objects": objects,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_checked() {
        assert_eq!(
            parse_bbox("4.8, 52.3,4.9,52.4").unwrap(),
            [4.8, 52.3, 4.9, 52.4]
        );
        for bad in [
            "",
            "4.8,52.3,4.9",
            "4.9,52.3,4.8,52.4",
            "a,b,c,d",
            "0,0,200,1",
            "NaN,0,1,1",
        ] {
            assert!(parse_bbox(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
