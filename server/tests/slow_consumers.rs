//! Clients that stop reading in a busy area: 200 players move among them
//! while, in three rounds, 20 clients connect, take their `Welcome` and
//! never read again. Their sockets are small (a 4 KiB receive buffer), so
//! the server's sends to them block within seconds. Each is dropped once
//! its send has been blocked for `WRITE_TIMEOUT` (10 s); nothing is queued
//! for it meanwhile, so memory stays flat round after round, and the moving
//! players are served throughout.
//!
//! Memory is this process's resident set: the shard runs in it, beside the
//! test's clients, whose share does not change between rounds.

mod util;

use std::time::{Duration, Instant};

use meridian_protocol::Encoding;
use tokio::net::TcpSocket;
use util::movers::{mint, Movers};
use util::{offset, Client, TestServer, CENTER};

const OPS_TOKEN: &str = "slow-consumer-ops-token";
const MOVERS: usize = 200;
const ROUNDS: usize = 3;
const SLOW_PER_ROUND: usize = 20;
const DROPS: &str = r#"meridian_outbound_drops_total{cause="write_timeout"}"#;

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A player connected with a 4 KiB receive buffer, welcomed, and then left
/// unread.
async fn slow_client(server: &TestServer, token: &str) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    Client::connect_over(socket, server.game, Encoding::Json, token, "arena")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_dropped_after_the_write_timeout_and_memory_stays_flat() {
    let server = TestServer::start_with(|c| {
        c.ops_token = Some(OPS_TOKEN.into());
        c.max_connections_per_address = 0;
    })
    .await;
    let busy = (offset(CENTER, -40.0, -40.0), offset(CENTER, 40.0, 40.0));
    let movers = Movers::start(&server, OPS_TOKEN, "mover", MOVERS, busy).await;
    let middle = (offset(CENTER, -10.0, -10.0), offset(CENTER, 10.0, 10.0));
    let mut tokens = mint(&server, OPS_TOKEN, "slow", ROUNDS * SLOW_PER_ROUND, middle).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = rss();

    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let dropped_before = server.metric(DROPS).await;
        let mut slow = Vec::new();
        for token in tokens.drain(..SLOW_PER_ROUND) {
            slow.push(slow_client(&server, &token).await);
        }
        // From here on they read nothing.
        let stopped = Instant::now();
        let mut peak = rss();
        let mut first = None;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            peak = peak.max(rss());
            let dropped = server.metric(DROPS).await - dropped_before;
            if dropped > 0.0 && first.is_none() {
                first = Some(stopped.elapsed());
            }
            if dropped >= SLOW_PER_ROUND as f64 {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(40),
                "round {round}: only {dropped} of {SLOW_PER_ROUND} dropped after {:?}",
                stopped.elapsed()
            );
        }
        let took = stopped.elapsed();
        let first = first.unwrap_or(took);
        drop(slow);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss();
        println!(
            "round {round}: {SLOW_PER_ROUND} dropped {first:.1?} to {took:.1?} after they stopped reading; \
             RSS peak {:.1} MiB, after {:.1} MiB (baseline {:.1} MiB)",
            mib(peak),
            mib(after),
            mib(baseline)
        );
        // Blocked for the whole timeout first: no client is dropped early.
        assert!(
            first >= Duration::from_secs(10),
            "round {round}: the first dropped after only {first:?}"
        );
        rounds.push((peak, after));
    }

    // Bounded while they were stuck (20 full 512 KiB write buffers alone
    // would be 10 MiB), and flat from round to round.
    let worst_peak = rounds.iter().map(|r| r.0).max().unwrap();
    assert!(
        worst_peak < baseline + 12 * 1024 * 1024,
        "RSS peaked at {:.1} MiB from {:.1} MiB",
        mib(worst_peak),
        mib(baseline)
    );
    let (first, last) = (rounds[0].1, rounds[ROUNDS - 1].1);
    assert!(
        last < first + 8 * 1024 * 1024,
        "RSS grew from {:.1} MiB after round 1 to {:.1} MiB after round {ROUNDS}",
        mib(first),
        mib(last)
    );
    assert_eq!(
        server.metric("meridian_connections").await,
        MOVERS as f64,
        "only the moving players are left"
    );
    movers.finish().await;
}
