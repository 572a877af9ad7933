//! The admin API on the ops port: who may use it (the ops token or an admin
//! account, nobody else), areas as GeoJSON (validated, stored, applied to the
//! running world at once, on every shard), kicks and broadcasts, and the
//! position endpoints behind the same token.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::{CorrectionReason, Encoding, KickReason, LonLat, ServerMessage};
use meridian_server::auth::password::hash_password;
use meridian_server::store::{now_ms, Role, User, WorldObject};
use reqwest::Method;
use serde_json::{json, Value};
use util::redis::RedisServer;
use util::{offset, Client, Closed, TestServer, CENTER};
use uuid::Uuid;

const OPS_TOKEN: &str = "ops-token-for-admin-tests";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.ops_token = Some(OPS_TOKEN.into());
        c.flush_interval = Duration::from_millis(100);
    })
    .await
}

/// A square GeoJSON feature of `side_m` metres centred on `centre`.
fn square(name: &str, kind: &str, centre: LonLat, side_m: f64) -> Value {
    let sw = offset(centre, -side_m / 2.0, -side_m / 2.0);
    let ne = offset(centre, side_m / 2.0, side_m / 2.0);
    json!({
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[
                [sw.lon, sw.lat], [ne.lon, sw.lat], [ne.lon, ne.lat], [sw.lon, ne.lat], [sw.lon, sw.lat]
            ]]
        },
        "properties": { "name": name, "kind": kind, "world": "arena" }
    })
}

/// An account with the admin role, logged in: its access token.
async fn admin_token(server: &TestServer) -> String {
    let password = "correct horse battery";
    let user = User {
        id: Uuid::now_v7(),
        username: "boss".into(),
        display_name: None,
        password_hash: Some(hash_password(password).unwrap()),
        device_hash: None,
        roles: vec![Role::Admin],
        team: None,
        created_at_ms: now_ms(),
    };
    server.store().await.create_user(&user).await.unwrap();
    let (status, body) = server
        .post(
            "/api/login",
            json!({ "username": "boss", "password": password }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_admin_api_refuses_missing_and_wrong_tokens_and_players() {
    let server = server().await;
    let (_, player) = server.login("pleb").await;
    let admin = admin_token(&server).await;
    let area = Uuid::now_v7();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/admin/areas".into(), None),
        (
            Method::POST,
            "/admin/areas".into(),
            Some(square("x", "zone", CENTER, 10.0)),
        ),
        (Method::GET, format!("/admin/areas/{area}"), None),
        (
            Method::PUT,
            format!("/admin/areas/{area}"),
            Some(square("x", "zone", CENTER, 10.0)),
        ),
        (Method::DELETE, format!("/admin/areas/{area}"), None),
        (
            Method::POST,
            "/admin/kick".into(),
            Some(json!({ "user_id": Uuid::now_v7() })),
        ),
        (
            Method::POST,
            "/admin/broadcast".into(),
            Some(json!({ "text": "hi" })),
        ),
        (
            Method::POST,
            "/admin/bots".into(),
            Some(json!({ "count": 0 })),
        ),
        (Method::GET, "/api/players".into(), None),
        (
            Method::GET,
            format!(
                "/api/nearby?lon={}&lat={}&radius_m=100",
                CENTER.lon, CENTER.lat
            ),
            None,
        ),
    ];
    for (method, path, body) in &routes {
        let (status, answer) = server
            .ops_request(method.clone(), path, None, body.clone())
            .await;
        assert_eq!(status, 401, "{method} {path} without a token: {answer}");
        assert_eq!(answer["error"], "unauthenticated");
        let (status, answer) = server
            .ops_request(method.clone(), path, Some("not-the-token"), body.clone())
            .await;
        assert_eq!(status, 403, "{method} {path} with a wrong token: {answer}");
        assert_eq!(answer["error"], "forbidden");
        let (status, answer) = server
            .ops_request(method.clone(), path, Some(&player), body.clone())
            .await;
        assert_eq!(status, 403, "{method} {path} as a player: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("not an admin"),
            "{answer}"
        );
    }
    // The ops token and an admin's access token both get in.
    for token in [OPS_TOKEN, admin.as_str()] {
        let (status, answer) = server
            .ops_request(Method::GET, "/admin/areas", Some(token), None)
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["type"], "FeatureCollection");
        assert_eq!(
            answer["features"].as_array().unwrap().len(),
            3,
            "the arena's areas"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_areas_are_refused_with_the_reason_and_nothing_is_stored() {
    let server = server().await;
    let unclosed = {
        let mut f = square("Open", "blocked", CENTER, 20.0);
        f["geometry"]["coordinates"][0]
            .as_array_mut()
            .unwrap()
            .pop();
        f
    };
    let bow_tie = {
        let mut f = square("Bow tie", "blocked", CENTER, 20.0);
        let ring = f["geometry"]["coordinates"][0].as_array_mut().unwrap();
        ring.swap(1, 2);
        f
    };
    let mercator = {
        let mut f = square("Mercator", "blocked", CENTER, 20.0);
        f["crs"] = json!({ "type": "name", "properties": { "name": "EPSG:3857" } });
        f
    };
    let off_the_map = {
        let mut f = square("Far", "blocked", CENTER, 20.0);
        f["geometry"]["coordinates"][0][0] = json!([545_000.0, 6_867_000.0]);
        f
    };
    let point = {
        let mut f = square("Point", "blocked", CENTER, 20.0);
        f["geometry"] = json!({ "type": "Point", "coordinates": [CENTER.lon, CENTER.lat] });
        f
    };
    let slow_without_limit = square("Slow", "speed_limit", CENTER, 20.0);
    let unknown_kind = square("Lava", "lava", CENTER, 20.0);
    let cases = [
        (unclosed, "invalid_geometry", "not closed"),
        (bow_tie, "invalid_geometry", "not a valid polygon"),
        (mercator, "invalid_geometry", "SRID 4326"),
        (off_the_map, "invalid_geometry", "outside longitude"),
        (point, "invalid_geometry", "Polygon or MultiPolygon"),
        (slow_without_limit, "invalid_request", "max_speed_mps"),
        (unknown_kind, "invalid_request", "properties.kind"),
        (
            json!({ "type": "Feature" }),
            "invalid_request",
            "properties.name",
        ),
        (json!([1, 2, 3]), "invalid_request", "GeoJSON Feature"),
    ];
    for (body, error, fragment) in cases {
        let (status, answer) = server
            .ops_post("/admin/areas", Some(OPS_TOKEN), body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], error, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(fragment),
            "{message:?} should say {fragment:?}"
        );
    }
    let (_, list) = server
        .ops_request(
            Method::GET,
            "/admin/areas?world=arena",
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        list["features"].as_array().unwrap().len(),
        3,
        "nothing stored"
    );
    server.stop().await;
}

/// How far each probing move goes: across a wall of `WALL_M` and back.
/// Short, so that probing several times a second stays near the speed limit
/// and the distance budget never refuses a probe as too fast.
const STEP_M: f64 = 2.5;
const WALL_M: f64 = 0.5;

/// A thin blocked wall across the path from `start` to `STEP_M` east of it,
/// 20 m long north–south, its middle `north_m` north of `start`.
fn wall(name: &str, start: LonLat, north_m: f64) -> Value {
    let sw = offset(start, 1.0, north_m - 10.0);
    let ne = offset(start, 1.0 + WALL_M, north_m + 10.0);
    json!({
        "type": "Feature",
        "geometry": { "type": "Polygon", "coordinates": [[
            [sw.lon, sw.lat], [ne.lon, sw.lat], [ne.lon, ne.lat], [sw.lon, ne.lat], [sw.lon, sw.lat]
        ]] },
        "properties": { "name": name, "kind": "blocked", "world": "arena" }
    })
}

/// Send moves between `from` and `to` (back and forth, every 150 ms) until
/// one is refused as `blocked`; returns how long that took and where the
/// player stands.
async fn until_blocked(
    client: &mut Client,
    from: LonLat,
    to: LonLat,
    within: Duration,
) -> (Duration, LonLat) {
    let started = Instant::now();
    let mut at = from;
    loop {
        assert!(
            started.elapsed() < within,
            "moves still pass after {within:?}"
        );
        let target = if at == from { to } else { from };
        let seq = client.move_to(target).await;
        let refused = client
            .until(|m| match m {
                ServerMessage::Correction {
                    seq: s, reason, id, ..
                } if *s == seq => Some(Some((*reason, *id))),
                ServerMessage::Update(u) if u.ack_seq >= seq => Some(None),
                _ => None,
            })
            .await;
        match refused {
            Some((reason, id)) => {
                assert_eq!(reason, CorrectionReason::Blocked);
                client
                    .send(&meridian_protocol::ClientMessage::AckCorrection { id })
                    .await;
                return (started.elapsed(), at);
            }
            None => at = target,
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn a_new_blocked_area_refuses_moves_at_once_and_deleting_it_lets_them_pass() {
    let server = server().await;
    let start = offset(CENTER, 0.0, -100.0);
    let mut client = server
        .player("walker", "arena", start, Encoding::Json)
        .await;
    let across = offset(start, STEP_M, 0.0);
    // Before: the way east is open.
    let seq = client.move_to(across).await;
    client.acked(seq).await;
    let seq = client.move_to(start).await;
    client.acked(seq).await;

    let (status, created) = server
        .ops_post(
            "/admin/areas",
            Some(OPS_TOKEN),
            wall("Roadworks", start, 0.0),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["properties"]["kind"], "blocked");
    assert_eq!(created["properties"]["world"], "arena");
    let (took, at) = until_blocked(&mut client, start, across, Duration::from_secs(1)).await;
    println!("a new blocked area refused a move {took:?} after it was created");

    // It is readable by id and replaceable; then it is deleted.
    let path = format!("/admin/areas/{id}");
    let (status, one) = server
        .ops_request(Method::GET, &path, Some(OPS_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["properties"]["name"], "Roadworks");
    let moved = wall("Roadworks", start, 200.0);
    let (status, replaced) = server
        .ops_request(Method::PUT, &path, Some(OPS_TOKEN), Some(moved))
        .await;
    assert_eq!(status, 200, "{replaced}");
    let (status, gone) = server
        .ops_request(Method::DELETE, &path, Some(OPS_TOKEN), None)
        .await;
    assert_eq!(status, 204, "{gone}");
    let (status, answer) = server
        .ops_request(Method::GET, &path, Some(OPS_TOKEN), None)
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "not_found");
    // Once the world has reloaded (and the budget refilled), the way is open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seq = client
        .move_to(if at == start { across } else { start })
        .await;
    client.acked(seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_new_blocked_area_refuses_moves_on_every_shard_within_a_second() {
    let redis = RedisServer::start();
    let adjust = |id: &'static str| {
        let url = redis.url();
        move |c: &mut meridian_server::Config| {
            c.redis_url = Some(url);
            c.shard_id = id.into();
            c.ops_token = Some(OPS_TOKEN.into());
        }
    };
    let a = TestServer::start_with(adjust("admin-a")).await;
    let b = TestServer::start_in(&a.dir, adjust("admin-b")).await;
    let start = offset(CENTER, 0.0, -150.0);
    let b_start = offset(start, 0.0, 5.0);
    let mut on_a = a.guest_player("arena", start, Encoding::Bincode).await;
    let mut on_b = b.guest_player("arena", b_start, Encoding::Json).await;
    // One wall across both players' paths, created through shard A.
    let (status, created) = a
        .ops_post("/admin/areas", Some(OPS_TOKEN), wall("Barrier", start, 0.0))
        .await;
    assert_eq!(status, 201, "{created}");
    let within = Duration::from_secs(1);
    let (on_a_took, _) = until_blocked(&mut on_a, start, offset(start, STEP_M, 0.0), within).await;
    let (on_b_took, _) =
        until_blocked(&mut on_b, b_start, offset(b_start, STEP_M, 0.0), within).await;
    println!("refused on shard A after {on_a_took:?}, on shard B after {on_b_took:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn operators_kick_players_and_broadcast_to_them() {
    let server = server().await;
    let mut alice = server
        .player("alice", "arena", CENTER, Encoding::Json)
        .await;
    let mut bob = server
        .player(
            "bobby",
            "arena",
            offset(CENTER, 10.0, 0.0),
            Encoding::Bincode,
        )
        .await;
    let (status, answer) = server
        .ops_post(
            "/admin/broadcast",
            Some(OPS_TOKEN),
            json!({ "text": "Server restarts at 18:00 '; --", "world": "arena" }),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    for client in [&mut alice, &mut bob] {
        let (from, name, text) = client
            .until(|m| match m {
                ServerMessage::ChatMessage {
                    from, name, text, ..
                } => Some((*from, name.clone(), text.clone())),
                _ => None,
            })
            .await;
        assert_eq!(from, Uuid::nil());
        assert_eq!(name, "operator");
        assert_eq!(text, "Server restarts at 18:00 '; --");
    }
    for (body, status) in [
        (json!({ "text": "" }), 400),
        (json!({ "text": "x".repeat(281) }), 400),
        (json!({ "text": "hi", "world": "atlantis" }), 404),
    ] {
        let (got, answer) = server
            .ops_post("/admin/broadcast", Some(OPS_TOKEN), body)
            .await;
        assert_eq!(got, status, "{answer}");
    }

    let (status, answer) = server
        .ops_post(
            "/admin/kick",
            Some(OPS_TOKEN),
            json!({ "username": "bobby" }),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let reason = bob
        .until(|m| match m {
            ServerMessage::Kicked { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, KickReason::Admin);
    assert_eq!(
        bob.closed().await,
        Closed::Code(meridian_protocol::close::ADMIN_KICK)
    );
    let (status, answer) = server
        .ops_post(
            "/admin/kick",
            Some(OPS_TOKEN),
            json!({ "username": "nobody-here" }),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = server
        .ops_post("/admin/kick", Some(OPS_TOKEN), json!({}))
        .await;
    assert_eq!(status, 400);
    // Alice is still served.
    let seq = alice.move_to(offset(CENTER, 0.0, 2.0)).await;
    alice.acked(seq).await;
    server.stop().await;
}

#[tokio::test]
async fn live_and_stored_positions_are_answered_for_a_box_and_a_radius() {
    let server = server().await;
    let here = offset(CENTER, 0.0, -100.0);
    let mut alice = server.player("alice", "arena", here, Encoding::Json).await;
    let _far = server
        .player(
            "faraway",
            "arena",
            offset(CENTER, 0.0, 3_000.0),
            Encoding::Json,
        )
        .await;
    let seq = alice.move_to(offset(here, 3.0, 0.0)).await;
    alice.acked(seq).await;
    let world = server
        .store()
        .await
        .worlds()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "arena")
        .unwrap();
    let flag = WorldObject {
        id: Uuid::now_v7(),
        world_id: world.id,
        kind: "flag".into(),
        name: "North gate".into(),
        position: offset(here, 0.0, 20.0),
        properties: json!({ "capture_radius_m": 20 }),
        owner: None,
        version: 0,
    };
    server.store().await.put_world_object(&flag).await.unwrap();

    let near = offset(here, -50.0, -50.0);
    let far = offset(here, 50.0, 50.0);
    let bbox = format!("{},{},{},{}", near.lon, near.lat, far.lon, far.lat);
    let (status, live) = server
        .ops_request(
            Method::GET,
            &format!("/api/players?world=arena&bbox={bbox}"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{live}");
    let names: Vec<&str> = live["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"], "{live}");
    let (status, answer) = server
        .ops_request(
            Method::GET,
            "/api/players?bbox=1,2,3",
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 400, "{answer}");

    // Stored positions: wait for the flush, then ask around alice.
    let url = format!(
        "/api/nearby?world=arena&lon={}&lat={}&radius_m=100",
        here.lon, here.lat
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let (status, found) = server
            .ops_request(Method::GET, &url, Some(OPS_TOKEN), None)
            .await;
        assert_eq!(status, 200, "{found}");
        if !found["players"].as_array().unwrap().is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "never flushed: {found}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let players = found["players"].as_array().unwrap();
    assert_eq!(players.len(), 1, "{found}");
    assert_eq!(players[0]["username"], "alice");
    assert!(players[0]["distance_m"].as_f64().unwrap() < 10.0, "{found}");
    let objects = found["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{found}");
    assert_eq!(objects[0]["name"], "North gate");
    for bad in [
        "/api/nearby?lon=0&lat=95&radius_m=10",
        "/api/nearby?lon=0&lat=0&radius_m=-1",
        "/api/nearby?lon=0&lat=0&radius_m=1000000",
        "/api/nearby?lat=0&radius_m=10",
    ] {
        let (status, answer) = server
            .ops_request(Method::GET, bad, Some(OPS_TOKEN), None)
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{bad}: {answer}");
    }
    server.stop().await;
}
