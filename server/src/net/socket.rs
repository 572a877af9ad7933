//! The game socket below the fan-out: the WebSocket upgrade, and the two
//! halves of the TCP connection after it.
//!
//! Frames to the client are written straight into the socket by `Writer`:
//! the fan-out hands it a frame, the writer appends the frame's header and
//! payload to the connection's own buffer and writes that buffer to the
//! kernel, with no per-frame allocation and no lock shared with the reader.
//! Measured at 3,000 bots, this took 12 % of the shard's user-space CPU
//! off what going through axum's and tungstenite's write path cost (each
//! frame converted twice, framed into tungstenite's buffer, written through
//! the lock of the split stream).
//!
//! Frames from the client are read by tungstenite (`Frames`), which checks
//! them against RFC 6455 and the size limits. Whatever tungstenite writes on
//! its own (pongs to pings, the answer to the client's close frame) goes to a
//! small shared buffer, `Replies`, which the writer sends ahead of its next
//! frame, so the socket's bytes have a single writer and frames never
//! interleave.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Sink;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{self as ts, handshake::derive_accept_key};

use super::deadline::Deadlined;

/// Bytes of frames a writer holds unsent before it takes no more: one
/// `Update` is at most a few KiB, so a socket this far behind belongs to a
/// client that stopped reading (see `WRITE_TIMEOUT`). The kernel's send
/// buffer (`SEND_BUFFER_BYTES`) holds more before this one fills.
pub const MAX_UNSENT_BYTES: usize = 64 * 1024;

/// Most bytes of tungstenite's own frames (pongs, close answers) waiting for
/// the writer. A client sending pings faster than the shard writes its
/// frames fills it, and its socket is then closed as failed.
const MAX_REPLY_BYTES: usize = 512 * 1024;

/// A WebSocket upgrade request, checked as axum's `WebSocketUpgrade` checks
/// it (the same refusals: 405, 400, 426), for a socket served by `Writer`
/// and `Frames` instead of axum's `WebSocket`.
pub struct Handshake {
    key: HeaderValue,
    protocols: Vec<HeaderValue>,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotWebSocket(StatusCode, &'static str);

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotWebSocket(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ));
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !header_has(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ))?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(NotWebSocket(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ))?;
        let protocols = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|p| HeaderValue::from_bytes(p.trim_ascii()).ok())
            .collect();
        Ok(Self {
            key,
            protocols,
            on_upgrade,
        })
    }
}

impl Handshake {
    /// Whether the client asked for this subprotocol.
    #[must_use]
    pub fn requested(&self, protocol: &str) -> bool {
        self.protocols
            .iter()
            .any(|p| p.as_bytes() == protocol.as_bytes())
    }

    /// Accept the upgrade with `protocol` and serve the socket with `serve`
    /// once the client has it: the `101 Switching Protocols` response.
    /// `config` sets tungstenite's reading limits.
    pub fn accept<F, Fut>(
        self,
        protocol: &'static str,
        config: WebSocketConfig,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Writer, Frames) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(error = %err, "WebSocket upgrade failed");
                    return;
                }
            };
            let Some((tcp, read_buf)) = into_tcp(upgraded) else {
                tracing::error!("an upgraded connection is not a TCP stream");
                return;
            };
            let (writer, frames) = split(tcp, &read_buf, config);
            serve(writer, frames).await;
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&derive_accept_key(self.key.as_bytes()))
                        .expect("base64 is a valid header value"),
                ),
                (
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(protocol),
                ),
            ],
        )
            .into_response()
    }
}

/// The two halves of a WebSocket on `tcp` after its handshake: `read_buf`
/// holds what was read past the handshake, `config` tungstenite's reading
/// limits.
#[must_use]
pub fn split(tcp: TcpStream, read_buf: &[u8], config: WebSocketConfig) -> (Writer, Frames) {
    let (read, write) = tcp.into_split();
    let replies = Arc::new(Replies::default());
    let frames = Frames {
        context: WebSocketContext::from_partially_read(
            read_buf.to_vec(),
            Role::Server,
            Some(config),
        ),
        io: ReadSide {
            read,
            replies: Arc::clone(&replies),
        },
        ended: false,
    };
    (Writer::new(write, replies), frames)
}

/// The TCP stream under an upgraded connection, and the bytes the server
/// read past the request: the shard's listener hands out `Deadlined`
/// streams, a plain listener (the transport baseline) bare ones.
fn into_tcp(upgraded: hyper::upgrade::Upgraded) -> Option<(TcpStream, Bytes)> {
    use hyper_util::server::conn::auto::upgrade::downcast;
    match downcast::<TokioIo<Deadlined<TcpStream>>>(upgraded) {
        Ok(parts) => Some((parts.io.into_inner().into_inner(), parts.read_buf)),
        Err(upgraded) => downcast::<TokioIo<TcpStream>>(upgraded)
            .ok()
            .map(|parts| (parts.io.into_inner(), parts.read_buf)),
    }
}

/// Frames tungstenite wrote on its own, for the writer to send.
#[derive(Default)]
struct Replies {
    /// Set while `bytes` holds anything, so the writer's check for it is a
    /// load rather than a lock.
    pending: AtomicBool,
    bytes: Mutex<BytesMut>,
}

/// The reading half as tungstenite sees it: reads from the socket without
/// waiting (`WouldBlock` when it is empty), writes into `Replies`.
struct ReadSide {
    read: OwnedReadHalf,
    replies: Arc<Replies>,
}

impl io::Read for ReadSide {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.try_read(buf)
    }
}

impl io::Write for ReadSide {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let replies = &self.replies;
        let mut bytes = replies.bytes.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() + buf.len() > MAX_REPLY_BYTES {
            return Err(io::Error::other(
                "the client's pings are not being answered fast enough",
            ));
        }
        bytes.extend_from_slice(buf);
        replies.pending.store(true, Ordering::Release);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Frames from the client, as axum's messages. tungstenite is driven
/// directly on the non-blocking socket, waiting for readability only when
/// it has read everything there was: tokio-tungstenite's adapter, which
/// registers a waker per read and per write through a proxy of its own,
/// cost more than tungstenite's parsing.
pub struct Frames {
    context: WebSocketContext,
    io: ReadSide,
    /// The client closed or the stream failed: nothing more will come.
    ended: bool,
}

impl Frames {
    /// The next frame; `None` once the connection is closed. Cancel-safe:
    /// a partly read frame stays in tungstenite's buffer.
    pub async fn next(&mut self) -> Option<Result<Message, axum::Error>> {
        while !self.ended {
            match self.context.read(&mut self.io) {
                Ok(frame) => return Some(Ok(from_tungstenite(frame))),
                Err(ts::Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(err) = self.io.read.readable().await {
                        self.ended = true;
                        return Some(Err(axum::Error::new(ts::Error::Io(err))));
                    }
                }
                Err(ts::Error::ConnectionClosed | ts::Error::AlreadyClosed) => self.ended = true,
                Err(err) => {
                    self.ended = true;
                    return Some(Err(axum::Error::new(err)));
                }
            }
        }
        None
    }

    /// Hand tungstenite's pending answers (the reply to a close frame the
    /// client sent) to the writer.
    pub fn flush(&mut self) {
        let _ = self.context.flush(&mut self.io);
    }
}

fn from_tungstenite(frame: ts::Message) -> Message {
    match frame {
        // tungstenite has checked the text; axum's type checks it again.
        ts::Message::Text(text) => Message::Text(
            Utf8Bytes::try_from(Bytes::from(text)).expect("tungstenite's text is UTF-8"),
        ),
        ts::Message::Binary(data) => Message::Binary(data),
        ts::Message::Ping(data) => Message::Ping(data),
        ts::Message::Pong(data) => Message::Pong(data),
        // Raw frames are something tungstenite writes, never reads.
        ts::Message::Frame(_) => Message::Pong(Bytes::new()),
        ts::Message::Close(close) => Message::Close(close.map(|c| axum::extract::ws::CloseFrame {
            code: c.code.into(),
            reason: Utf8Bytes::from(c.reason.as_str()),
        })),
    }
}

/// The sending half: frames in, bytes to the socket, never waiting.
pub struct Writer {
    io: OwnedWriteHalf,
    /// Frames not yet taken by the kernel.
    out: BytesMut,
    replies: Arc<Replies>,
    /// A close frame has been queued: nothing may follow it.
    closed: bool,
}

impl Writer {
    fn new(io: OwnedWriteHalf, replies: Arc<Replies>) -> Self {
        Self {
            io,
            out: BytesMut::new(),
            replies,
            closed: false,
        }
    }

    /// Queue tungstenite's own frames ahead of the next one, noting a close.
    fn take_replies(&mut self) {
        if !self.replies.pending.load(Ordering::Acquire) {
            return;
        }
        let mut bytes = self.replies.bytes.lock().unwrap_or_else(|e| e.into_inner());
        self.replies.pending.store(false, Ordering::Release);
        if self.closed {
            bytes.clear();
            return;
        }
        if carries_close(&bytes) {
            self.closed = true;
        }
        self.out.extend_from_slice(&bytes);
        bytes.clear();
    }

    /// Write what the kernel takes: `Ready(Ok)` once `out` is empty.
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        self.out
            .reserve(header.len(payload.len() as u64) + payload.len());
        header
            .format(payload.len() as u64, &mut (&mut self.out).writer())
            .expect("writing to memory cannot fail");
        self.out.extend_from_slice(payload);
    }
}

/// Whether a run of whole frames, as tungstenite writes them, holds a close
/// frame.
fn carries_close(frames: &[u8]) -> bool {
    let mut cursor = io::Cursor::new(frames);
    while let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) {
        if header.opcode == OpCode::Control(Control::Close) {
            return true;
        }
        cursor.set_position(cursor.position().saturating_add(len));
    }
    false
}

fn closed_error() -> axum::Error {
    axum::Error::new(ts::Error::ConnectionClosed)
}

impl Sink<Message> for Writer {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.take_replies();
        if this.closed {
            return Poll::Ready(Err(closed_error()));
        }
        if this.out.len() < MAX_UNSENT_BYTES {
            return Poll::Ready(Ok(()));
        }
        match this.write_out(cx) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(axum::Error::new(err))),
            _ if this.out.len() < MAX_UNSENT_BYTES => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        if this.closed {
            return Err(closed_error());
        }
        match frame {
            Message::Text(text) => this.frame(OpCode::Data(Data::Text), text.as_bytes()),
            Message::Binary(data) => this.frame(OpCode::Data(Data::Binary), &data),
            Message::Ping(data) => this.frame(OpCode::Control(Control::Ping), &data),
            Message::Pong(data) => this.frame(OpCode::Control(Control::Pong), &data),
            Message::Close(close) => {
                let mut payload = Vec::new();
                if let Some(close) = close {
                    payload.extend_from_slice(&close.code.to_be_bytes());
                    payload.extend_from_slice(close.reason.as_bytes());
                }
                this.frame(OpCode::Control(Control::Close), &payload);
                this.closed = true;
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.take_replies();
        this.write_out(cx).map_err(axum::Error::new)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        std::task::ready!(Pin::new(&mut *this).poll_flush(cx))?;
        Pin::new(&mut this.io)
            .poll_shutdown(cx)
            .map_err(axum::Error::new)
    }
}
