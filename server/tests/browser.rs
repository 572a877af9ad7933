//! The play page and the dashboard in a real headless Chromium: a shard here,
//! players walking on it, and `tests/browser/pages.mjs` (playwright-core,
//! Debian's Chromium) driving the pages. Screenshots are left in
//! `target/browser/`. `scripts/test` installs Chromium and the npm package.

mod util;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_protocol::Encoding;
use util::{offset, TestServer, CENTER};

const OPS_TOKEN: &str = "browser-test-ops-token";
const PASSWORD: &str = "a-good-password";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_in_a_real_browser() {
    let server = TestServer::start_with(|c| c.ops_token = Some(OPS_TOKEN.into())).await;
    // Three players walk in circles, so the dashboard has dots that move.
    let mut walkers = Vec::new();
    for i in 0..3 {
        let at = offset(CENTER, f64::from(i) * 20.0, 100.0);
        walkers.push(
            server
                .player(&format!("walker{i}"), "arena", at, Encoding::Bincode)
                .await,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let walking = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut step = 0u32;
            while !stop.load(Ordering::Relaxed) {
                step += 1;
                let angle = f64::from(step) * 0.2;
                for (i, walker) in walkers.iter_mut().enumerate() {
                    let centre = offset(CENTER, i as f64 * 20.0, 100.0);
                    let to = offset(centre, 5.0 * angle.cos(), 5.0 * angle.sin());
                    walker.move_to(to).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            walkers
        })
    };
    // Two accounts 200 m apart, out of each other's view, for the play page.
    let (a, _) = server.login("annabel").await;
    let (b, _) = server.login("benedict").await;
    server
        .place(a, "arena", offset(CENTER, -100.0, -150.0))
        .await;
    server
        .place(b, "arena", offset(CENTER, 100.0, -150.0))
        .await;

    // A flag north of the spawn square, for the newcomer to capture.
    let spot = offset(CENTER, 0.0, 45.0);
    let properties =
        serde_json::json!({ "name": "Lighthouse", "world": "arena", "capture_time_s": 2 });
    server.create_flag(OPS_TOKEN, properties, spot).await;

    let script = workspace().join("tests/browser/pages.mjs");
    let artifacts = workspace().join("target/browser");
    let game = format!("http://{}", server.game);
    let ops = format!("http://{}", server.ops);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .env("GAME_URL", game)
            .env("OPS_URL", ops)
            .env("OPS_TOKEN", OPS_TOKEN)
            .env("PLAYER_A", "annabel")
            .env("PLAYER_B", "benedict")
            .env("PASSWORD", PASSWORD)
            .env("ARTIFACTS", &artifacts)
            .output()
            .expect("node runs (scripts/test installs Node's playwright-core and Chromium)")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let _walkers = walking.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    for shot in [
        "dashboard.png",
        "play-apart.png",
        "play-1.png",
        "play-2.png",
        "play-capture.png",
    ] {
        let path = workspace().join("target/browser").join(shot);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(
            size > 10_000,
            "{} is a real screenshot ({size} bytes)",
            path.display()
        );
    }
    server.stop().await;
}
