//! The load test against a real shard in this process: a small swarm on the
//! demo world must all join, walk without a single correction, and measure
//! acknowledgements and updates.

use std::time::Duration;

use meridian_loadtest::Options;
use meridian_server::{Config, Server};

const OPS_TOKEN: &str = "smoke-test-ops-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_bots_walk_the_demo_world_without_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.ops_token = Some(OPS_TOKEN.into());
    // The test world is the seeded demo world, with its blocked and slow areas.
    let server = Server::bind(config).await.expect("server binds");
    let (game, ops) = (server.game_addr(), server.ops_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    let mut options = Options::new(vec![format!("ws://{game}/ws")]);
    options.bots = 50;
    options.ramp = 1.0;
    options.duration = 4.0;
    options.ops_url = Some(format!("http://{ops}"));
    options.ops_token = Some(OPS_TOKEN.into());
    options.no_server_stats = true;
    options.quiet = true;
    let report = meridian_loadtest::run(options)
        .await
        .expect("the load test runs");
    let json = serde_json::to_value(&report).unwrap();
    println!("{}", report.table());

    assert_eq!(json["connected"], 50, "{json:#}");
    assert_eq!(json["failed"], 0, "{json:#}");
    assert_eq!(json["corrections"], 0, "{json:#}");
    assert_eq!(json["errors"], 0, "{json:#}");
    assert_eq!(json["disconnects"], 0, "{json:#}");
    assert_eq!(json["passed"], true, "{json:#}");
    assert_eq!(json["auth"], "mint");
    // Every probe measured acks: 50 bots × 10 moves/s × 4 s, give or take.
    let acks = json["move_ack_ms"]["count"].as_u64().unwrap();
    assert!(acks > 1000, "only {acks} acks measured: {json:#}");
    let p50 = json["move_ack_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 1000.0, "{json:#}");
    let updates = json["updates_per_bot_per_s"].as_f64().unwrap();
    assert!(updates > 1.0, "{json:#}");
    assert!(json["bytes_in_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["bots_process"]["cpu_percent"].as_f64().unwrap() >= 0.0);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("the shard stops")
        .unwrap()
        .unwrap();
}
