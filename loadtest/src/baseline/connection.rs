//! One baseline connection: the `/ws` upgrade with the shard's socket
//! limits, `Hello` and `Welcome`, a reader that records moves, and a writer
//! that sends one `Update` per tick.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use meridian_protocol::codec::write_bincode_update;
use meridian_protocol::{ClientMessage, Encoding, EntityState, LonLat, ServerMessage, Update};
use uuid::Uuid;

use super::hub::{Group, Hub};
use super::WELCOME_POSITION;

/// As the shard: a socket must say `Hello` this soon.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// As the shard: a send blocked this long drops the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `/ws` route.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(hub)
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some((ws, encoding)) = meridian_server::net::negotiate(ws) else {
        return (
            StatusCode::BAD_REQUEST,
            "request meridian.v1.bincode or meridian.v1.json",
        )
            .into_response();
    };
    // Any bearer token is accepted, as any Hello is: there is no account here.
    let by_header = headers.contains_key(header::AUTHORIZATION);
    ws.on_upgrade(move |socket| serve(hub, socket, encoding, by_header))
}

fn frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    if encoding.is_text() {
        Message::Text(String::from_utf8(bytes).expect("JSON is UTF-8").into())
    } else {
        Message::Binary(Bytes::from(bytes))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serve one socket until either side ends it.
async fn serve(hub: Arc<Hub>, socket: WebSocket, encoding: Encoding, by_header: bool) {
    let (mut sink, mut stream) = socket.split();
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
        server_time_ms: now_ms(),
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
    let ack = AtomicU32::new(0);
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            let bytes: Bytes = match message {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Message::Close(_) => return,
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
    };
    let writer = write(&group, me, encoding, &ack, &mut sink);
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    group.leave(me);
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// One `Update` per tick with the others who moved and this client's ack;
/// nothing when neither changed.
async fn write<S>(group: &Group, me: u32, encoding: Encoding, ack: &AtomicU32, sink: &mut S)
where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin,
{
    let mut ticks = group.subscribe();
    let mut last_ack = 0;
    // Reused like the server's writer does: no allocation per frame.
    let mut buffer = BytesMut::new();
    let mut moved = Vec::new();
    while ticks.changed().await.is_ok() {
        let tick = Arc::clone(&ticks.borrow_and_update());
        let ack_seq = ack.load(Ordering::Relaxed);
        moved.clear();
        moved.extend(tick.moved.iter().filter(|(id, ..)| *id != me));
        if moved.is_empty() && ack_seq == last_ack {
            continue;
        }
        last_ack = ack_seq;
        let mut header = Update {
            tick: tick.tick,
            server_time_ms: tick.server_time_ms,
            ack_seq,
            entered: Vec::new(),
            moved: Vec::new(),
            left: Vec::new(),
        };
        let message = match encoding {
            Encoding::Bincode => {
                buffer.reserve(32 + moved.len() * 16);
                write_bincode_update(
                    &mut (&mut buffer).writer(),
                    &header,
                    moved.iter().map(|(_, _, wire)| wire),
                )
                .expect("writing to memory cannot fail");
                Message::Binary(buffer.split().freeze())
            }
            Encoding::Json => {
                header.moved = moved.iter().map(|(_, state, _)| *state).collect();
                frame(encoding, encoding.encode(&ServerMessage::Update(header)))
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
