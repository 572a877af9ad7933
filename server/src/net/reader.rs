//! The reading half of a joined connection: frames in, limits enforced, inputs
//! forwarded to the tick. Answers that need no world (pongs, errors) go out
//! through the connection's outbox.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use meridian_protocol::{close, ClientMessage, Encoding, ErrorCode, KickReason, ServerMessage};
use tokio::sync::mpsc;

use super::limiter::Limiter;
use super::NetSettings;
use crate::store::now_ms;
use crate::world::{Command, ConnLink, Input};

/// What the reader needs.
pub struct Reader {
    /// Frames from the client.
    pub stream: SplitStream<WebSocket>,
    /// The connection's outbox and closer.
    pub link: ConnLink,
    /// The tick's command channel.
    pub commands: mpsc::Sender<Command>,
    /// The player's entity id.
    pub me: u32,
    /// The socket's encoding.
    pub encoding: Encoding,
    /// Limits.
    pub settings: NetSettings,
    /// Shared with the writer: the client's chosen update rate.
    pub update_hz: Arc<AtomicU8>,
}

/// Read until the client closes, breaks a limit, or the connection is closed.
pub async fn run(mut reader: Reader) {
    let mut limiter = Limiter::new(reader.settings.client_msg_rate, Instant::now());
    let closer = Arc::clone(&reader.link.closer);
    loop {
        let next = tokio::select! {
            biased;
            () = closer.closed() => return,
            next = tokio::time::timeout(reader.settings.idle_timeout, reader.stream.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                reader.link.send(kicked(KickReason::Idle));
                closer.close(close::IDLE, "idle timeout");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(err))) => {
                // tungstenite refuses frames over the limit before we see them.
                if is_too_big(&err) {
                    reader.link.send(error(
                        ErrorCode::TooLarge,
                        format!(
                            "frames are limited to {} bytes",
                            meridian_protocol::limits::MAX_FRAME_BYTES
                        ),
                    ));
                    closer.close(close::TOO_BIG, "frame too large");
                } else {
                    tracing::debug!(error = %err, "socket read failed");
                    closer.close(1002, "protocol error");
                }
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let bytes = match (frame, reader.encoding.is_text()) {
            (Message::Text(text), true) => bytes::Bytes::from(text),
            (Message::Binary(data), false) => data,
            (Message::Ping(_) | Message::Pong(_), _) => continue,
            (Message::Close(_), _) => return,
            _ => {
                if refuse(
                    &reader.link,
                    &mut limiter,
                    ErrorCode::WrongFrameType,
                    "this socket's subprotocol uses the other frame type".into(),
                ) {
                    return;
                }
                continue;
            }
        };
        if !limiter.allow(Instant::now()) {
            if refuse(
                &reader.link,
                &mut limiter,
                ErrorCode::RateLimited,
                format!(
                    "at most {} messages per second",
                    reader.settings.client_msg_rate
                ),
            ) {
                return;
            }
            continue;
        }
        let message = match reader.encoding.decode_client(&bytes) {
            Ok(message) => message,
            Err(err) => {
                if refuse(&reader.link, &mut limiter, err.code(), err.to_string()) {
                    return;
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
                reader.link.send(ServerMessage::Pong {
                    client_time_ms,
                    server_time_ms: now_ms() as u64,
                });
                continue;
            }
            ClientMessage::SetUpdateRate { hz } => {
                reader
                    .update_hz
                    .store(hz.min(reader.settings.tick_hz), Ordering::Relaxed);
                continue;
            }
            ClientMessage::Hello { .. } => {
                if refuse(
                    &reader.link,
                    &mut limiter,
                    ErrorCode::UnexpectedMessage,
                    "already authenticated".into(),
                ) {
                    return;
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
            reader.link.send(error(
                ErrorCode::ServerBusy,
                "input dropped, server busy".into(),
            ));
        }
    }
}

/// Tell the client why a frame was refused; returns true if it has now been
/// disconnected for sending too many refused frames.
fn refuse(link: &ConnLink, limiter: &mut Limiter, code: ErrorCode, message: String) -> bool {
    let abusive = limiter.refuse(Instant::now());
    if abusive {
        link.send(kicked(KickReason::ProtocolAbuse));
        link.closer
            .close(close::PROTOCOL_ABUSE, "too many refused frames");
    } else {
        link.send(error(code, message));
    }
    abusive
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

fn is_too_big(err: &axum::Error) -> bool {
    let text = err.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("too big")
}
