//! Several shards in one world over Redis: players on different shards who
//! stand near each other see each other (entered, moved, left), players far
//! apart do not, and a ghost whose shard stops hearing from it leaves.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::{
    ChatChannel, ClientMessage, Encoding, ErrorCode, KickReason, ServerMessage,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use util::redis::RedisServer;
use util::{offset, Client, TestServer, CENTER};
use uuid::Uuid;

const FLUSH: Duration = Duration::from_millis(200);

async fn shard_on(redis: &RedisServer, id: &str, dir: Option<&std::path::Path>) -> TestServer {
    let url = redis.url();
    let id = id.to_owned();
    let adjust = move |c: &mut meridian_server::Config| {
        c.redis_url = Some(url);
        c.shard_id = id;
        c.flush_interval = FLUSH;
    };
    match dir {
        Some(dir) => TestServer::start_in(dir, adjust).await,
        None => TestServer::start_with(adjust).await,
    }
}

/// Wait until `client` sees `player` enter; returns the entity id it has
/// there and how long it took.
async fn sees_enter(client: &mut Client, player: Uuid) -> (u32, Duration) {
    let started = Instant::now();
    let id = client.entered_as(player).await;
    (id, started.elapsed())
}

/// Read `client`'s messages for `within`; panics if `player` enters.
async fn never_sees(client: &mut Client, player: Uuid, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(message) = tokio::time::timeout_at(deadline, client.next()).await {
        if let Ok(ServerMessage::Update(u)) = message {
            assert!(
                u.entered.iter().all(|e| e.player_id != player),
                "a player 2 km away came into view"
            );
        }
    }
}

#[tokio::test]
async fn players_on_two_shards_see_each_other_near_and_not_far() {
    let redis = RedisServer::start();
    let a = shard_on(&redis, "shard-a", None).await;
    let b = shard_on(&redis, "shard-b", Some(&a.dir)).await;
    let here = offset(CENTER, 0.0, -200.0);
    let mut on_a = a.guest_player("arena", here, Encoding::Bincode).await;
    let mut on_b = b
        .guest_player("arena", offset(here, 30.0, 0.0), Encoding::Json)
        .await;
    let mut far = b
        .guest_player("arena", offset(here, 0.0, -2_000.0), Encoding::Bincode)
        .await;

    // Each sees the other enter, with the same account id.
    let (b_there, took) = sees_enter(&mut on_a, on_b.player_id).await;
    sees_enter(&mut on_b, on_a.player_id).await;
    println!("cross-shard enter seen after {took:?}");

    // The player on B moves; the player on A sees it move.
    let to = offset(on_b.position, 5.0, 0.0);
    let seq = on_b.move_to(to).await;
    on_b.acked(seq).await;
    let started = Instant::now();
    let moved = on_a
        .until(|m| match m {
            ServerMessage::Update(u) => u.moved.iter().find(|s| s.id == b_there).copied(),
            _ => None,
        })
        .await;
    println!("cross-shard move seen after {:?}", started.elapsed());
    let seen = moved.position();
    assert!((seen.lon - to.lon).abs() < 1e-6 && (seen.lat - to.lat).abs() < 1e-6);

    // Shard A reports the sync and the ghost; Redis says where B's player is.
    let (_, status) = a.ops_get("/api/status").await;
    let sync = &status["sync"];
    assert!(sync["batches_received"].as_u64().unwrap() > 0, "{status}");
    assert!(sync["lag_ms"].as_u64().unwrap() < 1_000, "{status}");
    let arena = status["worlds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "arena")
        .unwrap();
    // One ghost: the player 2 km away is in cells shard A does not follow.
    assert_eq!(
        (arena["players"].as_u64(), arena["ghosts"].as_u64()),
        (Some(1), Some(1)),
        "{status}"
    );
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let owner: String = redis::cmd("GET")
        .arg(format!("meridian:player:{}", on_b.player_id))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let owner: serde_json::Value = serde_json::from_str(&owner).unwrap();
    assert_eq!(owner["shard"], "shard-b", "{owner}");

    // Every live shard is listed, from either.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = b.ops_get("/api/shards").await;
        assert_eq!(status, 200, "{body}");
        let mut ids: Vec<&str> = body["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["shard_id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        if ids == ["shard-a", "shard-b"] {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2 km away on B: never in view on A, nor A in its view.
    never_sees(&mut on_a, far.player_id, Duration::from_secs(2)).await;
    never_sees(&mut far, on_a.player_id, Duration::from_millis(200)).await;

    // The player on B leaves: it leaves A's view too, within the ghost TTL.
    on_b.socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    on_a.until(|m| match m {
        ServerMessage::Update(u) if u.left.contains(&b_there) => Some(()),
        _ => None,
    })
    .await;
    b.stop().await;
    a.stop().await;
}

/// Take one step of `step_m` north and wait for its ack: the shard serves.
/// Returns whether entity `watch` left the client's view meanwhile.
async fn step(client: &mut Client, step_m: f64, watch: u32) -> bool {
    let to = offset(client.position, 0.0, step_m);
    let seq = client.move_to(to).await;
    let mut left = false;
    client
        .until(|m| match m {
            ServerMessage::Update(u) => {
                left |= u.left.contains(&watch);
                (u.ack_seq >= seq).then_some(())
            }
            _ => None,
        })
        .await;
    client.position = to;
    left
}

#[tokio::test]
async fn after_a_redis_restart_shards_see_each_other_again_without_a_restart() {
    let mut redis = RedisServer::start();
    let a = shard_on(&redis, "shard-a", None).await;
    let b = shard_on(&redis, "shard-b", Some(&a.dir)).await;
    let here = offset(CENTER, -100.0, -250.0);
    let mut on_a = a.guest_player("arena", here, Encoding::Bincode).await;
    let mut on_b = b
        .guest_player("arena", offset(here, 20.0, 0.0), Encoding::Bincode)
        .await;
    let (b_there, _) = sees_enter(&mut on_a, on_b.player_id).await;

    // Redis goes away for 5 s: both shards keep serving their own players.
    redis.stop();
    let down = Instant::now();
    let mut left = false;
    while down.elapsed() < Duration::from_secs(5) {
        left |= step(&mut on_a, 1.0, b_there).await;
        step(&mut on_b, 1.0, u32::MAX).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Unheard of for longer than the ghost TTL, the other shard's player left.
    assert!(left, "the ghost outlived its TTL");

    // Redis is back (empty: it keeps nothing): within 5 s each sees the other
    // again, without restarting anything.
    redis.restart();
    let back = Instant::now();
    sees_enter(&mut on_a, on_b.player_id).await;
    sees_enter(&mut on_b, on_a.player_id).await;
    let resumed = back.elapsed();
    println!("cross-shard visibility back {resumed:?} after Redis returned");
    assert!(resumed < Duration::from_secs(5), "{resumed:?}");
    b.stop().await;
    a.stop().await;
}

fn chat(text: &str) -> ClientMessage {
    ClientMessage::Chat {
        channel: ChatChannel::World,
        text: text.into(),
    }
}

/// The next chat line `client` receives: (from, name, text).
async fn heard(client: &mut Client) -> (Uuid, String, String) {
    client
        .until(|m| match m {
            ServerMessage::ChatMessage {
                from, name, text, ..
            } => Some((*from, name.clone(), text.clone())),
            _ => None,
        })
        .await
}

/// The next error `client` receives: (code, message).
async fn refused(client: &mut Client) -> (ErrorCode, String) {
    client
        .until(|m| match m {
            ServerMessage::Error { code, message } => Some((*code, message.clone())),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn world_chat_reaches_every_shard_cleaned_and_limited() {
    let redis = RedisServer::start();
    let a = shard_on(&redis, "shard-a", None).await;
    let b = shard_on(&redis, "shard-b", Some(&a.dir)).await;
    // World chat is world-wide: the two players are 2 km apart.
    let mut on_a = a
        .guest_player("arena", offset(CENTER, 0.0, -1_000.0), Encoding::Bincode)
        .await;
    let mut on_b = b
        .guest_player("arena", offset(CENTER, 0.0, 1_000.0), Encoding::Json)
        .await;
    // Give both shards a moment to subscribe to the world's chat channel.
    tokio::time::sleep(Duration::from_millis(500)).await;

    on_a.send(&chat("hello\u{7}\u{1b}[2J from A '; DROP TABLE users; --"))
        .await;
    let expected = "hello[2J from A '; DROP TABLE users; --".to_owned();
    let (from, _, text) = heard(&mut on_b).await;
    assert_eq!((from, text.as_str()), (on_a.player_id, expected.as_str()));
    let (from, _, text) = heard(&mut on_a).await;
    assert_eq!(
        (from, text),
        (on_a.player_id, expected),
        "the speaker hears itself"
    );

    // Too long: refused by name, and nobody hears it.
    on_a.send(&chat(&"x".repeat(281))).await;
    let (code, message) = refused(&mut on_a).await;
    assert_eq!(code, ErrorCode::InvalidValue);
    assert!(message.contains("at most 280"), "{message}");

    // A flood: past the burst, messages are refused as rate limited.
    for i in 0..6 {
        on_b.send(&chat(&format!("spam {i}"))).await;
    }
    let (code, message) = refused(&mut on_b).await;
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    let (_, _, first) = heard(&mut on_a).await;
    assert_eq!(first, "spam 0", "the long line was never delivered");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_login_on_another_shard_kicks_the_first_and_continues_where_it_was() {
    let redis = RedisServer::start();
    // Shard A flushes only once a minute: where the player stands now can come
    // only from what A published in Redis, not from the database.
    let url = redis.url();
    let a = TestServer::start_with(move |c| {
        c.redis_url = Some(url);
        c.shard_id = "shard-a".into();
        c.flush_interval = Duration::from_secs(60);
    })
    .await;
    let b = shard_on(&redis, "shard-b", Some(&a.dir)).await;
    let device = "one-phone-0123456789abcdef";
    let (user, token) = a.guest(Some(device)).await;
    let start = offset(CENTER, 0.0, -400.0);
    a.place(user, "arena", start).await;
    let mut first = Client::connect(a.game, Encoding::Bincode, Some(&token), Some("arena"))
        .await
        .unwrap();
    first.welcome().await;
    for _ in 0..3 {
        step(&mut first, 3.0, u32::MAX).await;
    }
    let last = first.position;
    // One republish later, Redis has it (the database still has `start`).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (again, token) = b.guest(Some(device)).await;
    assert_eq!(again, user, "the same account");
    let mut second = Client::connect(b.game, Encoding::Json, Some(&token), Some("arena"))
        .await
        .unwrap();
    second.welcome().await;
    assert!(
        (second.position.lon - last.lon).abs() < 1e-6
            && (second.position.lat - last.lat).abs() < 1e-6,
        "continues where it was: {:?} vs {last:?} (start {start:?})",
        second.position
    );
    let reason = first
        .until(|m| match m {
            ServerMessage::Kicked { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, KickReason::LoggedInElsewhere);
    // The new login plays on.
    step(&mut second, 2.0, u32::MAX).await;
    b.stop().await;
    a.stop().await;
}
