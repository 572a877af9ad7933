//! Nothing secret or personal reaches the log: the real binary runs at
//! `RUST_LOG=debug` while accounts register, log in (rightly and wrongly),
//! refresh, play at a precise spot, chat, get kicked and log out, and the
//! captured log is searched for every password, token, secret, device id
//! and coordinate involved.

mod util;

use std::time::Duration;

use meridian_protocol::{ChatChannel, ClientMessage, Encoding, LonLat};
use util::{Client, ServerProcess};

const JWT_SECRET: &str = "log-test-jwt-secret-0123456789abcdef-XYZ";
const OPS_TOKEN: &str = "log-test-ops-token-QWERTY-0123456789";
const PASSWORD: &str = "correct-horse-battery-Staple-42";
const WRONG_PASSWORD: &str = "wrong-horse-battery-Staple-99";
const DEVICE_ID: &str = "device-secret-0123456789-ABCDEFGH";

/// A spot with many digits, easy to find in a log.
const SPOT: LonLat = LonLat {
    lon: 4.901_234_5,
    lat: 52.371_234_5,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_password_or_position_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // The test worlds, with the demo world's defaults: the binary seeds them.
    let store = util::open_store(dir.path()).await;
    util::seed_test_worlds(&store).await;
    store.close().await;
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start_with_output(
        dir.path(),
        Duration::from_millis(200),
        &[
            ("RUST_LOG", "debug"),
            ("JWT_SECRET", JWT_SECRET),
            ("OPS_TOKEN", OPS_TOKEN),
        ],
        Some(&log),
    )
    .await;
    let http = reqwest::Client::new();
    let game = server.game;
    let post = |path: &str, body: serde_json::Value| {
        let request = http.post(format!("http://{game}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };

    let credentials = serde_json::json!({ "username": "loggy", "password": PASSWORD });
    let (status, _) = post("/api/register", credentials.clone()).await;
    assert_eq!(status, 201);
    let (status, _) = post(
        "/api/login",
        serde_json::json!({ "username": "loggy", "password": WRONG_PASSWORD }),
    )
    .await;
    assert_eq!(status, 401);
    let (status, login) = post("/api/login", credentials).await;
    assert_eq!(status, 200, "{login}");
    let access = login["token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let user_id: uuid::Uuid = login["user_id"].as_str().unwrap().parse().unwrap();
    let (status, refreshed) = post(
        "/api/refresh",
        serde_json::json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let access2 = refreshed["token"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    // The old refresh token again: taken as theft, the session is revoked.
    let (status, _) = post(
        "/api/refresh",
        serde_json::json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, 401);
    let (status, guest) = post("/api/guest", serde_json::json!({ "device_id": DEVICE_ID })).await;
    assert_eq!(status, 200, "{guest}");
    let guest_token = guest["token"].as_str().unwrap().to_owned();

    // A guest plays at the spot, chats, and is kicked by an operator.
    let store = util::open_store(dir.path()).await;
    let guest_id = guest["user_id"].as_str().unwrap().parse().unwrap();
    util::place_in(&store, guest_id, "arena", SPOT).await;
    let mut player = Client::connect(game, Encoding::Json, Some(&guest_token), Some("arena"))
        .await
        .unwrap();
    player.welcome().await;
    let to = LonLat {
        lon: SPOT.lon + 0.000_012_3,
        lat: SPOT.lat + 0.000_004_5,
    };
    let seq = player.move_to(to).await;
    player.acked(seq).await;
    player
        .send(&ClientMessage::Chat {
            channel: ChatChannel::Nearby,
            text: "meet me at the bridge".into(),
        })
        .await;
    // A wrong token on the socket, and on the ops port.
    assert!(
        Client::connect(game, Encoding::Json, Some(&format!("{access2}x")), None)
            .await
            .is_err()
    );
    let ops = format!("http://{}", server.ops);
    let status = http
        .get(format!("{ops}/api/players"))
        .bearer_auth("not-the-ops-token")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    let status = http
        .post(format!("{ops}/admin/kick"))
        .bearer_auth(OPS_TOKEN)
        .json(&serde_json::json!({ "user_id": guest_id }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    player.closed().await;
    // Positions were flushed (the flusher logs at debug).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = http
        .post(format!("http://{game}/api/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_client_error() || status.is_success());
    server.terminate();
    assert!(server.exited(Duration::from_secs(10)).await.success());
    let _ = user_id;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 10,
        "the log is too short to mean anything:\n{text}"
    );
    let coordinate = |v: f64| format!("{v:.5}");
    for (what, needle) in [
        ("the JWT secret", JWT_SECRET.to_owned()),
        ("the ops token", OPS_TOKEN.to_owned()),
        ("a password", PASSWORD.to_owned()),
        ("a wrong password", WRONG_PASSWORD.to_owned()),
        ("a device id", DEVICE_ID.to_owned()),
        ("an access token", access.clone()),
        ("a refreshed access token", access2.clone()),
        ("a guest's token", guest_token.clone()),
        ("a refresh token", refresh.clone()),
        ("a rotated refresh token", refresh2.clone()),
        ("the spot's latitude", coordinate(SPOT.lat)),
        ("the spot's longitude", coordinate(SPOT.lon)),
        ("the walk's latitude", coordinate(to.lat)),
        ("the walk's longitude", coordinate(to.lon)),
    ] {
        // Tokens are long: a fragment of one is as bad as all of it.
        let fragment = if needle.len() > 40 {
            &needle[needle.len() - 24..]
        } else {
            &needle[..]
        };
        assert!(
            !text.contains(fragment),
            "{what} is in the log:\n{}",
            text.lines()
                .filter(|l| l.contains(fragment))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
