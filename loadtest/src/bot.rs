//! One probe bot: connect, authenticate, walk from where the server put it,
//! answer corrections, and read every frame the moment it arrives until the
//! test ends, timing each `Move` until an `Update` acknowledges it.
//!
//! The other bots are load, driven in batches over plain sockets (`load`),
//! so that thousands of bots cost little CPU next to the server they share
//! the machine with.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use meridian_protocol::{ClientMessage, Encoding, FlagChange, LonLat, ServerMessage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::stats::{histogram, unix_us, Counters, Stats, MAX_LATENCY_US};
use crate::tokens::TOKEN_FREE;
use crate::walk::{Walk, Walker};

/// How long a bot may take from starting to connect until its `Welcome`.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a closing bot waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read from the socket at a time. tungstenite zero-fills this much
/// before every read attempt (7 % of the bots' CPU at 8 KiB), and an `Update`
/// is a few hundred bytes; a larger frame is simply read in pieces.
pub(crate) const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Unacknowledged moves a probe remembers; older ones are given up on.
const MAX_PENDING: usize = 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one bot does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its number, from 0.
    pub index: usize,
    /// The game URL.
    pub url: String,
    /// Its access token; `None` sends a `Hello` with a dummy token.
    pub token: Option<String>,
    /// The world to join, if not the default.
    pub world: Option<String>,
    /// The wire encoding.
    pub encoding: Encoding,
    /// A probe (this module: decodes everything, times moves) or load (`load`).
    pub probe: bool,
    /// When to connect.
    pub start_at: Instant,
    /// Time between moves.
    pub move_period: Duration,
    /// Walking speed range, m/s.
    pub speeds: (f64, f64),
    /// Its flags in a flag rush.
    pub duty: Option<crate::rush::Duty>,
}

/// What all bots share.
#[derive(Debug)]
pub struct Shared {
    /// Counters and histograms.
    pub stats: Stats,
    /// Where to walk.
    pub walk: Walk,
    /// Latency is recorded for moves sent, and staleness for updates read,
    /// in this window (the steady state).
    pub window: (Instant, Instant),
    /// Cancelled when the test ends.
    pub stop: CancellationToken,
}

impl Shared {
    /// Whether `t` is in the steady state, where the probes measure.
    fn measures(&self, t: Instant) -> bool {
        let (from, to) = self.window;
        t >= from && t < to
    }
}

/// Run one bot to the end of the test. Failures are counted, not returned.
pub async fn run(plan: Plan, shared: Arc<Shared>) {
    let counters = &shared.stats.counters;
    tokio::select! {
        () = tokio::time::sleep_until(plan.start_at) => {}
        () = shared.stop.cancelled() => return,
    }
    let started = Instant::now();
    let joined = tokio::select! {
        joined = tokio::time::timeout(CONNECT_TIMEOUT, join(&plan, counters)) => joined,
        () = shared.stop.cancelled() => return,
    };
    let (socket, position) = match joined {
        Ok(Ok(joined)) => joined,
        Ok(Err(reason)) => {
            tracing::debug!(bot = plan.index, %reason, "bot failed to join");
            Counters::inc(&counters.failed);
            return;
        }
        Err(_) => {
            tracing::debug!(bot = plan.index, "bot timed out joining");
            Counters::inc(&counters.failed);
            return;
        }
    };
    Stats::record(&shared.stats.connect, started.elapsed().as_micros() as u64);
    Counters::inc(&counters.connected);
    let rng = SmallRng::seed_from_u64(plan.index as u64 ^ 0x5eed_cafe);
    let mut bot = Bot {
        walker: Walker::new(position, plan.speeds, plan.duty, rng),
        socket,
        seq: 0,
        pending: VecDeque::new(),
        latency: histogram(),
        staleness: histogram(),
        captures: Vec::new(),
        plan,
        shared: Arc::clone(&shared),
    };
    let stayed = bot.walk().await;
    Stats::merge(&shared.stats.move_ack, &bot.latency);
    Stats::merge(&shared.stats.staleness, &bot.staleness);
    // Only a probe that was there to the end can say what it was not told.
    if let (Some(rush), true) = (&shared.walk.rush, stayed) {
        rush.record(bot.captures);
    }
}

/// The upgrade request of a plan: its URL (with the world when the token
/// names the account), the subprotocol and, if it has one, its token.
pub(crate) fn request(plan: &Plan) -> Result<Request, String> {
    let url = match (&plan.token, &plan.world) {
        (Some(_), Some(world)) => format!("{}?world={world}", plan.url),
        _ => plan.url.clone(),
    };
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(plan.encoding.subprotocol()),
    );
    if let Some(token) = &plan.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        headers.insert("Authorization", value);
    }
    Ok(request)
}

/// The `Hello` a plan without a token sends first (counted as sent).
pub(crate) fn hello(plan: &Plan, counters: &Counters) -> Option<Message> {
    plan.token.is_none().then(|| {
        let hello = frame(
            plan.encoding,
            &ClientMessage::Hello {
                token: TOKEN_FREE.into(),
                world: plan.world.clone(),
                resume: None,
            },
        );
        Counters::add(&counters.bytes_out, hello.len());
        hello
    })
}

/// Count a frame received before `Welcome`: the player's position once it is
/// the `Welcome`, `None` for anything else to skip, `Err` for an `Error`.
pub(crate) fn welcome(
    plan: &Plan,
    counters: &Counters,
    bytes: &[u8],
) -> Result<Option<LonLat>, String> {
    Counters::add(&counters.bytes_in, bytes.len());
    Counters::inc(&counters.frames_in);
    match plan.encoding.decode_server(bytes) {
        Ok(ServerMessage::Welcome { position, .. }) => Ok(Some(position)),
        Ok(ServerMessage::Error { code, message }) => {
            Counters::inc(&counters.errors);
            Err(format!("error before Welcome: {code:?} {message}"))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(format!("undecodable frame: {e}")),
    }
}

/// Connect, authenticate and wait for `Welcome`; returns the socket and
/// where the server put the player.
pub(crate) async fn join(plan: &Plan, counters: &Counters) -> Result<(Socket, LonLat), String> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    // TCP_NODELAY: moves are tiny and latency is what is measured.
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request(plan)?, Some(config), true)
            .await
            .map_err(|e| e.to_string())?;
    if let Some(hello) = hello(plan, counters) {
        socket.send(hello).await.map_err(|e| e.to_string())?;
    }
    loop {
        let message = match socket.next().await {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before Welcome: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before Welcome".into()),
        };
        if let Some(position) = welcome(plan, counters, &message)? {
            return Ok((socket, position));
        }
    }
}

/// A message as a frame of the encoding.
pub(crate) fn frame(encoding: Encoding, message: &ClientMessage) -> Message {
    let bytes = encoding.encode(message);
    if encoding.is_text() {
        // serde_json writes UTF-8.
        Message::Text(String::from_utf8(bytes).expect("JSON is UTF-8").into())
    } else {
        Message::Binary(bytes.into())
    }
}

/// Whether a frame is an `Update`, from its first bytes: bincode starts with
/// the variant index (1, one byte), JSON with the variant's name.
pub(crate) fn is_update(encoding: Encoding, frame: &[u8]) -> bool {
    match encoding {
        Encoding::Bincode => frame.first() == Some(&1),
        Encoding::Json => frame.starts_with(b"{\"Update\""),
    }
}

/// A joined bot.
struct Bot {
    plan: Plan,
    shared: Arc<Shared>,
    socket: Socket,
    walker: Walker,
    /// The last `Move.seq` sent.
    seq: u32,
    /// Moves sent in the window and not yet acknowledged.
    pending: VecDeque<(u32, Instant)>,
    /// Move→ack latency in µs.
    latency: Histogram<u64>,
    /// `Update` staleness in µs: its arrival on the wall clock less its
    /// `server_time_ms`.
    staleness: Histogram<u64>,
    /// The flag-rush captures this probe was told of, in order.
    captures: Vec<uuid::Uuid>,
}

impl Bot {
    /// Move and read until the test ends (true) or the socket does (false).
    async fn walk(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let counters = &shared.stats.counters;
        let period = self.plan.move_period;
        // A random phase, so that bots that joined together do not move together.
        let phase = period.mul_f64(rand::rng().random_range(0.0..1.0));
        let mut moves = tokio::time::interval_at(Instant::now() + phase, period);
        // A bot that falls behind moves less rather than in a burst.
        moves.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shared.stop.cancelled() => {
                    self.close().await;
                    return true;
                }
                _ = moves.tick() => {
                    if !self.step().await {
                        Counters::inc(&counters.disconnects);
                        return false;
                    }
                }
                frame = self.socket.next() => {
                    let bytes = match frame {
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Text(t))) => Bytes::from(t),
                        Some(Ok(Message::Close(frame))) => {
                            tracing::debug!(bot = self.plan.index, ?frame, "server closed the socket");
                            Counters::inc(&counters.disconnects);
                            return false;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            tracing::debug!(bot = self.plan.index, error = %e, "socket failed");
                            Counters::inc(&counters.disconnects);
                            return false;
                        }
                        None => {
                            Counters::inc(&counters.disconnects);
                            return false;
                        }
                    };
                    if !self.receive(&bytes).await {
                        Counters::inc(&counters.disconnects);
                        return false;
                    }
                }
            }
        }
    }

    /// Take one step and send it; false if the socket failed.
    async fn step(&mut self) -> bool {
        self.seq += 1;
        let message = self.walker.next_move(
            self.plan.move_period.as_secs_f64(),
            &self.shared.walk,
            self.seq,
        );
        let frame = frame(self.plan.encoding, &message);
        let counters = &self.shared.stats.counters;
        Counters::add(&counters.bytes_out, frame.len());
        Counters::inc(&counters.moves_out);
        let sent_at = Instant::now();
        if self.socket.send(frame).await.is_err() {
            return false;
        }
        if self.shared.measures(sent_at) {
            if self.pending.len() == MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((self.seq, sent_at));
        }
        true
    }

    /// Count a frame and act on it; false if the socket failed.
    async fn receive(&mut self, bytes: &[u8]) -> bool {
        let counters = &self.shared.stats.counters;
        Counters::add(&counters.bytes_in, bytes.len());
        Counters::inc(&counters.frames_in);
        if is_update(self.plan.encoding, bytes) {
            Counters::inc(&counters.updates_in);
        }
        let message = match self.plan.encoding.decode_server(bytes) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(bot = self.plan.index, error = %e, "undecodable server frame");
                Counters::inc(&counters.errors);
                return true;
            }
        };
        match message {
            ServerMessage::Update(u) => {
                let now = Instant::now();
                if self.shared.measures(now) {
                    let age = unix_us().saturating_sub(u.server_time_ms.saturating_mul(1000));
                    self.staleness
                        .saturating_record(age.clamp(1, MAX_LATENCY_US));
                }
                while let Some(&(seq, sent_at)) = self.pending.front() {
                    if seq > u.ack_seq {
                        break;
                    }
                    self.pending.pop_front();
                    self.latency
                        .saturating_record((now - sent_at).as_micros().max(1) as u64);
                }
            }
            ServerMessage::Correction {
                id,
                lon,
                lat,
                reason,
                ..
            } => {
                tracing::debug!(bot = self.plan.index, reason = reason.as_str(), "corrected");
                Counters::inc(&counters.corrections);
                self.walker.position = LonLat { lon, lat };
                // Moves are ignored until the correction is acknowledged;
                // the refused ones will never be acked.
                self.pending.clear();
                let ack = frame(self.plan.encoding, &ClientMessage::AckCorrection { id });
                Counters::add(&counters.bytes_out, ack.len());
                if self.socket.send(ack).await.is_err() {
                    return false;
                }
            }
            ServerMessage::Error { code, message } => {
                tracing::debug!(bot = self.plan.index, ?code, %message, "server error");
                Counters::inc(&counters.errors);
            }
            ServerMessage::Kicked { reason, .. } => {
                tracing::debug!(bot = self.plan.index, reason = reason.as_str(), "kicked");
                Counters::inc(&counters.kicks);
            }
            ServerMessage::FlagEvent {
                flag_id,
                change: FlagChange::Captured { capture_id, .. },
                ..
            } => {
                if self
                    .shared
                    .walk
                    .rush
                    .as_ref()
                    .is_some_and(|r| r.is_ours(flag_id))
                {
                    self.captures.push(capture_id);
                }
            }
            ServerMessage::Welcome { .. }
            | ServerMessage::AreaEvent { .. }
            | ServerMessage::Pong { .. }
            | ServerMessage::ChatMessage { .. }
            | ServerMessage::Flags { .. }
            | ServerMessage::FlagEvent { .. } => {}
        }
        true
    }

    /// Leave cleanly: a close with code 1000 removes the player at once.
    async fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if self.socket.close(Some(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.socket.next().await {}
        })
        .await;
    }
}
