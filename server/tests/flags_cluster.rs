//! Flags and nearby chat across shards on one PostgreSQL and one Redis: a
//! capture is announced on every shard exactly once, even when the shard that
//! committed it is killed right after the commit; a capture nobody announced
//! is found and announced once; while the database is down captures are
//! refused and never announced; nearby chat reaches a neighbour on another
//! shard and not a player 1 km away.

mod util;

use std::time::Duration;

use meridian_protocol::{ChatChannel, ClientMessage, FlagChange, LonLat, ServerMessage};
use meridian_server::store::{now_ms, Capture, Store};
use util::cluster::{self, Cluster};
use util::pg::{PgCluster, TestDatabase};
use util::{create_flag_at, offset, Client, TestServer, CENTER};
use uuid::Uuid;

const FLUSH: Duration = Duration::from_millis(200);

const OPS_TOKEN: &str = "flags-cluster-ops-token";

/// How long a capture may take to reach every shard when its own shard died:
/// the survivors' sweep runs every 2 s for captures unannounced for 5 s.
const ORPHAN_WAIT: Duration = Duration::from_secs(20);

fn flag_spot() -> LonLat {
    offset(CENTER, 0.0, 150.0)
}

/// The properties of the test flags: a 2 s capture time.
fn flag_properties() -> serde_json::Value {
    serde_json::json!({ "name": "Beacon", "world": "arena", "capture_time_s": 2 })
}

/// A cluster of shards whose `arena` has one flag at `flag_spot()`.
struct Game {
    cluster: Cluster,
    world_id: Uuid,
    flag: Uuid,
}

impl Game {
    async fn start(n: usize) -> Self {
        let cluster = Cluster::start(n).await;
        let world_id = cluster.world_id("arena").await;
        let ops = cluster.shards[0].ops;
        let flag = create_flag_at(
            &cluster.http,
            ops,
            cluster::OPS_TOKEN,
            flag_properties(),
            flag_spot(),
        )
        .await;
        // Every shard has reloaded its flags before anyone joins.
        for shard in &cluster.shards {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let (_, status) = shard.ops_get("/api/status").await;
                let known = status["worlds"].as_array().unwrap().iter().any(|w| {
                    w["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["id"] == flag.to_string()))
                });
                if known {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{status}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Self {
            cluster,
            world_id,
            flag,
        }
    }

    /// A new guest of `team` on shard `i` at `at`, connected and welcomed.
    async fn player(&self, i: usize, team: &str, at: LonLat) -> Client {
        self.cluster
            .guest(i, serde_json::json!({ "team": team }), Some(at))
            .await
    }

    async fn capture_rows(&self) -> i64 {
        let pool = self.cluster.db.pool().await;
        let rows = sqlx::query_scalar("SELECT count(*) FROM flag_captures")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }
}

/// Wait up to `within` for a `Captured` of `flag`; returns the capture id.
async fn captured(client: &mut Client, flag: Uuid, within: Duration) -> Uuid {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no capture announced within {within:?}");
        match client.next_within(left).await {
            Ok(ServerMessage::FlagEvent {
                flag_id,
                change: FlagChange::Captured { capture_id, .. },
                ..
            }) if flag_id == flag => return capture_id,
            Ok(_) => {}
            Err(closed) => panic!("socket closed: {closed:?}"),
        }
    }
}

fn is_captured(flag: Uuid) -> impl FnMut(&ServerMessage) -> bool {
    move |m| matches!(m, ServerMessage::FlagEvent { flag_id, change: FlagChange::Captured { .. }, .. } if *flag_id == flag)
}

#[tokio::test]
async fn a_capture_is_announced_once_on_every_shard_even_when_its_shard_dies() {
    let mut game = Game::start(2).await;
    let spot = flag_spot();
    let mut red = game.player(0, "red", offset(spot, 0.0, -40.0)).await;
    // On the other shard, far from the flag, in the same world.
    let mut blue = game.player(1, "blue", offset(CENTER, 0.0, -200.0)).await;

    red.walk(offset(spot, 0.0, -5.0), 0.5, 10.0).await;
    // Kill the capturing shard as soon as the capture is committed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while game.capture_rows().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no capture was committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    game.cluster.shards[0].kill();

    // The survivor announces it, once, whether the dead shard got its
    // announcement out or the sweep found it unannounced.
    let capture_id = captured(&mut blue, game.flag, ORPHAN_WAIT).await;
    blue.never(
        Duration::from_secs(8),
        "a capture announced twice",
        is_captured(game.flag),
    )
    .await;
    let stored = game.cluster.store.captures(game.world_id, 0).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].capture.id, capture_id);
    assert_eq!(stored[0].capture.team, "red");
    assert_eq!(stored[0].score, 1);
    // Nothing is left unannounced.
    let orphans = game
        .cluster
        .store
        .unannounced_captures(now_ms(), 10)
        .await
        .unwrap();
    assert!(orphans.is_empty(), "{orphans:?}");
}

#[tokio::test]
async fn a_committed_capture_nobody_announced_is_announced_once() {
    let game = Game::start(2).await;
    let mut watchers = vec![
        game.player(0, "blue", offset(CENTER, 0.0, -200.0)).await,
        game.player(1, "red", offset(CENTER, 0.0, -250.0)).await,
    ];
    // What a shard killed between its commit and its announcement leaves
    // behind: a committed capture, unannounced.
    let capture = Capture {
        id: Uuid::now_v7(),
        world_id: game.world_id,
        flag_id: game.flag,
        user_id: watchers[1].player_id,
        name: "ghost of a dead shard".into(),
        team: "red".into(),
        version: 0,
        captured_at_ms: now_ms(),
    };
    let outcome = game.cluster.store.capture_flag(&capture).await.unwrap();
    assert!(
        matches!(
            outcome,
            meridian_server::store::CaptureOutcome::Committed { .. }
        ),
        "{outcome:?}"
    );
    for watcher in &mut watchers {
        let announced = captured(watcher, game.flag, ORPHAN_WAIT).await;
        assert_eq!(announced, capture.id);
    }
    for watcher in &mut watchers {
        watcher
            .never(
                Duration::from_secs(5),
                "a capture announced twice",
                is_captured(game.flag),
            )
            .await;
    }
    assert!(game
        .cluster
        .store
        .unannounced_captures(now_ms(), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn while_the_database_is_down_captures_are_refused_and_never_announced() {
    let pg = PgCluster::start();
    let db = TestDatabase::create_in(&pg.admin_url()).await;
    let server = TestServer::start_pg(&db.url, |c| {
        c.flush_interval = FLUSH;
        c.db_pool.acquire_timeout = Duration::from_secs(2);
        c.ops_token = Some(OPS_TOKEN.into());
    })
    .await;
    let flag_id = server
        .create_flag(OPS_TOKEN, flag_properties(), flag_spot())
        .await;
    let spot = flag_spot();
    let mut red = server
        .team_player("red", "arena", offset(spot, 0.0, -24.0))
        .await;
    // Just inside the zone at 8 m/s, well within the capture time.
    red.walk(offset(spot, 0.0, -15.0), 0.8, 10.0).await;
    red.flag_event(flag_id, |c| {
        matches!(c, FlagChange::Capturing { .. }).then_some(())
    })
    .await;

    // The database goes away before the dwell time is over.
    pg.halt();
    let refused = async {
        loop {
            match red.next_within(Duration::from_secs(20)).await {
                Ok(ServerMessage::FlagEvent {
                    change: FlagChange::Refused,
                    ..
                }) => return,
                Ok(message) => assert!(
                    !is_captured(flag_id)(&message),
                    "announced while the database was down: {message:?}"
                ),
                Err(closed) => panic!("socket closed: {closed:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .expect("the capture was never refused");

    // Back: holding the zone captures it, and exactly one capture is stored.
    pg.resume();
    pg.wait_ready(Duration::from_secs(10)).await;
    captured(&mut red, flag_id, Duration::from_secs(30)).await;
    let pool = db.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM flag_captures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "a refused capture was written after all");
}

#[tokio::test]
async fn nearby_chat_reaches_a_neighbour_on_another_shard_and_not_a_player_far_away() {
    let game = Game::start(2).await;
    let here = offset(CENTER, 0.0, -200.0);
    let mut speaker = game.player(0, "red", here).await;
    let mut neighbour = game.player(1, "blue", offset(here, 30.0, 0.0)).await;
    let mut far = game.player(1, "blue", offset(here, 0.0, -1_000.0)).await;
    // The neighbour's shard follows the speaker's cell once it shows the
    // speaker as a ghost.
    neighbour.entered_as(speaker.player_id).await;

    speaker
        .send(&ClientMessage::Chat {
            channel: ChatChannel::Nearby,
            text: "anyone near the bridge?".into(),
        })
        .await;
    let line = heard(&mut neighbour).await;
    assert_eq!(
        line,
        (
            ChatChannel::Nearby,
            speaker.player_id,
            "anyone near the bridge?".into()
        )
    );
    assert_eq!(heard(&mut speaker).await.0, ChatChannel::Nearby);

    // World chat still reaches the far player, and the nearby line never did.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    speaker
        .send(&ClientMessage::Chat {
            channel: ChatChannel::World,
            text: "hello world".into(),
        })
        .await;
    let first = heard(&mut far).await;
    assert_eq!(
        first.0,
        ChatChannel::World,
        "the far player heard {first:?}"
    );
    assert_eq!(first.2, "hello world");
}

/// The next chat line `client` hears: (channel, speaker, text).
async fn heard(client: &mut Client) -> (ChatChannel, Uuid, String) {
    client
        .until(|m| match m {
            ServerMessage::ChatMessage {
                channel,
                from,
                text,
                ..
            } => Some((*channel, *from, text.clone())),
            _ => None,
        })
        .await
}
