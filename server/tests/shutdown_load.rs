//! Graceful shutdown under load: the real binary with 1,000 players, each
//! just moved to a spot of its own, gets SIGTERM. New connections are refused,
//! every player gets `Kicked { shutdown }` and close 1001, every position is
//! in the store (the flush interval is a minute, so only the final flush can
//! have written them), and the process exits 0 within 10 s.

mod util;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meridian_protocol::{Encoding, KickReason, LonLat, ServerMessage};
use meridian_server::store::Store;
use util::{offset, Client, ServerProcess, CENTER};
use uuid::Uuid;

const PLAYERS: usize = 1_000;
const OPS_TOKEN: &str = "shutdown-test-ops-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_players_kicks_them_all_flushes_everything_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let store = util::open_store(dir.path()).await;
    util::seed_test_worlds(&store).await;
    let mut server = ServerProcess::start_with_env(
        dir.path(),
        Duration::from_secs(60),
        &[("OPS_TOKEN", OPS_TOKEN), ("RUST_LOG", "error")],
    )
    .await;
    let (game, ops) = (server.game, server.ops);

    // A thousand bot accounts, placed around the centre.
    // Clear of the test worlds' wall (300 m east), so no step is refused.
    let (sw, ne) = (offset(CENTER, -200.0, -200.0), offset(CENTER, 200.0, 200.0));
    let minted: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{ops}/admin/bots"))
        .bearer_auth(OPS_TOKEN)
        .json(&serde_json::json!({
            "count": PLAYERS, "prefix": "shutdown", "world": "arena",
            "within": [sw.lon, sw.lat, ne.lon, ne.lat],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bots: Vec<(Uuid, String)> = minted["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["user_id"].as_str().unwrap().parse().unwrap(),
                t["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(bots.len(), PLAYERS);

    // Everyone joins and steps a metre north; every step is acknowledged.
    let players: Vec<(Uuid, Client, LonLat)> = futures_util::stream::iter(bots)
        .map(|(user_id, token)| async move {
            let mut client = Client::connect(game, Encoding::Bincode, Some(&token), Some("arena"))
                .await
                .expect("a bot connects");
            client.welcome().await;
            let to = offset(client.position, 0.0, 1.0);
            let seq = client.move_to(to).await;
            client.acked(seq).await;
            (user_id, client, to)
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert_eq!(players.len(), PLAYERS);

    // SIGTERM: every socket is told, then closed with 1001.
    let started = Instant::now();
    server.terminate();
    let watchers: Vec<_> = players
        .into_iter()
        .map(|(user_id, mut client, to)| {
            tokio::spawn(async move {
                let mut kicked = false;
                let code = loop {
                    match client.next_within(Duration::from_secs(15)).await {
                        Ok(ServerMessage::Kicked { reason, .. }) => {
                            kicked = reason == KickReason::Shutdown;
                        }
                        Ok(_) => {}
                        Err(closed) => break closed,
                    }
                };
                (user_id, to, kicked, code)
            })
        })
        .collect();
    // New connections are refused while it shuts down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (A listener that no longer accepts may leave the handshake hanging.)
    let attempt = Client::connect(game, Encoding::Bincode, None, None);
    let refused = !matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(_))
    );
    assert!(refused, "a new connection was accepted during shutdown");

    let status = server.exited(Duration::from_secs(10)).await;
    let exit_after = started.elapsed();
    assert!(status.success(), "exit status {status}");
    println!("{PLAYERS} players: exited {exit_after:?} after SIGTERM");
    let mut positions = Vec::new();
    for watcher in watchers {
        let (user_id, to, kicked, code) = watcher.await.unwrap();
        assert!(kicked, "a player was not told of the shutdown");
        assert_eq!(code, util::Closed::Code(1001), "a player's close code");
        positions.push((user_id, to));
    }

    // Every player's last step is stored.
    let arena = util::world_id(&store, "arena").await;
    for (user_id, to) in positions {
        let stored = store
            .position(user_id, arena)
            .await
            .unwrap()
            .expect("stored");
        let (dlon, dlat) = (stored.position.lon - to.lon, stored.position.lat - to.lat);
        assert!(
            dlon.abs() < 1e-6 && dlat.abs() < 1e-6,
            "a lost move: {stored:?} vs {to:?}"
        );
    }
}
