//! The ops port's status endpoint.

mod util;

use meridian_protocol::Encoding;
use util::{offset, TestServer, CENTER};

#[tokio::test]
async fn status_reports_players_and_tick_percentiles_without_secrets() {
    let server =
        TestServer::start_with(|c| c.ops_token = Some("ops-token-ops-token-0123".into())).await;
    let _a = server
        .player("status_a", "fast", CENTER, Encoding::Bincode)
        .await;
    let _b = server
        .player(
            "status_b",
            "fast",
            offset(CENTER, 10.0, 0.0),
            Encoding::Json,
        )
        .await;
    // Percentiles are refreshed once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, body) = server.ops_get("/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["shard_id"], "shard-1");
    assert_eq!(body["config"]["tick_hz"], 20);
    let worlds = body["worlds"].as_array().unwrap();
    let fast = worlds.iter().find(|w| w["name"] == "fast").unwrap();
    assert_eq!(fast["players"], 2);
    let arena = worlds.iter().find(|w| w["name"] == "arena").unwrap();
    assert_eq!(arena["players"], 0);
    let tick = &fast["tick_us"];
    assert!(fast["tick"].as_u64().unwrap() >= 20);
    assert!(tick["p50"].as_u64().unwrap() <= tick["p99"].as_u64().unwrap());
    assert!(tick["p99"].as_u64().unwrap() <= tick["max"].as_u64().unwrap());
    let text = body.to_string();
    for secret in ["test-secret", "ops-token", "jwt", "password"] {
        assert!(!text.contains(secret), "status leaks {secret}: {text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_shard_alone_lists_itself_in_api_shards() {
    let server = TestServer::start().await;
    let _player = server
        .guest_player("arena", offset(CENTER, 0.0, -100.0), Encoding::Bincode)
        .await;
    // The count is the latest snapshot's, and the `Welcome` goes out during
    // the tick that publishes it: the answer may be a tick behind the join.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let body = loop {
        let (status, body) = server.ops_get("/api/shards").await;
        assert_eq!(status, 200, "{body}");
        if body["shards"][0]["players"] == 1 || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let shards = body["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1, "{body}");
    assert_eq!(shards[0]["shard_id"], "shard-1");
    assert_eq!(
        shards[0]["game_addr"],
        server.game.to_string(),
        "the bound address"
    );
    assert_eq!(shards[0]["players"], 1);
    server.stop().await;
}

#[tokio::test]
async fn readiness_needs_the_binarys_migrations_applied() {
    let server = TestServer::start().await;
    let (status, ready) = server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["migrations"], "ok", "{ready}");
    // Someone reverts the latest migration under the running shard: it stops
    // being ready, and says why, until the migration is applied again.
    let database = meridian_server::store::Database::open(
        None,
        &server.dir,
        meridian_server::config::DbPool::default(),
    )
    .await
    .unwrap();
    let reverted = database.revert(None).await.unwrap();
    assert_eq!(reverted.len(), 1);
    let (status, ready) = server.ops_get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["migrations"], "pending", "{ready}");
    assert_eq!(ready["checks"]["database"], "ok", "{ready}");
    database.run().await.unwrap();
    let (status, ready) = server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    server.stop().await;
}
