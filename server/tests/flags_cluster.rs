//! Flags and nearby chat across shards on one PostgreSQL and one Redis: a
//! capture is announced on every shard exactly once, even when the shard that
//! committed it is killed right after the commit; a capture nobody announced
//! is found and announced once; while the database is down captures are
//! refused and never announced; nearby chat reaches a neighbour on another
//! shard and not a player 1 km away.

mod util;

use std::time::Duration;

use meridian_protocol::{ChatChannel, ClientMessage, Encoding, FlagChange, LonLat, ServerMessage};
use meridian_server::config::DbPool;
use meridian_server::store::{now_ms, Capture, PgStore, Store, WorldObject};
use util::pg::{PgCluster, TestDatabase};
use util::redis::RedisServer;
use util::{offset, place_in, seed_test_worlds, Client, ServerProcess, TestServer, CENTER};
use uuid::Uuid;

const FLUSH: Duration = Duration::from_millis(200);

const OPS_TOKEN: &str = "flags-cluster-ops-token";

/// How long a capture may take to reach every shard when its own shard died:
/// the survivors' sweep runs every 2 s for captures unannounced for 5 s.
const ORPHAN_WAIT: Duration = Duration::from_secs(20);

fn flag_spot() -> LonLat {
    offset(CENTER, 0.0, 150.0)
}

fn flag_object(world_id: Uuid, at: LonLat) -> WorldObject {
    WorldObject {
        id: Uuid::now_v7(),
        world_id,
        kind: "flag".into(),
        name: "Beacon".into(),
        position: at,
        properties: serde_json::json!({ "capture_radius_m": 20, "capture_time_s": 2 }),
        owner: None,
        version: 0,
    }
}

/// Shards as processes; fields drop in order, the shards first.
struct Cluster {
    shards: Vec<ServerProcess>,
    _dirs: Vec<tempfile::TempDir>,
    store: PgStore,
    world_id: Uuid,
    flag: Uuid,
    http: reqwest::Client,
    _redis: RedisServer,
    db: TestDatabase,
}

impl Cluster {
    /// `n` shards of a world with one flag at `flag_spot()`.
    async fn start(n: usize) -> Self {
        let redis = RedisServer::start();
        let db = TestDatabase::create().await;
        let store = PgStore::connect(&db.url, DbPool::default()).await.unwrap();
        store.migrate().await.unwrap();
        seed_test_worlds(&store).await;
        let world_id = store
            .worlds()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.name == "arena")
            .unwrap()
            .id;
        let flag = flag_object(world_id, flag_spot());
        store.put_world_object(&flag).await.unwrap();
        let mut shards = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let id = format!("shard-{i}");
            let env = [
                ("DATABASE_URL", db.url.as_str()),
                ("REDIS_URL", &redis.url()),
                ("SHARD_ID", id.as_str()),
            ];
            shards.push(ServerProcess::start_with_env(dir.path(), FLUSH, &env).await);
            dirs.push(dir);
        }
        Self {
            shards,
            _dirs: dirs,
            store,
            world_id,
            flag: flag.id,
            http: reqwest::Client::new(),
            _redis: redis,
            db,
        }
    }

    /// A new guest of `team` on shard `i` at `at`, connected and welcomed.
    async fn player(&self, i: usize, team: &str, at: LonLat) -> Client {
        let game = self.shards[i].game;
        let body: serde_json::Value = self
            .http
            .post(format!("http://{game}/api/guest"))
            .json(&serde_json::json!({ "team": team }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["team"], team, "{body}");
        let user_id: Uuid = body["user_id"].as_str().unwrap().parse().unwrap();
        place_in(&self.store, user_id, "arena", at).await;
        let token = body["token"].as_str().unwrap();
        let mut client = Client::connect(game, Encoding::Bincode, Some(token), Some("arena"))
            .await
            .unwrap();
        client.welcome().await;
        client
    }

    async fn capture_rows(&self) -> i64 {
        let pool = self.db.pool().await;
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
    let mut cluster = Cluster::start(2).await;
    let spot = flag_spot();
    let mut red = cluster.player(0, "red", offset(spot, 0.0, -40.0)).await;
    // On the other shard, far from the flag, in the same world.
    let mut blue = cluster.player(1, "blue", offset(CENTER, 0.0, -200.0)).await;

    red.walk(offset(spot, 0.0, -5.0), 0.5, 10.0).await;
    // Kill the capturing shard as soon as the capture is committed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while cluster.capture_rows().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no capture was committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.shards[0].kill();

    // The survivor announces it, once, whether the dead shard got its
    // announcement out or the sweep found it unannounced.
    let capture_id = captured(&mut blue, cluster.flag, ORPHAN_WAIT).await;
    blue.never(
        Duration::from_secs(8),
        "a capture announced twice",
        is_captured(cluster.flag),
    )
    .await;
    let stored = cluster.store.captures(cluster.world_id, 0).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].capture.id, capture_id);
    assert_eq!(stored[0].capture.team, "red");
    assert_eq!(stored[0].score, 1);
    // Nothing is left unannounced.
    let orphans = cluster
        .store
        .unannounced_captures(now_ms(), 10)
        .await
        .unwrap();
    assert!(orphans.is_empty(), "{orphans:?}");
}

#[tokio::test]
async fn a_committed_capture_nobody_announced_is_announced_once() {
    let cluster = Cluster::start(2).await;
    let mut watchers = vec![
        cluster.player(0, "blue", offset(CENTER, 0.0, -200.0)).await,
        cluster.player(1, "red", offset(CENTER, 0.0, -250.0)).await,
    ];
    // What a shard killed between its commit and its announcement leaves
    // behind: a committed capture, unannounced.
    let capture = Capture {
        id: Uuid::now_v7(),
        world_id: cluster.world_id,
        flag_id: cluster.flag,
        user_id: watchers[1].player_id,
        name: "ghost of a dead shard".into(),
        team: "red".into(),
        version: 0,
        captured_at_ms: now_ms(),
    };
    let outcome = cluster.store.capture_flag(&capture).await.unwrap();
    assert!(
        matches!(
            outcome,
            meridian_server::store::CaptureOutcome::Committed { .. }
        ),
        "{outcome:?}"
    );
    for watcher in &mut watchers {
        let announced = captured(watcher, cluster.flag, ORPHAN_WAIT).await;
        assert_eq!(announced, capture.id);
    }
    for watcher in &mut watchers {
        watcher
            .never(
                Duration::from_secs(5),
                "a capture announced twice",
                is_captured(cluster.flag),
            )
            .await;
    }
    assert!(cluster
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
    let at = flag_spot();
    let (status, body) = server
        .ops_post(
            "/admin/flags",
            Some(OPS_TOKEN),
            serde_json::json!({
                "type": "Feature",
                "geometry": { "type": "Point", "coordinates": [at.lon, at.lat] },
                "properties": { "name": "Beacon", "world": "arena", "capture_time_s": 2 },
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let flag_id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
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
    let cluster = Cluster::start(2).await;
    let here = offset(CENTER, 0.0, -200.0);
    let mut speaker = cluster.player(0, "red", here).await;
    let mut neighbour = cluster.player(1, "blue", offset(here, 30.0, 0.0)).await;
    let mut far = cluster.player(1, "blue", offset(here, 0.0, -1_000.0)).await;
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
