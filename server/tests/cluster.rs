//! Three shards as separate processes on one PostgreSQL and one Redis, as a
//! deployment runs them: cross-shard visibility and its latency, and a shard
//! killed with SIGKILL.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::{LonLat, ServerMessage};
use util::cluster::{Cluster, FLUSH};
use util::{offset, Client, CENTER};
use uuid::Uuid;

/// A guest of device `device` on shard `i`, placed at `at` (if it has no
/// stored position yet) and connected.
async fn player(cluster: &Cluster, i: usize, device: &str, at: Option<LonLat>) -> Client {
    cluster
        .guest(i, serde_json::json!({ "device_id": device }), at)
        .await
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

#[tokio::test]
async fn three_shards_show_one_world_and_a_killed_shard_s_players_leave() {
    let mut cluster = Cluster::start(3).await;
    let spot = offset(CENTER, 0.0, -300.0);
    let mut players = Vec::new();
    for i in 0..3 {
        let at = offset(spot, i as f64 * 20.0, 0.0);
        players.push(
            player(
                &cluster,
                i,
                &format!("near-device-{i}-0123456789"),
                Some(at),
            )
            .await,
        );
    }
    let mut far = player(
        &cluster,
        0,
        "far-device-0123456789",
        Some(offset(spot, 0.0, -2_000.0)),
    )
    .await;

    // Everyone near sees the two players of the other shards.
    let mut ids = [[0u32; 3]; 3];
    let accounts: Vec<Uuid> = players.iter().map(|p| p.player_id).collect();
    for i in 0..3 {
        let others: Vec<(usize, Uuid)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (j, accounts[j]))
            .collect();
        let mut seen = std::collections::HashMap::new();
        players[i]
            .until(|m| {
                if let ServerMessage::Update(u) = m {
                    for e in &u.entered {
                        seen.insert(e.player_id, e.state.id);
                    }
                }
                others
                    .iter()
                    .all(|(_, a)| seen.contains_key(a))
                    .then_some(())
            })
            .await;
        for (j, account) in others {
            ids[i][j] = seen[&account];
        }
    }

    // Visibility latency: a move on one shard until a player on another
    // shard sees it, 60 times over, taking turns.
    let mut samples = Vec::new();
    for round in 0..60 {
        let (mover, watcher) = (round % 3, (round + 1) % 3);
        let to = offset(
            players[mover].position,
            0.0,
            if round % 2 == 0 { 2.0 } else { -2.0 },
        );
        let sent = Instant::now();
        let seq = players[mover].move_to(to).await;
        players[mover].position = to;
        let id = ids[watcher][mover];
        let want = to;
        players[watcher]
            .until(|m| match m {
                ServerMessage::Update(u) => u
                    .moved
                    .iter()
                    .find(|s| {
                        let p = s.position();
                        s.id == id && (p.lat - want.lat).abs() < 1e-6
                    })
                    .map(|_| ()),
                _ => None,
            })
            .await;
        samples.push(sent.elapsed());
        players[mover].acked(seq).await;
    }
    let p99 = p99(samples.clone());
    println!(
        "cross-shard visibility over {} moves: median {:?}, p99 {p99:?}",
        samples.len(),
        {
            let mut s = samples.clone();
            s.sort();
            s[s.len() / 2]
        }
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");

    // Nobody near sees the far player, nor it them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(message)) = tokio::time::timeout_at(deadline, players[1].next()).await {
        if let ServerMessage::Update(u) = message {
            assert!(u.entered.iter().all(|e| e.player_id != far.player_id));
        }
    }
    while let Ok(Ok(message)) = tokio::time::timeout_at(
        tokio::time::Instant::now() + Duration::from_millis(200),
        far.next(),
    )
    .await
    {
        if let ServerMessage::Update(u) = message {
            assert!(u.entered.is_empty(), "the far player sees nobody");
        }
    }

    // Shard 2 is killed: its player leaves the others' views within the
    // ghost TTL, and can log in on shard 0 where it was last flushed.
    let last = players[2].position;
    tokio::time::sleep(FLUSH * 3).await;
    cluster.shards[2].kill();
    let killed = Instant::now();
    for i in 0..2 {
        let id = ids[i][2];
        players[i]
            .until(|m| match m {
                ServerMessage::Update(u) if u.left.contains(&id) => Some(()),
                _ => None,
            })
            .await;
    }
    let gone = killed.elapsed();
    println!("a killed shard's player left the others' views after {gone:?}");
    assert!(gone < meridian_server::world::GHOST_TTL + Duration::from_secs(1));
    let back = player(&cluster, 0, "near-device-2-0123456789", None).await;
    assert_eq!(back.player_id, players[2].player_id, "the same account");
    assert!(
        (back.position.lon - last.lon).abs() < 1e-9 && (back.position.lat - last.lat).abs() < 1e-9,
        "back at its last flushed position: {:?} vs {last:?}",
        back.position
    );
    players[1].entered_as(back.player_id).await;
}
