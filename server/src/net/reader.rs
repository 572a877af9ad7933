//! The reading half of a joined connection: frames in, limits enforced, inputs
//! forwarded to the tick. Answers that need no world (pongs, errors) go out
//! through the connection's outbox.
//!
//! The reader never fills the outbox: the tick `try_send`s into it and closes
//! a client whose outbox is full as too slow, so a burst of pings answered
//! faster than the writer sends them would otherwise turn into a `TooSlow`
//! kick. When fewer than `TICK_HEADROOM` slots are free the reader waits for
//! the writer and stops reading the socket meanwhile, which pushes back on a
//! flooding client through TCP instead of dropping its answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use meridian_protocol::{close, ClientMessage, Encoding, ErrorCode, KickReason, ServerMessage};
use tokio::sync::{mpsc, Notify};

use super::limiter::Limiter;
use super::socket::{Frames, Writer};
use super::NetSettings;
use super::{fanout, frames};
use crate::store::now_ms;
use crate::world::chat::{self, CHAT_PER_SECOND};
use crate::world::{Command, ConnLink, Input};

/// Outbox slots the reader leaves free for the tick's messages (corrections,
/// area events, kicks), of `world::link::OUTBOX_CAPACITY`.
const TICK_HEADROOM: usize = 16;

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What the reader needs.
pub struct Reader {
    /// Frames from the client.
    pub stream: Frames,
    /// Frames to the client (served by the fan-out; the reader only answers
    /// pings through it).
    pub sink: Arc<Mutex<Writer>>,
    /// The connection's outbox and signals.
    pub link: ConnLink,
    /// The tick's command channel.
    pub commands: mpsc::Sender<Command>,
    /// The player's entity id.
    pub me: u32,
    /// The socket's encoding.
    pub encoding: Encoding,
    /// Limits.
    pub settings: NetSettings,
    /// Notified by the writer each time it takes a message from the outbox.
    pub room: Arc<Notify>,
}

/// How reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed with code 1000: it is leaving the game.
    Left,
    /// Anything else (a drop, a kick, a limit): the player may resume.
    Dropped,
}

/// Read until the client closes, breaks a limit, or the connection is closed.
pub async fn run(mut reader: Reader) -> End {
    let end = read(&mut reader).await;
    if reader.link.signals.is_closed() {
        // The server is closing. Read on, discarding, until the client answers
        // the writer's close frame: closing a socket with unread input makes
        // the kernel reset the connection, and a client still sending (a
        // flood) would lose the `Kicked` and the close frame before it.
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(frame)) = reader.stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        // The client closed or vanished: stop the writer too, which would
        // otherwise only notice on its next send, perhaps never if nothing
        // near the player changes.
        reader.link.signals.close(close::NORMAL, "");
    }
    end
}

async fn read(reader: &mut Reader) -> End {
    let mut limiter = Limiter::new(reader.settings.client_msg_rate, Instant::now());
    let mut chat_limiter = Limiter::new(CHAT_PER_SECOND, Instant::now());
    let signals = Arc::clone(&reader.link.signals);
    // Both futures live across the loop: creating a cancellation wait or a
    // timer per frame registers and removes a waker or timer entry each time,
    // which at tens of thousands of frames a second was measurable. The idle
    // timer is re-armed only when it fires, from the time of the last frame.
    let closed = signals.closed();
    tokio::pin!(closed);
    let idle_timeout = reader.settings.idle_timeout;
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut last_frame = Instant::now();
    let mut bytes_in = Tally::new(
        metrics::counter!("meridian_bytes_total", "direction" => "in"),
        last_frame,
    );
    loop {
        let next = tokio::select! {
            biased;
            () = &mut closed => return End::Dropped,
            next = reader.stream.next() => Ok(next),
            () = &mut idle => {
                let deadline = last_frame + idle_timeout;
                if deadline > Instant::now() {
                    idle.as_mut().reset(deadline.into());
                    continue;
                }
                Err(())
            }
        };
        // One clock read a frame serves the idle timer and the rate limit.
        let now = Instant::now();
        last_frame = now;
        let frame = match next {
            Err(()) => {
                reply(reader, kicked(KickReason::Idle)).await;
                signals.close(close::IDLE, "idle timeout");
                return End::Dropped;
            }
            Ok(None) => return End::Dropped,
            Ok(Some(Err(err))) => {
                // tungstenite refuses frames over the limit before we see them.
                let code = refusal_code(&err);
                if code == close::TOO_BIG {
                    reply(
                        reader,
                        error(
                            ErrorCode::TooLarge,
                            format!(
                                "frames are limited to {} bytes",
                                meridian_protocol::limits::MAX_FRAME_BYTES
                            ),
                        ),
                    )
                    .await;
                    signals.close(close::TOO_BIG, "frame too large");
                } else {
                    tracing::debug!(error = %err, "socket read failed");
                    let reason = if code == close::INVALID_PAYLOAD {
                        "text frame not UTF-8"
                    } else {
                        "protocol error"
                    };
                    signals.close(code, reason);
                }
                return End::Dropped;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let bytes = match (frame, reader.encoding.is_text()) {
            (Message::Text(text), true) => bytes::Bytes::from(text),
            (Message::Binary(data), false) => data,
            (Message::Ping(_) | Message::Pong(_), _) => continue,
            (Message::Close(frame), _) => {
                // tungstenite's answer to the close frame goes out now, ahead
                // of anything the fan-out would send: after it, nothing may.
                reader.stream.flush();
                if let Ok(mut sink) = reader.sink.try_lock() {
                    let _ = fanout::flush(&mut *sink);
                }
                return match frame {
                    Some(frame) if frame.code == close::NORMAL => End::Left,
                    _ => End::Dropped,
                };
            }
            _ => {
                if refuse(
                    reader,
                    &mut limiter,
                    ErrorCode::WrongFrameType,
                    "this socket's subprotocol uses the other frame type".into(),
                )
                .await
                {
                    return End::Dropped;
                }
                continue;
            }
        };
        bytes_in.add(bytes.len(), now);
        if !limiter.allow(now) {
            if refuse(
                reader,
                &mut limiter,
                ErrorCode::RateLimited,
                format!(
                    "at most {} messages per second",
                    reader.settings.client_msg_rate
                ),
            )
            .await
            {
                return End::Dropped;
            }
            continue;
        }
        let message = match reader.encoding.decode_client(&bytes) {
            Ok(message) => message,
            Err(err) => {
                if refuse(reader, &mut limiter, err.code(), err.to_string()).await {
                    return End::Dropped;
                }
                continue;
            }
        };
        let input = match message {
            ClientMessage::Move {
                seq,
                lon,
                lat,
                heading,
                accuracy_m,
                fix_time_ms: _,
            } => Input::Move {
                seq,
                lon,
                lat,
                heading,
                accuracy_m,
            },
            ClientMessage::AckCorrection { id } => Input::AckCorrection { id },
            ClientMessage::Ping { client_time_ms } => {
                let pong = ServerMessage::Pong {
                    client_time_ms,
                    server_time_ms: now_ms() as u64,
                };
                // At once if the socket can take it, so that clients can time
                // round trips; otherwise with the next snapshot.
                let frame = frames::encode(reader.encoding, &pong);
                if !fanout::try_send_now(&reader.sink, frame) && !reply(reader, pong).await {
                    return End::Dropped;
                }
                continue;
            }
            ClientMessage::SetUpdateRate { hz } => {
                reader
                    .link
                    .signals
                    .set_update_hz(hz.min(reader.settings.tick_hz));
                continue;
            }
            ClientMessage::Chat { channel, text } => {
                if !chat_limiter.allow(Instant::now()) {
                    let message = format!(
                        "chat rate limit: at most {CHAT_PER_SECOND} message(s) a second; message dropped"
                    );
                    if refuse(reader, &mut limiter, ErrorCode::RateLimited, message).await {
                        return End::Dropped;
                    }
                    continue;
                }
                let command = Command::Chat {
                    entity: reader.me,
                    conn_id: reader.link.conn_id,
                    channel,
                    text: chat::clean(&text),
                };
                if reader.commands.try_send(command).is_err() {
                    reply(
                        reader,
                        error(ErrorCode::ServerBusy, "chat dropped, server busy".into()),
                    )
                    .await;
                }
                continue;
            }
            ClientMessage::Hello { .. } => {
                if refuse(
                    reader,
                    &mut limiter,
                    ErrorCode::UnexpectedMessage,
                    "already authenticated".into(),
                )
                .await
                {
                    return End::Dropped;
                }
                continue;
            }
        };
        let command = Command::Input {
            entity: reader.me,
            conn_id: reader.link.conn_id,
            input,
        };
        if reader.commands.try_send(command).is_err() {
            // The tick is saturated: shed this input rather than queue without bound.
            reply(
                reader,
                error(ErrorCode::ServerBusy, "input dropped, server busy".into()),
            )
            .await;
        }
    }
}

/// Tell the client why a frame was refused; returns true if it has now been
/// disconnected for sending too many refused frames (or the connection closed).
async fn refuse(reader: &Reader, limiter: &mut Limiter, code: ErrorCode, message: String) -> bool {
    if limiter.refuse(Instant::now()) {
        reply(reader, kicked(KickReason::ProtocolAbuse)).await;
        reader
            .link
            .signals
            .close(close::PROTOCOL_ABUSE, "too many refused frames");
        return true;
    }
    !reply(reader, error(code, message)).await
}

/// Queue an answer to the client once the outbox has room for it and for the
/// tick's messages (see the module comment). False if the connection closed.
async fn reply(reader: &Reader, message: ServerMessage) -> bool {
    let link = &reader.link;
    while link.outbox.capacity() <= TICK_HEADROOM {
        tokio::select! {
            () = reader.room.notified() => {}
            () = link.signals.closed() => return false,
        }
    }
    // Only the tick competes for the free slots, and it leaves most of them.
    link.send(message)
}

fn error(code: ErrorCode, message: String) -> ServerMessage {
    ServerMessage::Error { code, message }
}

fn kicked(reason: KickReason) -> ServerMessage {
    ServerMessage::Kicked {
        reason,
        retry_after_ms: None,
        redirect: None,
    }
}

/// The close code (RFC 6455 §7.4.1) for a frame the WebSocket layer
/// refused: too big for the limits, text that is not UTF-8, or any other
/// breach of the protocol (unmasked, reserved bits, a fragmented or
/// oversized control frame, a bad close code, an unknown opcode).
fn refusal_code(err: &axum::Error) -> u16 {
    use tokio_tungstenite::tungstenite::Error as WsError;
    // axum wraps tungstenite's error (the same crate version: axum's `ws`).
    let inner = std::error::Error::source(err).and_then(|e| e.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(_)) => close::TOO_BIG,
        Some(WsError::Utf8(_)) => close::INVALID_PAYLOAD,
        _ => close::PROTOCOL_ERROR,
    }
}

/// Bytes read, added to a shared counter at most once a second and when
/// reading ends rather than at each frame: the counter is one atomic for all
/// connections, and at tens of thousands of frames a second its cache line
/// moving between cores cost more than the rest of the accounting.
struct Tally {
    counter: metrics::Counter,
    bytes: u64,
    due: Instant,
}

impl Tally {
    const EVERY: Duration = Duration::from_secs(1);

    fn new(counter: metrics::Counter, now: Instant) -> Self {
        Self {
            counter,
            bytes: 0,
            due: now + Self::EVERY,
        }
    }

    fn add(&mut self, bytes: usize, now: Instant) {
        self.bytes += bytes as u64;
        if now >= self.due {
            self.flush();
            self.due = now + Self::EVERY;
        }
    }

    fn flush(&mut self) {
        self.counter.increment(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}
