//! What survives what: a graceful restart keeps every position, a SIGKILL
//! loses at most one flush interval of movement, SIGTERM flushes everything
//! and exits 0, and a client that drops and resumes within the grace period
//! stays the same player without its neighbours seeing it leave.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::{close, Encoding, ErrorCode, KickReason, LonLat, ServerMessage, Update};
use meridian_server::store::Store;
use meridian_server::world::geodesy::distance_m;
use util::{offset, Client, Closed, ServerProcess, TestServer, CENTER};
use uuid::Uuid;

/// How close two positions must be to count as the same (the steps walked in
/// these tests are metres apart).
const SAME_M: f64 = 0.01;

/// Expect `Kicked { Shutdown }` with a retry delay, then close code 1001.
async fn kicked_for_shutdown(client: &mut Client) {
    let (reason, retry_after_ms) = client
        .until(|m| match m {
            ServerMessage::Kicked {
                reason,
                retry_after_ms,
                ..
            } => Some((*reason, *retry_after_ms)),
            _ => None,
        })
        .await;
    assert_eq!(reason, KickReason::Shutdown);
    assert!(
        retry_after_ms.is_some_and(|ms| ms > 0),
        "a shutdown tells clients when to come back, got {retry_after_ms:?}"
    );
    assert_eq!(client.closed().await, Closed::Code(close::GOING_AWAY));
}

/// Expect `Error { ResumeFailed }` and close code 1008.
async fn resume_refused(client: &mut Client) {
    let code = client
        .until(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::ResumeFailed);
    assert_eq!(client.closed().await, Closed::Code(close::AUTH_FAILED));
}

/// Every `Update` a client receives for a while.
async fn updates_for(client: &mut Client, how_long: Duration) -> Vec<Update> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + how_long;
    while let Ok(message) = tokio::time::timeout_at(deadline, client.next()).await {
        match message {
            Ok(ServerMessage::Update(update)) => out.push(update),
            Ok(_) => {}
            Err(closed) => panic!("socket closed while collecting updates: {closed:?}"),
        }
    }
    out
}

/// The next `Update`, skipping anything else.
async fn first_update(client: &mut Client) -> Update {
    client
        .until(|m| match m {
            ServerMessage::Update(u) => Some(u.clone()),
            _ => None,
        })
        .await
}

/// The id of a test world.
async fn world_id(store: &dyn Store, name: &str) -> Uuid {
    store
        .worlds()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no world {name}"))
        .id
}

#[tokio::test]
async fn a_graceful_restart_puts_the_player_back_where_they_were() {
    // No periodic flush within the test: only the final flush on shutdown can
    // save the walk.
    let mut server = TestServer::start_with(|c| c.flush_interval = Duration::from_secs(3600)).await;
    let dir = server.keep_dir();
    let mut client = server
        .player("restarter", "fast", CENTER, Encoding::Bincode)
        .await;
    let there = offset(CENTER, -100.0, 120.0);
    client.walk(there, 5.0, 20.0).await;

    tokio::join!(server.stop(), kicked_for_shutdown(&mut client));

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let (user_id, token) = server.login("restarter").await;
    assert_eq!(
        user_id, client.player_id,
        "the account survived the restart"
    );
    let mut client = Client::connect(server.game, Encoding::Json, Some(&token), Some("fast"))
        .await
        .unwrap();
    client.welcome().await;
    let off = distance_m(client.position, there);
    assert!(
        off < SAME_M,
        "logged in {off} m from where the player stopped"
    );
    server.stop().await;
}

/// One move sent while walking, and when its ack arrived.
struct Step {
    seq: u32,
    at: LonLat,
    acked: Option<Instant>,
}

/// Walk north `steps` times by `step_m` at `hz` moves per second, reading the
/// socket between moves and recording when each move is acknowledged.
async fn walk_recording(client: &mut Client, steps: usize, step_m: f64, hz: f64) -> Vec<Step> {
    let from = client.position;
    let period = Duration::from_secs_f64(1.0 / hz);
    let mut log: Vec<Step> = Vec::with_capacity(steps);
    for i in 1..=steps {
        let at = offset(from, 0.0, step_m * i as f64);
        let seq = client.move_to(at).await;
        log.push(Step {
            seq,
            at,
            acked: None,
        });
        let next = tokio::time::Instant::now() + period;
        while let Ok(message) = tokio::time::timeout_at(next, client.next()).await {
            match message {
                Ok(ServerMessage::Update(u)) => {
                    let now = Instant::now();
                    for step in log.iter_mut().filter(|s| s.seq <= u.ack_seq) {
                        step.acked.get_or_insert(now);
                    }
                }
                Ok(ServerMessage::Correction { reason, .. }) => {
                    panic!("move {seq} corrected: {reason:?}")
                }
                Ok(_) => {}
                Err(closed) => panic!("socket closed while walking: {closed:?}"),
            }
        }
        client.position = at;
    }
    log
}

/// What a watcher of the store saw: when each new stored position appeared.
type Sightings = Vec<(Instant, LonLat)>;

/// Poll a player's stored position every 20 ms (SQLite's WAL lets a reader
/// look while the server writes) until `stop` fires, noting each change.
fn watch_store(
    dir: &std::path::Path,
    user_id: Uuid,
    world_id: Uuid,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Sightings> {
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let store = util::open_store(&dir).await;
        let mut seen: Sightings = Vec::new();
        loop {
            if let Some(p) = store.position(user_id, world_id).await.unwrap() {
                if seen.last().is_none_or(|(_, last)| *last != p.position) {
                    seen.push((Instant::now(), p.position));
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        store.close().await;
        seen
    })
}

/// The index of the step walked at `at`, if any.
fn step_at(log: &[Step], at: LonLat) -> Option<usize> {
    log.iter().position(|s| distance_m(s.at, at) < SAME_M)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_at_most_one_flush_interval_and_sigterm_loses_nothing() {
    const FLUSH: Duration = Duration::from_millis(500);
    // A move acked at the server is handed to the flusher in the same tick; the
    // slack covers the tick period (50 ms), the store polling (20 ms), the
    // flush itself and scheduling on a busy machine.
    const SLACK: Duration = Duration::from_millis(300);

    let dir = tempfile::tempdir().unwrap();
    let store = util::open_store(dir.path()).await;
    util::seed_test_worlds(&store).await;
    let fast = world_id(&store, "fast").await;
    store.close().await;
    let mut server = ServerProcess::start(dir.path(), FLUSH).await;
    let (user_id, token) = server.login("survivor").await;
    let mut client = Client::connect(server.game, Encoding::Bincode, Some(&token), Some("fast"))
        .await
        .unwrap();
    client.welcome().await;

    // Walk for 4 s (3 m steps at 10 Hz) while watching the store, then kill
    // the server mid-walk.
    let (stop_watching, stop) = tokio::sync::oneshot::channel();
    let watcher = watch_store(dir.path(), user_id, fast, stop);
    let log = walk_recording(&mut client, 40, 3.0, 10.0).await;
    let killed_at = Instant::now();
    server.kill();
    drop(client);
    let _ = stop_watching.send(());
    let sightings = watcher.await.unwrap();

    // While the server ran, every acked move (or a newer one) reached the
    // store within one flush interval.
    let sightings: Vec<(Instant, Option<usize>)> = sightings
        .into_iter()
        .map(|(t, at)| (t, step_at(&log, at)))
        .collect();
    let mut worst = Duration::ZERO;
    for (i, step) in log.iter().enumerate() {
        let Some(acked) = step.acked else { continue };
        if acked + FLUSH + SLACK > killed_at {
            continue;
        }
        let stored_at = sightings
            .iter()
            .find(|(t, s)| *t >= acked && s.is_some_and(|s| s >= i))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("step {} was acked but never stored", i + 1));
        let lag = stored_at.duration_since(acked);
        worst = worst.max(lag);
        assert!(
            lag <= FLUSH + SLACK,
            "step {} was stored {} ms after its ack (flush interval {} ms)",
            i + 1,
            lag.as_millis(),
            FLUSH.as_millis()
        );
    }

    // After the kill, the store holds a position the player walked through,
    // no older than one flush interval.
    let store = util::open_store(dir.path()).await;
    let stored = store
        .position(user_id, fast)
        .await
        .unwrap()
        .expect("a position was flushed before the kill");
    store.close().await;
    let kept = step_at(&log, stored.position)
        .expect("the stored position is one the player walked through");
    let must_have = log
        .iter()
        .rposition(|s| s.acked.is_some_and(|t| t + FLUSH + SLACK <= killed_at))
        .expect("moves were acked long enough before the kill");
    let last_acked = log
        .iter()
        .rposition(|s| s.acked.is_some())
        .expect("moves were acked");
    let age = log[kept]
        .acked
        .map_or(Duration::ZERO, |t| killed_at.duration_since(t));
    eprintln!(
        "FLUSH_INTERVAL_MS={}: acked moves reached the store within {} ms; after SIGKILL \
         the store held step {} of {} (last acked {}), acked {} ms before the kill, \
         {} acked steps lost",
        FLUSH.as_millis(),
        worst.as_millis(),
        kept + 1,
        log.len(),
        last_acked + 1,
        age.as_millis(),
        last_acked.saturating_sub(kept),
    );
    assert!(
        kept >= must_have,
        "restored step {} is older than step {}, acked {} ms before the kill \
         (flush interval {} ms)",
        kept + 1,
        must_have + 1,
        killed_at
            .duration_since(log[must_have].acked.unwrap())
            .as_millis(),
        FLUSH.as_millis()
    );

    // Restarted on the same data, the player logs in at the stored position.
    // This time the interval is an hour: only SIGTERM's final flush can save
    // the next walk.
    let mut server = ServerProcess::start(dir.path(), Duration::from_secs(3600)).await;
    let (again, token) = server.login("survivor").await;
    assert_eq!(again, user_id);
    let mut client = Client::connect(server.game, Encoding::Json, Some(&token), Some("fast"))
        .await
        .unwrap();
    client.welcome().await;
    let off = distance_m(client.position, stored.position);
    assert!(off < SAME_M, "restored {off} m from the stored position");
    let (status, body) = server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true, "{body}");

    let log = walk_recording(&mut client, 15, 3.0, 10.0).await;
    let last = log.last().unwrap();
    if last.acked.is_none() {
        client.acked(last.seq).await;
    }
    server.terminate();
    kicked_for_shutdown(&mut client).await;
    let status = server.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let store = util::open_store(dir.path()).await;
    let stored = store.position(user_id, fast).await.unwrap().unwrap();
    store.close().await;
    let off = distance_m(stored.position, last.at);
    assert!(
        off < SAME_M,
        "after SIGTERM the stored position is {off} m from the last acked move"
    );
}

#[tokio::test]
async fn a_client_that_resumes_within_the_grace_period_stays_the_same_player() {
    let server = TestServer::start().await;
    let mut a = server
        .player("stayer", "fast", CENTER, Encoding::Bincode)
        .await;
    let mut b = server
        .player("roamer", "fast", offset(CENTER, 0.0, 50.0), Encoding::Json)
        .await;
    a.until(|m| match m {
        ServerMessage::Update(u) if u.entered.iter().any(|e| e.state.id == b.entity_id) => Some(()),
        _ => None,
    })
    .await;
    let seq = b.move_to(offset(CENTER, 0.0, 52.0)).await;
    b.acked(seq).await;

    // B's connection dies without a close handshake (Wi-Fi to LTE).
    let (player_id, entity_id, old_token, last_seq) = (
        b.player_id,
        b.entity_id,
        b.resume_token.clone(),
        b.last_seq(),
    );
    drop(b);
    let mut seen_by_a = updates_for(&mut a, Duration::from_millis(500)).await;

    // Within the grace period, the resume token alone brings B back, even
    // without naming its world (not the shard's default one).
    let mut b = Client::hello(server.game, Encoding::Json, "", None, Some(&old_token)).await;
    b.welcome().await;
    assert_eq!(b.player_id, player_id, "same account");
    assert_eq!(b.entity_id, entity_id, "same entity");
    assert_ne!(b.resume_token, old_token, "the token rotates");
    assert!(distance_m(b.position, offset(CENTER, 0.0, 52.0)) < SAME_M);
    // A fresh full view: A is in the first update.
    let update = first_update(&mut b).await;
    assert!(
        update.entered.iter().any(|e| e.state.id == a.entity_id),
        "the resumed client's first update shows its neighbour: {update:?}"
    );
    // And B moves on, numbering its moves where it left off.
    b.continue_seq(last_seq);
    let seq = b.move_to(offset(CENTER, 0.0, 55.0)).await;
    b.acked(seq).await;

    // The old token was used up.
    let mut thief = Client::hello(server.game, Encoding::Bincode, "", None, Some(&old_token)).await;
    resume_refused(&mut thief).await;
    let seq = b.move_to(offset(CENTER, 0.0, 57.0)).await;
    b.acked(seq).await;

    // A saw B move, and never saw it leave or come back.
    seen_by_a.extend(updates_for(&mut a, Duration::from_millis(300)).await);
    assert!(
        seen_by_a.iter().all(|u| !u.left.contains(&entity_id)),
        "the neighbour saw the resuming player leave"
    );
    assert!(
        seen_by_a
            .iter()
            .all(|u| u.entered.iter().all(|e| e.state.id != entity_id)),
        "the neighbour saw the resuming player re-enter"
    );
    assert!(
        seen_by_a.iter().any(|u| u.moved.iter().any(
            |s| s.id == entity_id && distance_m(s.position(), offset(CENTER, 0.0, 57.0)) < 0.05
        )),
        "the neighbour saw the resumed player's moves"
    );
    server.stop().await;
}

#[tokio::test]
async fn after_the_grace_period_the_player_is_gone_and_resume_fails() {
    const GRACE: Duration = Duration::from_millis(1000);
    let server = TestServer::start_with(|c| c.resume_grace = GRACE).await;
    let mut a = server
        .player("watcher", "arena", CENTER, Encoding::Bincode)
        .await;
    let b = server
        .player(
            "leaver",
            "arena",
            offset(CENTER, 0.0, 50.0),
            Encoding::Bincode,
        )
        .await;
    a.until(|m| match m {
        ServerMessage::Update(u) if u.entered.iter().any(|e| e.state.id == b.entity_id) => Some(()),
        _ => None,
    })
    .await;

    let (entity_id, token) = (b.entity_id, b.resume_token.clone());
    let dropped_at = Instant::now();
    drop(b);
    a.until(|m| match m {
        ServerMessage::Update(u) if u.left.contains(&entity_id) => Some(()),
        _ => None,
    })
    .await;
    let gone_after = dropped_at.elapsed();
    eprintln!(
        "grace {} ms: the neighbour saw the player leave after {} ms",
        GRACE.as_millis(),
        gone_after.as_millis()
    );
    assert!(
        gone_after + Duration::from_millis(50) >= GRACE,
        "left after {gone_after:?}, within the grace period"
    );

    let mut late = Client::hello(
        server.game,
        Encoding::Bincode,
        "",
        Some("arena"),
        Some(&token),
    )
    .await;
    resume_refused(&mut late).await;
    server.stop().await;
}

#[tokio::test]
async fn readiness_reports_ready_with_the_database_and_flusher_healthy() {
    let server = TestServer::start().await;
    let (status, body) = server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    assert_eq!(body["checks"]["flush"], "ok", "{body}");
    server.stop().await;
}
