//! `/metrics` on the ops port: the Prometheus text format, read by Python's
//! `prometheus_client` parser (the reference implementation's), with the
//! counters moving while players play.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_protocol::{Encoding, ServerMessage};
use serde_json::Value;
use util::{offset, Client, TestServer, CENTER};

/// Parse exposition text with `prometheus_client`; every sample as
/// `{"name", "labels", "value"}`, with the family's `type` beside it.
fn parse(text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

async fn scrape(server: &TestServer) -> Vec<Value> {
    let url = format!("http://{}/metrics", server.ops);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

/// Walk every client a step east and wait for the acks.
async fn step(clients: &mut [Client], metres: f64) {
    for client in clients.iter_mut() {
        let to = offset(client.position, metres, 0.0);
        client.position = to;
        let seq = client.move_to(to).await;
        client.acked(seq).await;
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_while_players_play() {
    let server = TestServer::start_with(|c| c.flush_interval = Duration::from_millis(100)).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let at = offset(CENTER, f64::from(i) * 5.0, -100.0);
        clients.push(
            server
                .player(&format!("metric{i}"), "arena", at, Encoding::Bincode)
                .await,
        );
    }
    step(&mut clients, 2.0).await;
    let before = scrape(&server).await;

    // Play: moves, one of them refused (a teleport), and a flush.
    for _ in 0..5 {
        step(&mut clients, 2.0).await;
    }
    let teleport = offset(clients[0].position, 500.0, 0.0);
    clients[0].move_to(teleport).await;
    let id = clients[0]
        .until(|m| match m {
            ServerMessage::Correction { id, .. } => Some(*id),
            _ => None,
        })
        .await;
    clients[0]
        .send(&meridian_protocol::ClientMessage::AckCorrection { id })
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = scrape(&server).await;

    let arena = [("world", "arena")];
    let moved =
        |samples: &[Value]| value(samples, "meridian_moves_accepted_total", &arena).unwrap_or(0.0);
    assert!(
        moved(&after) >= moved(&before) + 15.0,
        "accepted moves went from {} to {}",
        moved(&before),
        moved(&after)
    );
    let refused = value(
        &after,
        "meridian_moves_refused_total",
        &[("world", "arena"), ("reason", "too_fast")],
    );
    assert_eq!(refused, Some(1.0), "the teleport is counted by reason");
    assert_eq!(
        value(
            &after,
            "meridian_players",
            &[("world", "arena"), ("kind", "local")]
        ),
        Some(3.0)
    );
    assert_eq!(value(&after, "meridian_connections", &[]), Some(3.0));
    for direction in ["in", "out"] {
        let bytes = |s: &[Value]| {
            value(s, "meridian_bytes_total", &[("direction", direction)]).unwrap_or(0.0)
        };
        assert!(
            bytes(&after) > bytes(&before),
            "bytes {direction} did not move"
        );
    }
    // The tick's duration is a real histogram, with buckets and a count that
    // grows at the tick rate.
    let ticks =
        |s: &[Value]| value(s, "meridian_tick_duration_seconds_count", &arena).unwrap_or(0.0);
    assert!(
        ticks(&after) > ticks(&before) + 10.0,
        "{} → {}",
        ticks(&before),
        ticks(&after)
    );
    assert!(after.iter().any(
        |s| s["name"] == "meridian_tick_duration_seconds_bucket" && s["labels"]["le"] == "0.05"
    ));
    assert!(after
        .iter()
        .any(|s| s["name"] == "meridian_tick_step_duration_seconds_count"
            && s["labels"]["step"] == "movement"));
    // Every tick records how late it started; on an idle test machine that
    // is well under a tick period.
    let late =
        |s: &[Value]| value(s, "meridian_tick_lateness_seconds_count", &arena).unwrap_or(0.0);
    assert!(late(&after) > late(&before) + 10.0);
    let late_sum = value(&after, "meridian_tick_lateness_seconds_sum", &arena).unwrap_or(f64::MAX)
        - value(&before, "meridian_tick_lateness_seconds_sum", &arena).unwrap_or(0.0);
    assert!(
        late_sum / (late(&after) - late(&before)) < 0.05,
        "ticks started {late_sum} s late in all"
    );
    let flushed = |s: &[Value]| value(s, "meridian_flushed_positions_total", &[]).unwrap_or(0.0);
    assert!(flushed(&after) > flushed(&before), "no flush counted");
    assert!(value(&after, "meridian_flush_lag_seconds", &[]).unwrap() < 5.0);
    assert_eq!(value(&after, "meridian_flush_failing", &[]), Some(0.0));
    assert_eq!(
        value(
            &after,
            "meridian_login_attempts_total",
            &[("route", "register"), ("result", "ok")]
        ),
        Some(3.0)
    );
    assert!(value(&after, "meridian_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    let types: Vec<(&str, &str)> = after
        .iter()
        .map(|s| (s["family"].as_str().unwrap(), s["type"].as_str().unwrap()))
        .collect();
    assert!(
        types.contains(&("meridian_moves_accepted", "counter")),
        "{types:?}"
    );
    assert!(types.contains(&("meridian_players", "gauge")));
    assert!(types.contains(&("meridian_tick_duration_seconds", "histogram")));
    server.stop().await;
}
