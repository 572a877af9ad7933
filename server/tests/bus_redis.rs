//! Shards sharing a real Redis (a private `redis-server` per test): control
//! events through the stream, across disconnects and restarts; the shard id's
//! ownership and the presence records; and a logout on one shard that drops
//! the session's socket on another.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::{Encoding, KickReason, ServerMessage};
use meridian_server::bus::presence::{owner_key, record_key};
use meridian_server::bus::stream::STREAM_KEY;
use meridian_server::bus::{Bus, BusError, ControlEvent, RedisBus};
use tokio::sync::broadcast;
use util::redis::RedisServer;
use util::{TestServer, CENTER};
use uuid::Uuid;

/// How long a test waits for what the bus should do after Redis returns: a
/// reconnect backoff (at most 2 s) and a heartbeat (2 s), with room to spare.
const RECOVERY: Duration = Duration::from_secs(10);

fn kick(n: u128) -> ControlEvent {
    ControlEvent::Kick {
        user_id: Uuid::from_u128(n),
    }
}

async fn next_event(rx: &mut broadcast::Receiver<ControlEvent>, within: Duration) -> ControlEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no control event in time")
        .expect("the bus delivers")
}

/// Nothing more arrives for a while.
async fn nothing_more(rx: &mut broadcast::Receiver<ControlEvent>) {
    let extra = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(extra.is_err(), "an unexpected event: {extra:?}");
}

async fn xadd_raw(redis: &RedisServer, id: &str, event: &ControlEvent) -> String {
    redis::cmd("XADD")
        .arg(STREAM_KEY)
        .arg(id)
        .arg("shard")
        .arg("by-hand")
        .arg("event")
        .arg(serde_json::to_string(event).unwrap())
        .query_async(&mut redis.connection().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_sent_on_one_shard_arrives_once_and_in_order_on_both() {
    let redis = RedisServer::start();
    let a = RedisBus::start(&redis.url(), "a").await.unwrap();
    let b = RedisBus::start(&redis.url(), "b").await.unwrap();
    let (mut on_a, mut on_b) = (a.subscribe_control(), b.subscribe_control());
    let events: Vec<ControlEvent> = (1..=5).map(kick).collect();
    for event in &events {
        a.send_control(event.clone());
    }
    let revoked = ControlEvent::SessionRevoked {
        session_id: Uuid::from_u128(9),
    };
    for rx in [&mut on_a, &mut on_b] {
        for event in &events {
            assert_eq!(&next_event(rx, Duration::from_secs(5)).await, event);
        }
    }
    b.send_control(revoked.clone());
    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(rx, Duration::from_secs(5)).await, revoked);
        nothing_more(rx).await;
    }
    assert_eq!(a.stats().sent, 5);
    assert_eq!(b.stats().sent, 1);
    assert_eq!(a.stats().received, 6);
    assert_eq!(b.stats().received, 6);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_event_appended_while_the_reader_is_disconnected_is_delivered() {
    let redis = RedisServer::start();
    let bus = RedisBus::start(&redis.url(), "a").await.unwrap();
    let mut rx = bus.subscribe_control();
    bus.send_control(kick(1));
    assert_eq!(next_event(&mut rx, Duration::from_secs(5)).await, kick(1));

    // One pipeline: Redis runs both before it accepts a new connection, so
    // the entry is appended while the reader is cut off.
    let missed = kick(2);
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .ignore()
        .cmd("XADD")
        .arg(STREAM_KEY)
        .arg("*")
        .arg("event")
        .arg(serde_json::to_string(&missed).unwrap())
        .ignore();
    pipeline
        .query_async::<()>(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx, RECOVERY).await, missed);
    nothing_more(&mut rx).await;
    assert_eq!(bus.stats().reconnects, 1);

    // And it goes on from there.
    bus.send_control(kick(3));
    assert_eq!(next_event(&mut rx, RECOVERY).await, kick(3));
    bus.shutdown().await;
}

/// Wait until `key` exists.
async fn until_exists(redis: &RedisServer, key: &str) {
    let deadline = Instant::now() + RECOVERY;
    while !redis.exists(key).await {
        assert!(Instant::now() < deadline, "{key} never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn after_redis_restarts_empty_events_presence_and_ownership_come_back() {
    let mut redis = RedisServer::start();
    let a = RedisBus::start(&redis.url(), "a").await.unwrap();
    let b = RedisBus::start(&redis.url(), "b").await.unwrap();
    a.announce(util::free_addr(), util::free_addr(), || 3);
    b.announce(util::free_addr(), util::free_addr(), || 0);
    let (mut on_a, mut on_b) = (a.subscribe_control(), b.subscribe_control());
    a.send_control(kick(1));
    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(rx, Duration::from_secs(5)).await, kick(1));
    }
    // An entry with an id far ahead of Redis's clock: after the restart the
    // new stream's ids are all below it, which the readers must not wait for.
    xadd_raw(&redis, "99999999999999-0", &kick(2)).await;
    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(rx, Duration::from_secs(5)).await, kick(2));
    }
    until_exists(&redis, &record_key("a")).await;

    redis.stop();
    let started = Instant::now();
    a.send_control(kick(3));
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "send_control waited for Redis: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();

    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(rx, RECOVERY).await, kick(3));
    }
    for shard in ["a", "b"] {
        until_exists(&redis, &owner_key(shard)).await;
        until_exists(&redis, &record_key(shard)).await;
    }
    b.send_control(kick(4));
    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(rx, RECOVERY).await, kick(4));
        nothing_more(rx).await;
    }
    let shards = a.shards().await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(shards[0].players, 3);
    for bus in [&a, &b] {
        let stats = bus.stats();
        assert!(stats.reconnects >= 1, "{stats:?}");
        assert_eq!(stats.dropped, 0, "{stats:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_shard_id_held_by_a_live_shard_is_refused_and_free_after_its_shutdown() {
    let redis = RedisServer::start();
    let first = RedisBus::start(&redis.url(), "a").await.unwrap();
    let started = Instant::now();
    let second = RedisBus::start(&redis.url(), "a").await;
    match second {
        Err(error @ BusError::ShardIdTaken { .. }) => {
            assert!(error.to_string().contains("SHARD_ID"), "{error}");
        }
        other => panic!("expected ShardIdTaken, got {other:?}"),
    }
    // Seen renewed within about a heartbeat, not after a whole TTL.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    first.announce(util::free_addr(), util::free_addr(), || 0);
    until_exists(&redis, &record_key("a")).await;
    first.shutdown().await;
    assert!(!redis.exists(&owner_key("a")).await, "released on shutdown");
    assert!(
        !redis.exists(&record_key("a")).await,
        "presence deleted on shutdown"
    );
    assert!(first.shards().await.unwrap().is_empty());
    let again = RedisBus::start(&redis.url(), "a").await.unwrap();
    again.shutdown().await;
}

#[tokio::test]
async fn a_shard_id_left_by_a_dead_shard_is_taken_once_it_expires() {
    let redis = RedisServer::start();
    // A holder that died: its key is never renewed.
    redis::cmd("SET")
        .arg(owner_key("a"))
        .arg("a-dead-process")
        .arg("PX")
        .arg(1500)
        .query_async::<()>(&mut redis.connection().await)
        .await
        .unwrap();
    let bus = RedisBus::start(&redis.url(), "a").await.unwrap();
    assert_ne!(redis.get(&owner_key("a")).await.unwrap(), "a-dead-process");
    bus.shutdown().await;
}

#[tokio::test]
async fn send_control_while_redis_has_never_answered_is_delivered_once_it_does() {
    let mut redis = RedisServer::start();
    redis.stop();
    let bus = RedisBus::start(&redis.url(), "a").await.unwrap();
    let mut rx = bus.subscribe_control();
    bus.send_control(kick(1));
    redis.restart();
    assert_eq!(next_event(&mut rx, RECOVERY).await, kick(1));
    until_exists(&redis, &owner_key("a")).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_logout_on_one_shard_drops_the_sessions_socket_on_another() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = TestServer::start_with({
        let url = url.clone();
        move |config| {
            config.redis_url = Some(url);
            config.shard_id = "shard-a".into();
        }
    })
    .await;
    let b = TestServer::start_in(&a.dir, move |config| {
        config.redis_url = Some(url);
        config.shard_id = "shard-b".into();
    })
    .await;
    let (user_id, token) = a.guest(None).await;
    a.place(user_id, "arena", CENTER).await;
    let mut client = util::Client::connect(b.game, Encoding::Json, Some(&token), Some("arena"))
        .await
        .unwrap();
    client.welcome().await;

    assert_eq!(a.post_bearer("/api/logout", &token).await, 204);
    client
        .until(|m| match m {
            ServerMessage::Kicked { reason, .. } => {
                assert_eq!(*reason, KickReason::SessionRevoked);
                Some(())
            }
            _ => None,
        })
        .await;
    b.stop().await;
    a.stop().await;
}

/// Run `meridian serve` until it exits on its own; returns its status and
/// what it wrote to stderr.
async fn refused(
    dir: &std::path::Path,
    vars: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let (mut command, _, _) = util::ServerProcess::command(dir, vars);
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the meridian binary starts");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("meridian serve exits on its own")
    .unwrap()
    .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_second_process_with_the_same_shard_id_exits_naming_shard_id() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = util::open_store(dir.path()).await;
    util::seed_test_worlds(&store).await;
    drop(store);
    let vars = [("REDIS_URL", url.as_str()), ("SHARD_ID", "shard-a")];
    let mut first =
        util::ServerProcess::start_with_env(dir.path(), Duration::from_secs(1), &vars).await;
    let other = tempfile::tempdir().unwrap();
    let (status, stderr) = refused(other.path(), &vars).await;
    assert!(!status.success(), "the second shard ran: {stderr}");
    assert!(stderr.contains("SHARD_ID"), "{stderr}");
    assert!(stderr.contains("shard-a"), "{stderr}");
    let (status, _) = first.ops_get("/healthz").await;
    assert_eq!(status, 200, "the first shard still serves");

    // Stopped gracefully, it releases the id for the next one at once.
    first.terminate();
    assert!(first.exited(Duration::from_secs(20)).await.success());
    assert!(!redis.exists(&owner_key("shard-a")).await);
}

#[tokio::test]
async fn a_process_with_redis_and_no_shard_id_refuses_to_start() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = refused(dir.path(), &[("REDIS_URL", redis.url().as_str())]).await;
    assert!(!status.success(), "it ran: {stderr}");
    assert!(stderr.contains("SHARD_ID"), "{stderr}");
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}
