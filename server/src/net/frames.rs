//! Turning server messages into WebSocket frames of the socket's encoding.

use axum::extract::ws::Message;
use bytes::{BufMut, Bytes, BytesMut};
use meridian_protocol::codec::write_bincode_update;
use meridian_protocol::{Encoding, EntityInfo, ServerMessage, Update};

use crate::world::interest::Delta;
use crate::world::Snapshot;

/// A message as a frame: binary for bincode, text for JSON.
pub fn encode(encoding: Encoding, message: &ServerMessage) -> Message {
    frame(encoding, encoding.encode(message))
}

fn frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    if encoding.is_text() {
        // JSON from serde_json is always valid UTF-8.
        Message::Text(String::from_utf8(bytes).expect("JSON is UTF-8").into())
    } else {
        Message::Binary(Bytes::from(bytes))
    }
}

/// The `Update` for one client: `delta` read against `snapshot`. In bincode the
/// moved entities' states are copied from the bytes the tick encoded once,
/// into `buffer`, the connection's own: once the socket has written a frame
/// and dropped it, its allocation returns to the buffer for the next one, so a
/// steady stream of updates allocates nothing per frame.
pub fn update(
    encoding: Encoding,
    snapshot: &Snapshot,
    ack_seq: u32,
    delta: &Delta,
    buffer: &mut BytesMut,
) -> Message {
    let entity = |slot: &u32| {
        snapshot.slots[*slot as usize]
            .as_ref()
            .expect("delta slots are occupied in their snapshot")
    };
    let mut header = Update {
        tick: snapshot.tick,
        server_time_ms: snapshot.server_time_ms,
        ack_seq,
        entered: delta
            .entered
            .iter()
            .map(|&slot| {
                let who = snapshot.roster[slot as usize]
                    .as_ref()
                    .expect("delta slots are occupied in their snapshot");
                EntityInfo {
                    player_id: who.player_id,
                    name: who.name.to_string(),
                    state: entity(&slot).state,
                }
            })
            .collect(),
        moved: Vec::new(),
        left: delta.left.clone(),
    };
    match encoding {
        Encoding::Bincode => {
            buffer.reserve(32 + delta.moved.len() * 16 + delta.entered.len() * 48);
            write_bincode_update(
                &mut (&mut *buffer).writer(),
                &header,
                delta.moved.iter().map(|s| &snapshot.hot[*s as usize].wire),
            )
            .expect("writing to memory cannot fail");
            Message::Binary(buffer.split().freeze())
        }
        Encoding::Json => {
            header.moved = delta.moved.iter().map(|s| entity(s).state).collect();
            encode(encoding, &ServerMessage::Update(header))
        }
    }
}
