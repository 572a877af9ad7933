//! The `/ws` route: subprotocol negotiation, optional header authentication,
//! and socket limits, before handing the socket to its connection task.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meridian_protocol::{limits, Encoding};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::forwarded::ClientIp;
use super::socket::{Frames, Handshake, Writer};
use super::{connection, Gateway};
use crate::auth::AuthError;

/// Bytes read from a socket at a time. tungstenite zero-fills this much of its
/// buffer before every read attempt (including the one that finds nothing),
/// so it is kept small: a `Move` is about 40 bytes, and the rare larger frame
/// (up to `MAX_FRAME_BYTES`) is simply read in several pieces. At 8 KiB the
/// zeroing alone cost 2.5 % of the server's CPU at 4,000 players.
const READ_BUFFER_BYTES: usize = 1024;

/// The kernel's send buffer per game socket (Linux doubles it for its own
/// bookkeeping). One tick's frame is a few KiB, so this holds dozens of
/// ticks; left to itself Linux grows a socket whose client stops reading to
/// `net.ipv4.tcp_wmem`'s 4 MiB, and a stuck client would then take minutes
/// to block a write (`WRITE_TIMEOUT`) while holding that much kernel memory.
const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Set up an accepted game socket: no Nagle delay (updates are small and
/// latency-bound, never worth coalescing) and a bounded send buffer. The
/// transport baseline calls this too.
pub fn tune_socket(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(tcp).set_send_buffer_size(SEND_BUFFER_BYTES);
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
struct WsQuery {
    /// World to join when authenticating by header (a `Hello` names its own).
    world: Option<String>,
}

/// Pick a socket's encoding from the subprotocols its client requested (the
/// first of ours it asked for, in our order). `None` if it requested none of
/// ours. The transport baseline calls this too, so that it is the same stack
/// as the gateway.
#[must_use]
pub fn negotiate(handshake: &Handshake) -> Option<Encoding> {
    Encoding::SUBPROTOCOLS
        .iter()
        .find(|protocol| handshake.requested(protocol))
        .and_then(|protocol| Encoding::from_subprotocol(protocol))
}

/// Accept an upgrade negotiated as `encoding` with the gateway's reading
/// limits (read buffer, frame size) and serve it with `serve`.
pub fn accept<F, Fut>(handshake: Handshake, encoding: Encoding, serve: F) -> Response
where
    F: FnOnce(Writer, Frames) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(limits::MAX_FRAME_BYTES))
        .max_frame_size(Some(limits::MAX_FRAME_BYTES))
        // What tungstenite writes (pongs, close answers) goes to the writer at once.
        .write_buffer_size(0);
    handshake.accept(encoding.subprotocol(), config, serve)
}

/// The game port's WebSocket route, and the play page that uses it.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/", get(crate::pages::play))
        .with_state(gateway)
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    ClientIp(client): ClientIp,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    let Some(encoding) = negotiate(&handshake) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_subprotocol",
            "request the subprotocol meridian.v1.bincode or meridian.v1.json",
        );
    };
    // Taken before the token is checked: a host opening sockets it never
    // authenticates holds them too, until the authentication timeout.
    let Some(slot) = gateway.addresses.acquire(client) else {
        metrics::counter!("meridian_connections_refused_total", "reason" => "per_address")
            .increment(1);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "too many open connections from this address",
        );
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let identity = match bearer {
        None => None,
        Some(token) => match gateway.auth.authenticate(token.trim()).await {
            Ok(identity) => Some(identity),
            Err(AuthError::InvalidToken) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "invalid or expired token",
                )
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot verify a token");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "try again later",
                );
            }
        },
    };
    accept(handshake, encoding, move |writer, frames| {
        let tracker = gateway.tracker.clone();
        let served = connection::serve(gateway, writer, frames, encoding, identity, query.world);
        tracker.track_future(async move {
            // The address's slot is given back when the connection ends.
            let _slot = slot;
            served.await;
        })
    })
}
