//! `POST /admin/bots` on the ops port: only with the admin token, capped, and
//! handing out tokens that join the game like any login.

mod util;

use meridian_protocol::Encoding;
use serde_json::json;
use util::{offset, Client, TestServer, CENTER};

const OPS_TOKEN: &str = "ops-token-for-tests-0123";

async fn server() -> TestServer {
    TestServer::start_with(|c| c.ops_token = Some(OPS_TOKEN.into())).await
}

#[tokio::test]
async fn the_admin_api_needs_the_ops_token() {
    let server = server().await;
    let body = json!({ "count": 1 });
    let (status, answer) = server.ops_post("/admin/bots", None, body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "unauthenticated");
    let (status, answer) = server
        .ops_post(
            "/admin/bots",
            Some("not-the-ops-token-at-all"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "forbidden");
    server.stop().await;

    // Without OPS_TOKEN no ops token works (only admins' access tokens), and
    // the refusal says why.
    let server = TestServer::start().await;
    let (status, answer) = server.ops_post("/admin/bots", Some(OPS_TOKEN), body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "forbidden");
    assert!(answer["message"].as_str().unwrap().contains("OPS_TOKEN"));
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let server = server().await;
    for (body, fragment) in [
        (json!({ "count": 20_001 }), "at most 20000"),
        (json!({ "count": 1, "prefix": "guest" }), "reserved"),
        (json!({ "count": 1, "prefix": "bad name" }), "prefix"),
        (
            json!({ "count": 1, "within": [5.0, 52.0, 4.0, 53.0] }),
            "min < max",
        ),
        (json!({ "count": "many" }), "count"),
    ] {
        let (status, answer) = server.ops_post("/admin/bots", Some(OPS_TOKEN), body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(fragment),
            "{answer} should mention {fragment}"
        );
    }
    let (status, answer) = server
        .ops_post(
            "/admin/bots",
            Some(OPS_TOKEN),
            json!({ "count": 1, "world": "atlantis" }),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "unknown_world");
    server.stop().await;
}

#[tokio::test]
async fn bot_tokens_join_the_game_placed_inside_the_box() {
    let server = server().await;
    let sw = offset(CENTER, 100.0, 100.0);
    let ne = offset(CENTER, 200.0, 200.0);
    let body = json!({
        "count": 3,
        "prefix": "loadbot",
        "world": "arena",
        "within": [sw.lon, sw.lat, ne.lon, ne.lat],
    });
    let (status, answer) = server
        .ops_post("/admin/bots", Some(OPS_TOKEN), body.clone())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["world"], "arena");
    let tokens = answer["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    // The arena's blocked square is reported so bots can walk around it.
    let obstacles = answer["obstacles"].as_array().unwrap();
    assert!(obstacles.iter().any(|o| o["kind"] == "blocked"), "{answer}");

    for entry in tokens {
        let token = entry["token"].as_str().unwrap();
        let mut client = Client::connect(server.game, Encoding::Bincode, Some(token), None)
            .await
            .expect("a bot token authenticates the upgrade");
        client.welcome().await;
        assert_eq!(client.player_id.to_string(), entry["user_id"]);
        let p = client.position;
        assert!(
            (sw.lon..=ne.lon).contains(&p.lon) && (sw.lat..=ne.lat).contains(&p.lat),
            "a bot joined at {p:?}, outside the box"
        );
    }

    // Asking again reuses the same accounts with new sessions.
    let (status, again) = server.ops_post("/admin/bots", Some(OPS_TOKEN), body).await;
    assert_eq!(status, 200, "{again}");
    let ids = |a: &serde_json::Value| {
        a["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["user_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&answer), ids(&again));
    assert_ne!(answer["tokens"][0]["token"], again["tokens"][0]["token"]);

    // A later batch numbers on from `first`.
    let (status, next) = server
        .ops_post(
            "/admin/bots",
            Some(OPS_TOKEN),
            json!({ "count": 1, "prefix": "loadbot", "first": 3, "world": "arena" }),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert!(!ids(&answer).contains(&ids(&next)[0]));
    server.stop().await;
}

#[tokio::test]
async fn bots_never_take_over_password_accounts() {
    let server = server().await;
    server.login("taken-0").await;
    let (status, answer) = server
        .ops_post(
            "/admin/bots",
            Some(OPS_TOKEN),
            json!({ "count": 1, "prefix": "taken" }),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("taken-0"));
    server.stop().await;
}
