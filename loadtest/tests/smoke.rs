//! The load test against a real shard in this process: a small swarm on the
//! demo world must all join, walk without a single correction, and measure
//! acknowledgements and updates; flooders beside it must be throttled and
//! kicked, again and again, without touching the walking bots.

use std::time::Duration;

use meridian_loadtest::Options;
use meridian_server::{Config, Server};

const OPS_TOKEN: &str = "smoke-test-ops-token";

/// A shard of the seeded demo world in this process, on ephemeral ports.
struct Shard {
    game: std::net::SocketAddr,
    ops: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), meridian_server::ServerError>>,
    _dir: tempfile::TempDir,
}

impl Shard {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().to_path_buf());
        config.ops_token = Some(OPS_TOKEN.into());
        let server = Server::bind(config).await.expect("server binds");
        let (game, ops) = (server.game_addr(), server.ops_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            game,
            ops,
            stop,
            serving,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.serving)
            .await
            .expect("the shard stops")
            .unwrap()
            .unwrap();
    }
}

/// Options for minted bots against `shard`, quiet and without sampling a
/// server process.
fn minted(shard: &Shard) -> Options {
    let mut options = Options::new(vec![format!("ws://{}/ws", shard.game)]);
    options.ops_url = Some(format!("http://{}", shard.ops));
    options.ops_token = Some(OPS_TOKEN.into());
    options.no_server_stats = true;
    options.quiet = true;
    options
}

/// Run the load test; its report as JSON (the table is printed).
async fn run(options: Options) -> serde_json::Value {
    let report = meridian_loadtest::run(options)
        .await
        .expect("the load test runs");
    println!("{}", report.table());
    serde_json::to_value(&report).unwrap()
}

/// Players in every world of the shard, from its ops status.
async fn players_in_world(ops: std::net::SocketAddr) -> u64 {
    let status = format!("http://{ops}/api/status");
    let body: serde_json::Value = reqwest::get(&status).await.unwrap().json().await.unwrap();
    body["worlds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["players"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_bots_walk_the_demo_world_without_corrections() {
    // The test world is the seeded demo world, with its blocked and slow areas.
    let shard = Shard::start().await;
    let ops = shard.ops;

    let mut options = minted(&shard);
    options.bots = 50;
    // 20 probes and 30 load bots, so that both kinds of bot are exercised.
    options.probes = Some(20);
    options.ramp = 1.0;
    options.duration = 4.0;
    let json = run(options).await;

    assert_eq!(json["connected"], 50, "{json:#}");
    assert_eq!(json["failed"], 0, "{json:#}");
    assert_eq!(json["corrections"], 0, "{json:#}");
    assert_eq!(json["errors"], 0, "{json:#}");
    assert_eq!(json["disconnects"], 0, "{json:#}");
    assert_eq!(json["passed"], true, "{json:#}");
    assert_eq!(json["auth"], "mint");
    // Every probe measured acks: 20 probes × 10 moves/s × 4 s, give or take.
    let acks = json["move_ack_ms"]["count"].as_u64().unwrap();
    assert!(acks > 400, "only {acks} acks measured: {json:#}");
    // Every bot moved: 50 × 10 moves/s, give or take.
    let moves = json["moves_per_s"].as_f64().unwrap();
    assert!(moves > 350.0, "only {moves} moves/s: {json:#}");
    let p50 = json["move_ack_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 1000.0, "{json:#}");
    // The probes timed their updates' age: on one host, the tick's wall
    // clock is a few ms behind the probe's when its update arrives.
    let stale = &json["staleness_ms"];
    assert!(stale["count"].as_u64().unwrap() > 400, "{json:#}");
    let stale_p50 = stale["p50"].as_f64().unwrap();
    assert!(stale_p50 > 0.0 && stale_p50 < 1000.0, "{json:#}");
    // At most one `Update` a tick (20 Hz), counting each bot for the time
    // it was connected.
    let updates = json["updates_per_bot_per_s"].as_f64().unwrap();
    assert!(updates > 1.0 && updates <= 21.0, "{json:#}");
    assert!(json["bytes_in_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["bots_process"]["cpu_percent"].as_f64().unwrap() >= 0.0);

    // The bots closed with code 1000: their players left at once.
    let mut players = u64::MAX;
    for _ in 0..50 {
        players = players_in_world(ops).await;
        if players == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(players, 0, "players still in the world after the bots left");

    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooders_are_kicked_again_and_again_while_the_bots_walk_on() {
    let shard = Shard::start().await;
    let mut options = minted(&shard);
    options.bots = 30;
    options.ramp = 1.0;
    options.duration = 4.0;
    options.flooders = 3;
    let json = run(options).await;

    let flood = &json["flood"];
    let sessions = flood["sessions"].as_u64().unwrap();
    let kicked = flood["kicked"].as_u64().unwrap();
    assert!(
        sessions >= 6,
        "each flooder came back after a kick: {flood}"
    );
    assert!(
        kicked + 3 >= sessions,
        "every session but the last was kicked: {flood}"
    );
    assert!(flood["rate_limited"].as_u64().unwrap() >= kicked, "{flood}");
    assert_eq!(flood["passed"], true, "{flood}");
    // The walking bots saw none of it.
    assert_eq!(json["connected"], 30, "{json:#}");
    assert_eq!(json["errors"], 0, "{json:#}");
    assert_eq!(json["kicks"], 0, "{json:#}");
    assert_eq!(json["disconnects"], 0, "{json:#}");
    assert_eq!(json["passed"], true, "{json:#}");
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_rush_captures_flags_and_every_capture_is_told_once() {
    let shard = Shard::start().await;
    let ops = shard.ops;

    let mut options = minted(&shard);
    options.bots = 60;
    options.probes = Some(30);
    options.ramp = 1.0;
    // Three rounds: each group walks to its next flag and holds it.
    options.duration = 45.0;
    options.radius_m = Some(80.0);
    options.max_speed = 8.0;
    options.flag_rush = 4;
    options.rush_round_s = 15.0;
    options.rush_ring_m = 40.0;
    let json = run(options).await;

    let rush = &json["flag_rush"];
    assert_eq!(json["connected"], 60, "{json:#}");
    assert_eq!(json["corrections"], 0, "{json:#}");
    assert_eq!(json["errors"], 0, "{json:#}");
    assert!(rush["captures"].as_u64().unwrap() >= 2, "{rush:#}");
    assert_eq!(rush["probes_checked"], 30, "{rush:#}");
    assert_eq!(
        (&rush["duplicates"], &rush["lost"], &rush["phantom"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{rush:#}"
    );
    assert_eq!(rush["passed"], true, "{rush:#}");
    assert_eq!(json["passed"], true, "{json:#}");

    // The rush's flags are gone again; their captures stay in the history.
    let http = reqwest::Client::new();
    let flags: serde_json::Value = http
        .get(format!("http://{ops}/admin/flags"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = flags["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["properties"]["name"].as_str())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("rush-")), "{names:?}");

    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_only_logs_every_bot_in_and_joins_none() {
    let shard = Shard::start().await;
    let mut options = Options::new(vec![format!("ws://{}/ws", shard.game)]);
    options.login = true;
    options.logins_only = true;
    // Twelve account calls: under the test shard's 20 per minute and address.
    options.bots = 6;
    options.prefix = "storm".into();
    options.no_server_stats = true;
    options.quiet = true;
    let json = run(options).await;

    assert_eq!(json["auth"], "login", "{json:#}");
    assert_eq!(json["tokens"], 6, "{json:#}");
    assert_eq!(json["failed"], 0, "{json:#}");
    assert_eq!(json["connected"], 0, "{json:#}");
    assert_eq!(json["passed"], true, "{json:#}");
    assert_eq!(json["login_ms"]["count"], 6, "{json:#}");
    assert_eq!(players_in_world(shard.ops).await, 0, "no bot joined");

    shard.stop().await;
}
