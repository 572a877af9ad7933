//! One baseline connection: the `/ws` upgrade with the shard's socket
//! limits, `Hello` and `Welcome`, and a reader that records moves; the
//! fan-out sends one `Update` per tick.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::SinkExt;
use meridian_protocol::{ClientMessage, Encoding, EntityState, LonLat, ServerMessage};
use meridian_server::net::socket::{Frames, Handshake, Writer};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::fanout::{FanOut, Outlet};
use super::hub::Hub;
use super::WELCOME_POSITION;
use crate::stats::unix_ms;

/// As the shard: a socket must say `Hello` this soon.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What connections share.
pub struct Baseline {
    /// Groups and ticks.
    pub hub: Arc<Hub>,
    /// The writing halves.
    pub fanout: FanOut,
}

/// The `/ws` route.
pub fn router(baseline: Arc<Baseline>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state(baseline)
}

async fn upgrade(
    State(baseline): State<Arc<Baseline>>,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    let Some(encoding) = meridian_server::net::negotiate(&handshake) else {
        return (
            StatusCode::BAD_REQUEST,
            "request meridian.v1.bincode or meridian.v1.json",
        )
            .into_response();
    };
    // Any bearer token is accepted, as any Hello is: there is no account here.
    let by_header = headers.contains_key(header::AUTHORIZATION);
    meridian_server::net::accept(handshake, encoding, move |sink, stream| {
        serve(baseline, sink, stream, encoding, by_header)
    })
}

/// Bytes of the encoding as a frame.
pub fn frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    if encoding.is_text() {
        Message::Text(String::from_utf8(bytes).expect("JSON is UTF-8").into())
    } else {
        Message::Binary(Bytes::from(bytes))
    }
}

/// Serve one socket until either side ends it.
async fn serve(
    baseline: Arc<Baseline>,
    mut sink: Writer,
    mut stream: Frames,
    encoding: Encoding,
    by_header: bool,
) {
    let hub = &baseline.hub;
    if !hub.no_auth && !by_header {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            while let Some(Ok(message)) = stream.next().await {
                let bytes: Bytes = match message {
                    Message::Binary(b) => b,
                    Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                    Message::Close(_) => return false,
                    _ => continue,
                };
                return matches!(
                    encoding.decode_client(&bytes),
                    Ok(ClientMessage::Hello { .. })
                );
            }
            false
        })
        .await;
        if hello != Ok(true) {
            return;
        }
    }
    let (me, group) = hub.join(WELCOME_POSITION);
    let welcome = ServerMessage::Welcome {
        player_id: Uuid::new_v4(),
        entity_id: me,
        shard_id: "baseline".into(),
        tick_hz: hub.tick_hz,
        position: WELCOME_POSITION,
        world: "baseline".into(),
        server_time_ms: unix_ms(),
        resume_token: String::new(),
    };
    if sink
        .send(frame(encoding, encoding.encode(&welcome)))
        .await
        .is_err()
    {
        group.leave(me);
        return;
    }
    let ack = Arc::new(AtomicU32::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let (done, fanned_out) = oneshot::channel();
    baseline.fanout.add(Outlet {
        sink,
        group: Arc::clone(&group),
        me,
        encoding,
        ack: Arc::clone(&ack),
        closed: Arc::clone(&closed),
        done,
    });
    while let Some(Ok(message)) = stream.next().await {
        let bytes: Bytes = match message {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
            Message::Close(_) => break,
            _ => continue,
        };
        if let Ok(ClientMessage::Move {
            seq,
            lon,
            lat,
            heading,
            ..
        }) = encoding.decode_client(&bytes)
        {
            group.moved(
                me,
                EntityState::quantize(me, LonLat { lon, lat }, heading, 0.0),
            );
            ack.store(seq, Ordering::Relaxed);
        }
    }
    group.leave(me);
    closed.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(1), fanned_out).await;
}
