//! The bincode byte layout documented in the README, pinned byte for byte so
//! clients in other languages can rely on it.

use meridian_protocol::*;
use uuid::Uuid;

fn bytes(message: &impl serde::Serialize) -> Vec<u8> {
    Encoding::Bincode.encode(message)
}

#[test]
fn integers_are_varints_and_enums_start_with_their_variant_index() {
    // Ping = variant 2; client_time_ms 5 fits one byte.
    assert_eq!(bytes(&ClientMessage::Ping { client_time_ms: 5 }), [2, 5]);
    // 1000 needs the 251 marker and a little-endian u16.
    assert_eq!(
        bytes(&ClientMessage::Ping {
            client_time_ms: 1000
        }),
        [2, 251, 0xe8, 0x03]
    );
    // 1_795_239_419_007 needs the 253 marker and a little-endian u64.
    let mut want = vec![2, 253];
    want.extend_from_slice(&1_795_239_419_007u64.to_le_bytes());
    assert_eq!(
        bytes(&ClientMessage::Ping {
            client_time_ms: 1_795_239_419_007
        }),
        want
    );
    // AckCorrection = variant 3.
    assert_eq!(bytes(&ClientMessage::AckCorrection { id: 7 }), [3, 7]);
}

#[test]
fn a_move_is_floats_little_endian_and_options_are_tagged() {
    let message = ClientMessage::Move {
        seq: 1,
        lon: 4.9,
        lat: 52.37,
        heading: 90.0,
        accuracy_m: Some(5.0),
        fix_time_ms: None,
    };
    let mut want = vec![1, 1];
    want.extend_from_slice(&4.9f64.to_le_bytes());
    want.extend_from_slice(&52.37f64.to_le_bytes());
    want.extend_from_slice(&90.0f32.to_le_bytes());
    want.push(1);
    want.extend_from_slice(&5.0f32.to_le_bytes());
    want.push(0);
    assert_eq!(bytes(&message), want);
}

#[test]
fn strings_and_uuids_are_length_prefixed_and_entity_states_are_zigzag_varints() {
    let hello = ClientMessage::Hello {
        token: "ab".into(),
        world: None,
        resume: Some("x".into()),
    };
    assert_eq!(bytes(&hello), [0, 2, b'a', b'b', 0, 1, 1, b'x']);
    let update = ServerMessage::Update(Update {
        tick: 9,
        server_time_ms: 10,
        ack_seq: 3,
        entered: vec![EntityInfo {
            player_id: Uuid::from_u128(0x0102),
            name: "b".into(),
            state: EntityState {
                id: 2,
                lon_e7: -1,
                lat_e7: 1,
                heading_cdeg: 300,
                speed_cms: 0,
            },
        }],
        moved: vec![],
        left: vec![4],
    });
    let mut want = vec![1, 9, 10, 3, 1, 16];
    want.extend_from_slice(&0x0102u128.to_be_bytes());
    // name; state: id 2, lon -1 → zigzag 1, lat 1 → zigzag 2, heading 300 → 251 + u16, speed 0
    want.extend_from_slice(&[1, b'b', 2, 1, 2, 251, 0x2c, 0x01, 0]);
    want.extend_from_slice(&[0, 1, 4]);
    assert_eq!(bytes(&update), want);
}

#[test]
fn unit_enums_inside_messages_are_varint_indices() {
    let message = ServerMessage::Error {
        code: ErrorCode::RateLimited,
        message: String::new(),
    };
    assert_eq!(bytes(&message), [6, 4, 0]);
    let message = ServerMessage::Kicked {
        reason: KickReason::Shutdown,
        retry_after_ms: Some(5000),
        redirect: None,
    };
    assert_eq!(bytes(&message), [5, 2, 1, 251, 0x88, 0x13, 0]);
}

#[test]
fn a_chat_is_its_index_the_channel_index_and_a_string() {
    let chat = ClientMessage::Chat {
        channel: ChatChannel::World,
        text: "hi".into(),
    };
    assert_eq!(bytes(&chat), [5, 0, 2, b'h', b'i']);
}

#[test]
fn flag_events_are_their_index_a_number_a_uuid_and_the_change() {
    let flag_id = Uuid::from_bytes([7; 16]);
    let event = ServerMessage::FlagEvent {
        n: 3,
        flag_id,
        change: meridian_protocol::FlagChange::Leave,
    };
    let mut want = vec![9, 3, 16];
    want.extend_from_slice(&[7; 16]);
    want.push(1);
    assert_eq!(bytes(&event), want);
    let capturing = ServerMessage::FlagEvent {
        n: 4,
        flag_id,
        change: meridian_protocol::FlagChange::Capturing {
            team: "red".into(),
            done_ms: 300,
        },
    };
    let mut want = vec![9, 4, 16];
    want.extend_from_slice(&[7; 16]);
    want.extend_from_slice(&[2, 3, b'r', b'e', b'd', 251, 0x2c, 0x01]);
    assert_eq!(bytes(&capturing), want);
    let nearby = ClientMessage::Chat {
        channel: ChatChannel::Nearby,
        text: String::new(),
    };
    assert_eq!(bytes(&nearby), [5, 1, 0]);
}
