//! Flags on one shard, through real WebSocket players and the admin API:
//! captured after the dwell time and not before, progress lost by leaving
//! early, contested flags that do not flip, no capture in a safe area, and
//! every capture written to the store before it is announced.

mod util;

use std::time::Duration;

use meridian_protocol::{FlagChange, LonLat, ServerMessage};
use meridian_server::store::now_ms;
use util::{offset, Client, TestServer, CENTER};
use uuid::Uuid;

const TOKEN: &str = "flags-test-ops-token";

/// The capture time of the test flags.
const CAPTURE_S: f64 = 2.0;

/// Where the test flag stands: north of the spawn square, clear of every
/// area of the test worlds.
fn flag_spot() -> LonLat {
    offset(CENTER, 0.0, 150.0)
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.ops_token = Some(TOKEN.into())).await
}

/// Create a flag through the admin API; returns its id.
async fn create_flag(server: &TestServer, name: &str, at: LonLat) -> Uuid {
    let properties = serde_json::json!({
        "name": name,
        "world": "arena",
        "capture_radius_m": 20,
        "capture_time_s": CAPTURE_S,
    });
    server.create_flag(TOKEN, properties, at).await
}

/// A player of `team` at `at`, told of the flags.
async fn player(server: &TestServer, team: &str, at: LonLat) -> Client {
    let mut client = server.team_player(team, "arena", at).await;
    let (own, flags) = client
        .until(|m| match m {
            ServerMessage::Flags { team, flags, .. } => Some((team.clone(), flags.clone())),
            _ => None,
        })
        .await;
    assert_eq!(own.as_deref(), Some(team));
    assert!(!flags.is_empty(), "the player was told of no flag");
    client
}

/// Walk at a legal 5 m/s.
async fn walk(client: &mut Client, to: LonLat) {
    client.walk(to, 0.5, 10.0).await;
}

fn is_captured(flag: Uuid) -> impl FnMut(&ServerMessage) -> bool {
    move |m| matches!(m, ServerMessage::FlagEvent { flag_id, change: FlagChange::Captured { .. }, .. } if *flag_id == flag)
}

async fn captures(server: &TestServer) -> usize {
    let store = server.store().await;
    let arena = util::world_id(store.as_ref(), "arena").await;
    store.captures(arena, 0).await.unwrap().len()
}

#[tokio::test]
async fn a_flag_is_captured_after_its_dwell_time_and_not_before() {
    let server = server().await;
    let spot = flag_spot();
    let flag = create_flag(&server, "Tower", spot).await;
    let mut red = player(&server, "red", offset(spot, 0.0, -40.0)).await;
    // Far from the flag, but in the same world: told of the capture too.
    let mut blue = player(&server, "blue", offset(CENTER, 0.0, -200.0)).await;

    walk(&mut red, offset(spot, 0.0, -5.0)).await;
    red.flag_event(flag, |c| (*c == FlagChange::Enter).then_some(()))
        .await;
    let done_ms = red
        .flag_event(flag, |c| match c {
            FlagChange::Capturing { team, done_ms } if team == "red" => Some(*done_ms),
            _ => None,
        })
        .await;
    let red_player = red.player_id;
    let (capture_id, score) = red
        .flag_event(flag, |c| match c {
            FlagChange::Captured {
                capture_id,
                team,
                player_id,
                score,
                ..
            } if team == "red" => {
                assert_eq!(*player_id, red_player, "credited to someone else");
                Some((*capture_id, *score))
            }
            _ => None,
        })
        .await;
    // Not before the dwell time: `done_ms` is when the capture started plus
    // the capture time, on the server's clock (this process's).
    let at = now_ms() as u64;
    assert!(
        at + 60 >= done_ms,
        "captured {} ms before the {CAPTURE_S} s dwell time was over",
        done_ms - at
    );
    assert_eq!(score, 1);
    // Everyone in the world hears of it, once.
    let heard = blue
        .flag_event(flag, |c| match c {
            FlagChange::Captured { capture_id, .. } => Some(*capture_id),
            _ => None,
        })
        .await;
    assert_eq!(heard, capture_id);
    blue.never(
        Duration::from_secs(1),
        "a capture announced twice",
        is_captured(flag),
    )
    .await;

    // It was stored before it was announced, and the scores show it.
    assert_eq!(captures(&server).await, 1);
    let arena = server.world_status("arena").await;
    let score_of = |team: &str| {
        arena["teams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == team)
            .map(|t| t["score"].as_i64().unwrap())
    };
    assert_eq!(
        (score_of("red"), score_of("blue")),
        (Some(1), Some(0)),
        "{arena}"
    );
    let owner = arena["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == flag.to_string())
        .map(|f| f["owner"].clone());
    assert_eq!(owner, Some(serde_json::json!("red")), "{arena}");

    // Red holds it now: staying there captures nothing more.
    red.never(
        Duration::from_secs_f64(CAPTURE_S + 1.0),
        "the owner captured its own flag",
        is_captured(flag),
    )
    .await;
    assert_eq!(captures(&server).await, 1);

    // Scores reset through the admin API, and the players are told.
    let (status, body) = server
        .ops_post(
            "/admin/scores/reset",
            Some(TOKEN),
            serde_json::json!({ "world": "arena" }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let teams = blue
        .until(|m| match m {
            ServerMessage::Flags { teams, .. } if teams.iter().all(|t| t.score == 0) => {
                Some(teams.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(teams.len(), 2);
}

#[tokio::test]
async fn leaving_early_resets_the_capture_and_a_contested_flag_does_not_flip() {
    let server = server().await;
    let spot = flag_spot();
    let flag = create_flag(&server, "Bridge", spot).await;
    // Both start 4 m outside the 20 m zone, on opposite sides.
    let (red_out, blue_out) = (offset(spot, 0.0, -24.0), offset(spot, 0.0, 24.0));
    let (red_in, blue_in) = (offset(spot, 0.0, -12.0), offset(spot, 0.0, 12.0));
    let mut red = player(&server, "red", red_out).await;
    let mut blue = player(&server, "blue", blue_out).await;

    // Red dips into the zone and out again well within the capture time:
    // its progress is lost.
    fast(&mut red, offset(spot, 0.0, -17.0)).await;
    fast(&mut red, red_out).await;
    red.flag_event(flag, |c| (*c == FlagChange::Enter).then_some(()))
        .await;
    red.flag_event(flag, |c| {
        matches!(c, FlagChange::Capturing { team, .. } if team == "red").then_some(())
    })
    .await;
    red.flag_event(flag, |c| (*c == FlagChange::Leave).then_some(()))
        .await;
    red.flag_event(flag, |c| (*c == FlagChange::Reset).then_some(()))
        .await;
    red.never(
        Duration::from_secs_f64(CAPTURE_S + 0.5),
        "a capture by a player who left",
        is_captured(flag),
    )
    .await;
    assert_eq!(captures(&server).await, 0);

    // Both walk in at once: whoever is first starts capturing, and the other
    // contests it within a fraction of the capture time.
    tokio::join!(fast(&mut red, red_in), fast(&mut blue, blue_in));
    red.flag_event(flag, |c| (*c == FlagChange::Contested).then_some(()))
        .await;
    // Contested for longer than the capture time: nobody captures.
    red.never(
        Duration::from_secs_f64(CAPTURE_S * 2.0),
        "a contested flag flipped",
        is_captured(flag),
    )
    .await;
    assert_eq!(captures(&server).await, 0);

    // Blue leaves: red, alone again, captures it.
    fast(&mut blue, blue_out).await;
    red.flag_event(flag, |c| match c {
        FlagChange::Captured { team, .. } if team == "red" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(captures(&server).await, 1);
}

/// Walk at 8 m/s, under the arena's 10 m/s limit.
async fn fast(client: &mut Client, to: LonLat) {
    client.walk(to, 0.8, 10.0).await;
}

#[tokio::test]
async fn a_flag_in_a_safe_area_is_never_captured() {
    let server = server().await;
    let spot = flag_spot();
    // A safe square around the spot, then the flag in it.
    let (sw, ne) = (offset(spot, -30.0, -30.0), offset(spot, 30.0, 30.0));
    let (status, body) = server
        .ops_post(
            "/admin/areas",
            Some(TOKEN),
            serde_json::json!({
                "type": "Feature",
                "geometry": { "type": "Polygon", "coordinates": [[
                    [sw.lon, sw.lat], [ne.lon, sw.lat], [ne.lon, ne.lat], [sw.lon, ne.lat], [sw.lon, sw.lat]
                ]] },
                "properties": { "name": "Sanctuary", "kind": "safe", "world": "arena" },
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let flag = create_flag(&server, "Shrine", spot).await;
    let mut red = server
        .team_player("red", "arena", offset(spot, 0.0, -50.0))
        .await;
    let info = red
        .until(|m| match m {
            ServerMessage::Flags { flags, .. } => flags.iter().find(|f| f.id == flag).cloned(),
            _ => None,
        })
        .await;
    assert!(!info.capturable, "{info:?}");

    walk(&mut red, offset(spot, 0.0, -5.0)).await;
    red.flag_event(flag, |c| (*c == FlagChange::Enter).then_some(()))
        .await;
    red.never(
        Duration::from_secs_f64(CAPTURE_S * 2.0),
        "a capture in a safe area",
        |m| {
            matches!(
                m,
                ServerMessage::FlagEvent {
                    change: FlagChange::Capturing { .. } | FlagChange::Captured { .. },
                    ..
                }
            )
        },
    )
    .await;
    assert_eq!(captures(&server).await, 0);
}

#[tokio::test]
async fn flags_are_created_moved_and_deleted_through_the_admin_api() {
    let server = server().await;
    let spot = flag_spot();
    let mut red = player_without_flags(&server, "red", offset(spot, 0.0, -40.0)).await;
    let flag = create_flag(&server, "Mill", spot).await;
    // Every player is sent the flags afresh.
    red.until(|m| match m {
        ServerMessage::Flags { flags, .. } if flags.iter().any(|f| f.id == flag) => Some(()),
        _ => None,
    })
    .await;

    // Invalid bodies are refused with the reason, and nothing is stored.
    for (properties, geometry, expected) in [
        (
            serde_json::json!({"name": "x", "capture_radius_m": 5000}),
            point(spot),
            "capture_radius_m",
        ),
        (
            serde_json::json!({"name": "x", "capture_time_s": -1}),
            point(spot),
            "capture_time_s",
        ),
        (
            serde_json::json!({"name": "x", "owner": "green"}),
            point(spot),
            "owner",
        ),
        (serde_json::json!({"name": ""}), point(spot), "name"),
        (
            serde_json::json!({"name": "x"}),
            serde_json::json!({"type": "Point", "coordinates": [4.9, 95.0]}),
            "longitude/latitude",
        ),
        (
            serde_json::json!({"name": "x"}),
            serde_json::json!({"type": "LineString", "coordinates": [[4.9, 52.0], [4.8, 52.1]]}),
            "Point",
        ),
    ] {
        let (status, body) = server
            .ops_post(
                "/admin/flags",
                Some(TOKEN),
                serde_json::json!({"type": "Feature", "geometry": geometry, "properties": properties}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{body}"
        );
    }
    let (_, list) = server
        .ops_request(
            reqwest::Method::GET,
            "/admin/flags?world=arena",
            Some(TOKEN),
            None,
        )
        .await;
    let listed = list["features"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    // Without the token, nothing.
    let (status, _) = server
        .ops_request(reqwest::Method::GET, "/admin/flags", None, None)
        .await;
    assert_eq!(status, 401);

    // Moved: the players are told where it is now, with the same owner.
    let moved_to = offset(spot, 10.0, 0.0);
    let (status, body) = server
        .ops_request(
            reqwest::Method::PUT,
            &format!("/admin/flags/{flag}"),
            Some(TOKEN),
            Some(serde_json::json!({
                "type": "Feature",
                "geometry": point(moved_to),
                "properties": {"name": "Mill", "world": "arena", "owner": "blue"},
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["properties"]["owner"], "blue", "{body}");
    let info = red
        .until(|m| match m {
            ServerMessage::Flags { flags, .. } => flags
                .iter()
                .find(|f| f.id == flag && (f.position.lon - moved_to.lon).abs() < 1e-9)
                .cloned(),
            _ => None,
        })
        .await;
    assert_eq!(info.owner.as_deref(), Some("blue"));

    // Deleted: gone from the list and from the players' flags.
    let (status, _) = server
        .ops_request(
            reqwest::Method::DELETE,
            &format!("/admin/flags/{flag}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    red.until(|m| match m {
        ServerMessage::Flags { flags, .. } if flags.iter().all(|f| f.id != flag) => Some(()),
        _ => None,
    })
    .await;
    let (status, _) = server
        .ops_request(
            reqwest::Method::DELETE,
            &format!("/admin/flags/{flag}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

fn point(at: LonLat) -> serde_json::Value {
    serde_json::json!({"type": "Point", "coordinates": [at.lon, at.lat]})
}

/// A player in a world that may have no flags yet.
async fn player_without_flags(server: &TestServer, team: &str, at: LonLat) -> Client {
    server.team_player(team, "arena", at).await
}
