//! Many players moving at once, as the load beside a fault: bot accounts
//! minted through the admin API, each stepping back and forth along a metre
//! every 200 ms. Their frames are read as they come but not decoded: hundreds
//! of decoders would be the test's bottleneck, not the shard's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meridian_protocol::{ClientMessage, Encoding, LonLat};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{offset, Client, TestServer};

/// How often each mover moves.
const EVERY: Duration = Duration::from_millis(200);

/// Players moving until `finish`.
pub struct Movers {
    count: usize,
    stop: Arc<AtomicBool>,
    moves: Arc<AtomicU64>,
    players: Vec<JoinHandle<bool>>,
}

/// Bot tokens: `count` accounts named `prefix-…` placed in `arena` within
/// the box `(south-west, north-east)`.
pub async fn mint(
    server: &TestServer,
    ops_token: &str,
    prefix: &str,
    count: usize,
    (sw, ne): (LonLat, LonLat),
) -> Vec<String> {
    let (status, minted) = server
        .ops_post(
            "/admin/bots",
            Some(ops_token),
            serde_json::json!({
                "count": count, "prefix": prefix, "world": "arena",
                "within": [sw.lon, sw.lat, ne.lon, ne.lat],
            }),
        )
        .await;
    assert_eq!(status, 200, "minting bots: {minted}");
    let tokens: Vec<String> = minted["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), count);
    tokens
}

impl Movers {
    /// `count` players minted in `area` of `arena`, connected and moving.
    pub async fn start(
        server: &TestServer,
        ops_token: &str,
        prefix: &str,
        count: usize,
        area: (LonLat, LonLat),
    ) -> Self {
        let tokens = mint(server, ops_token, prefix, count, area).await;
        let stop = Arc::new(AtomicBool::new(false));
        let moves = Arc::new(AtomicU64::new(0));
        let mut players = Vec::new();
        for token in tokens {
            let mut client =
                Client::connect(server.game, Encoding::Bincode, Some(&token), Some("arena"))
                    .await
                    .unwrap();
            client.welcome().await;
            let (stop, moves) = (Arc::clone(&stop), Arc::clone(&moves));
            players.push(tokio::spawn(async move {
                let mut at = client.position;
                let mut seq = 0u32;
                let mut every = tokio::time::interval(EVERY);
                while !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        _ = every.tick() => {
                            seq += 1;
                            at = offset(at, if seq % 2 == 0 { 1.0 } else { -1.0 }, 0.0);
                            let frame = Encoding::Bincode.encode(&ClientMessage::Move {
                                seq, lon: at.lon, lat: at.lat, heading: 0.0, accuracy_m: None, fix_time_ms: None,
                            });
                            if client.socket.send(Message::Binary(frame.into())).await.is_err() {
                                return false;
                            }
                            moves.fetch_add(1, Ordering::Relaxed);
                        }
                        frame = client.socket.next() => match frame {
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                            Some(Ok(_)) => {}
                        },
                    }
                }
                true
            }));
        }
        Self {
            count,
            stop,
            moves,
            players,
        }
    }

    /// Check that every player is still moving (at least three moves each
    /// in a second, of five) and was connected to the end, then stop them.
    pub async fn finish(self) {
        let before = self.moves.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            self.moves.load(Ordering::Relaxed) > before + self.count as u64 * 3,
            "the moving players stalled"
        );
        self.stop.store(true, Ordering::Relaxed);
        for player in self.players {
            assert!(player.await.unwrap(), "a moving player was disconnected");
        }
    }
}
