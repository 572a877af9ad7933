//! The transport baseline under the same bots: everyone joins without an
//! account, gets an `Update` every tick and has every move acknowledged.

use std::time::Duration;

use meridian_loadtest::baseline::{self, BaselineOptions};
use meridian_loadtest::Options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_measure_the_baseline_like_a_shard() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = BaselineOptions {
        addr,
        fanout: 9,
        tick_hz: 20,
        no_auth: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(baseline::serve(listener, settings, async {
        let _ = stopped.await;
    }));

    let mut options = Options::new(vec![format!("ws://{addr}/ws")]);
    options.bots = 40;
    options.ramp = 0.5;
    options.duration = 3.0;
    options.token_free = true;
    options.no_server_stats = true;
    options.quiet = true;
    let report = meridian_loadtest::run(options)
        .await
        .expect("the load test runs");
    let json = serde_json::to_value(&report).unwrap();

    assert_eq!(json["connected"], 40, "{json:#}");
    assert_eq!(json["auth"], "token-free");
    assert_eq!(json["corrections"], 0, "{json:#}");
    assert_eq!(json["disconnects"], 0, "{json:#}");
    assert!(
        json["move_ack_ms"]["count"].as_u64().unwrap() > 500,
        "{json:#}"
    );
    // Groups of ten move all the time, so every tick brings an Update.
    let updates = json["updates_per_bot_per_s"].as_f64().unwrap();
    assert!((15.0..=21.0).contains(&updates), "{json:#}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the baseline stops")
        .unwrap()
        .unwrap();
}
