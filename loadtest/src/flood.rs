//! Flooders (`--flooders K`): clients beside the measured bots that send
//! moves at many times the shard's allowed message rate (`--flood-hz`,
//! ten times the default `CLIENT_MSG_RATE`). A shard must throttle each one
//! (`Error { rate_limited }`) and then kick it (`Kicked { protocol_abuse }`);
//! a kicked flooder reconnects at once with its token and floods again, so
//! that the flood lasts the whole steady state. What the flood costs the
//! other bots is the difference from the same run without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meridian_protocol::{ClientMessage, Encoding, ErrorCode, KickReason, ServerMessage};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::bot::{self, Plan, CONNECT_TIMEOUT};
use crate::stats::Counters;

/// How long a flooder waits before trying again after a failed connect.
const RETRY: Duration = Duration::from_millis(200);

/// What the flooders saw.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FloodReport {
    /// Flooding clients.
    pub flooders: usize,
    /// Moves each tried to send per second.
    pub hz: f64,
    /// Connections that got their `Welcome`.
    pub sessions: u64,
    /// Connections that could not join.
    pub failed: u64,
    /// `Error { rate_limited }` received.
    pub rate_limited: u64,
    /// `Kicked { protocol_abuse }` received.
    pub kicked: u64,
    /// Moves sent, all flooders.
    pub moves: u64,
    /// Every session was throttled and kicked, but for the last one of each
    /// flooder, which the end of the test may cut short.
    pub passed: bool,
}

#[derive(Debug, Default)]
struct Tally {
    sessions: AtomicU64,
    failed: AtomicU64,
    rate_limited: AtomicU64,
    kicked: AtomicU64,
    moves: AtomicU64,
}

/// The flooders of one test, running.
pub struct Flood {
    tally: Arc<Tally>,
    tasks: JoinSet<()>,
    flooders: usize,
    hz: f64,
}

impl Flood {
    /// Start one flooder per token against `urls` (round-robin), flooding
    /// from `window.0` until `window.1` or `stop`.
    #[must_use]
    pub fn start(
        tokens: Vec<String>,
        urls: &[String],
        world: Option<String>,
        encoding: Encoding,
        hz: f64,
        window: (Instant, Instant),
        stop: &CancellationToken,
    ) -> Self {
        let tally = Arc::new(Tally::default());
        let mut tasks = JoinSet::new();
        let flooders = tokens.len();
        for (index, token) in tokens.into_iter().enumerate() {
            let plan = Plan {
                index,
                url: urls[index % urls.len()].clone(),
                token: Some(token),
                world: world.clone(),
                encoding,
                probe: false,
                start_at: window.0,
                move_period: Duration::from_secs_f64(1.0 / hz),
                speeds: (0.0, 0.0),
                duty: None,
            };
            tasks.spawn(flood(plan, window.1, stop.clone(), Arc::clone(&tally)));
        }
        Self {
            tally,
            tasks,
            flooders,
            hz,
        }
    }

    /// Wait for the flooders to stop and sum up.
    pub async fn finish(mut self) -> FloodReport {
        while self.tasks.join_next().await.is_some() {}
        let t = &self.tally;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (sessions, kicked, rate_limited) =
            (read(&t.sessions), read(&t.kicked), read(&t.rate_limited));
        FloodReport {
            flooders: self.flooders,
            hz: self.hz,
            sessions,
            failed: read(&t.failed),
            rate_limited,
            kicked,
            moves: read(&t.moves),
            passed: sessions > 0
                && kicked + self.flooders as u64 >= sessions
                && rate_limited >= kicked,
        }
    }
}

/// One flooder: join, flood until kicked, and again, until `until`.
async fn flood(plan: Plan, until: Instant, stop: CancellationToken, tally: Arc<Tally>) {
    // Its own counters: what a flooder receives is not the measured bots'.
    let counters = Counters::default();
    tokio::select! {
        () = tokio::time::sleep_until(plan.start_at) => {}
        () = stop.cancelled() => return,
    }
    let mut seq = 0u32;
    while Instant::now() < until && !stop.is_cancelled() {
        let joined = tokio::time::timeout(CONNECT_TIMEOUT, bot::join(&plan, &counters)).await;
        let Ok(Ok((socket, at))) = joined else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = socket.split();
        let mut every = tokio::time::interval(plan.move_period);
        every.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    seq = seq.wrapping_add(1);
                    // Standing still: only the rate is wrong, not the moves.
                    let frame = bot::frame(plan.encoding, &ClientMessage::Move {
                        seq, lon: at.lon, lat: at.lat, heading: 0.0, accuracy_m: None, fix_time_ms: None,
                    });
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                    tally.moves.fetch_add(1, Ordering::Relaxed);
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => tell(plan.encoding, &bytes, &tally),
                    Some(Ok(Message::Text(text))) => tell(plan.encoding, text.as_bytes(), &tally),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                () = tokio::time::sleep_until(until) => {
                    let _ = sink.close().await;
                    return;
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Count what a flooder is told.
fn tell(encoding: Encoding, bytes: &[u8], tally: &Tally) {
    match encoding.decode_server(bytes) {
        Ok(ServerMessage::Error {
            code: ErrorCode::RateLimited,
            ..
        }) => {
            tally.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ServerMessage::Kicked {
            reason: KickReason::ProtocolAbuse,
            ..
        }) => {
            tally.kicked.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}
