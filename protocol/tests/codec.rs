//! Property tests of the codecs: every message round-trips in both encodings,
//! no input panics the decoder, and limits are enforced.

use meridian_protocol::codec::write_bincode_update;
use meridian_protocol::limits::MAX_FRAME_BYTES;
use meridian_protocol::*;
use proptest::prelude::*;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Finite floats: JSON cannot carry NaN or infinities (bincode can, tested below).
fn coord() -> impl Strategy<Value = f64> {
    -1.0e3..1.0e3f64
}

fn state() -> impl Strategy<Value = EntityState> {
    (
        any::<u32>(),
        any::<i32>(),
        any::<i32>(),
        0..36000u16,
        any::<u16>(),
    )
        .prop_map(
            |(id, lon_e7, lat_e7, heading_cdeg, speed_cms)| EntityState {
                id,
                lon_e7,
                lat_e7,
                heading_cdeg,
                speed_cms,
            },
        )
}

fn info() -> impl Strategy<Value = EntityInfo> {
    (uuid(), ".{0,16}", state()).prop_map(|(player_id, name, state)| EntityInfo {
        player_id,
        name,
        state,
    })
}

fn update() -> impl Strategy<Value = Update> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(info(), 0..4),
        prop::collection::vec(state(), 0..8),
        prop::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(tick, server_time_ms, ack_seq, entered, moved, left)| Update {
                tick,
                server_time_ms,
                ack_seq,
                entered,
                moved,
                left,
            },
        )
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            ".{0,40}",
            proptest::option::of("[a-z]{1,12}"),
            proptest::option::of("[a-f0-9]{8,64}")
        )
            .prop_map(|(token, world, resume)| ClientMessage::Hello {
                token,
                world,
                resume
            }),
        (
            any::<u32>(),
            coord(),
            coord(),
            -360.0..360.0f32,
            proptest::option::of(0.0..100.0f32),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(seq, lon, lat, heading, accuracy_m, fix_time_ms)| {
                ClientMessage::Move {
                    seq,
                    lon,
                    lat,
                    heading,
                    accuracy_m,
                    fix_time_ms,
                }
            }),
        any::<u64>().prop_map(|client_time_ms| ClientMessage::Ping { client_time_ms }),
        any::<u32>().prop_map(|id| ClientMessage::AckCorrection { id }),
        (1..=limits::MAX_UPDATE_HZ).prop_map(|hz| ClientMessage::SetUpdateRate { hz }),
        "[a-zA-Z0-9 ü🙂';-]{1,280}".prop_map(|text| ClientMessage::Chat {
            channel: ChatChannel::World,
            text,
        }),
    ]
}

fn reason() -> impl Strategy<Value = CorrectionReason> {
    prop_oneof![
        Just(CorrectionReason::InvalidCoordinates),
        Just(CorrectionReason::TooFast),
        Just(CorrectionReason::Blocked),
        Just(CorrectionReason::OutOfBounds),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            uuid(),
            any::<u32>(),
            "[a-z0-9-]{1,8}",
            1..=60u8,
            coord(),
            coord(),
            any::<u64>(),
            "[a-f0-9]{16}"
        )
            .prop_map(
                |(
                    player_id,
                    entity_id,
                    shard_id,
                    tick_hz,
                    lon,
                    lat,
                    server_time_ms,
                    resume_token,
                )| {
                    ServerMessage::Welcome {
                        player_id,
                        entity_id,
                        shard_id,
                        tick_hz,
                        position: LonLat { lon, lat },
                        world: "demo".into(),
                        server_time_ms,
                        resume_token,
                    }
                }
            ),
        update().prop_map(ServerMessage::Update),
        (any::<u32>(), any::<u32>(), coord(), coord(), reason()).prop_map(
            |(id, seq, lon, lat, reason)| ServerMessage::Correction {
                id,
                seq,
                lon,
                lat,
                reason
            }
        ),
        (any::<u32>(), uuid(), ".{0,16}", any::<bool>()).prop_map(|(n, area_id, name, enter)| {
            ServerMessage::AreaEvent {
                n,
                area_id,
                name,
                kind: AreaKind::Zone,
                transition: if enter {
                    Transition::Enter
                } else {
                    Transition::Leave
                },
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(client_time_ms, server_time_ms)| {
            ServerMessage::Pong {
                client_time_ms,
                server_time_ms,
            }
        }),
        proptest::option::of(any::<u32>()).prop_map(|retry_after_ms| ServerMessage::Kicked {
            reason: KickReason::Shutdown,
            retry_after_ms,
            redirect: None,
        }),
        ".{0,32}".prop_map(|message| ServerMessage::Error {
            code: ErrorCode::Malformed,
            message
        }),
    ]
}

const BOTH: [Encoding; 2] = [Encoding::Bincode, Encoding::Json];

proptest! {
    #[test]
    fn client_messages_round_trip(message in client_message()) {
        for encoding in BOTH {
            let frame = encoding.encode(&message);
            prop_assert_eq!(encoding.decode_client(&frame).unwrap(), message.clone());
        }
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        for encoding in BOTH {
            let frame = encoding.encode(&message);
            prop_assert_eq!(encoding.decode_server(&frame).unwrap(), message.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for encoding in BOTH {
            let _ = encoding.decode_client(&bytes);
            let _ = encoding.decode_server(&bytes);
        }
    }

    #[test]
    fn mutated_frames_never_panic(message in client_message(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        for encoding in BOTH {
            let mut frame = encoding.encode(&message);
            for (at, byte) in &flips {
                let at = at % frame.len();
                frame[at] = *byte;
            }
            let _ = encoding.decode_client(&frame);
        }
    }

    #[test]
    fn composed_update_equals_plain_encoding(update in update()) {
        let wire: Vec<WireState> = update.moved.iter().map(WireState::encode).collect();
        let mut composed = Vec::new();
        write_bincode_update(&mut composed, &update, wire.iter()).unwrap();
        prop_assert_eq!(composed, Encoding::Bincode.encode(&ServerMessage::Update(update)));
    }

    #[test]
    fn quantization_is_within_a_centimetre(lon in -180.0..180.0f64, lat in -90.0..90.0f64) {
        let state = EntityState::quantize(1, LonLat { lon, lat }, 10.0, 1.5);
        let back = state.position();
        prop_assert!((back.lon - lon).abs() <= 0.6e-7 && (back.lat - lat).abs() <= 0.6e-7);
    }
}

#[test]
fn bincode_carries_non_finite_moves_for_the_tick_to_correct() {
    let message = ClientMessage::Move {
        seq: 1,
        lon: f64::NAN,
        lat: f64::INFINITY,
        heading: 0.0,
        accuracy_m: None,
        fix_time_ms: None,
    };
    let frame = Encoding::Bincode.encode(&message);
    assert!(matches!(
        Encoding::Bincode.decode_client(&frame),
        Ok(ClientMessage::Move { lon, .. }) if lon.is_nan()
    ));
}

#[test]
fn json_uses_externally_tagged_enums() {
    let frame = Encoding::Json.encode(&ClientMessage::Ping { client_time_ms: 5 });
    assert_eq!(
        std::str::from_utf8(&frame).unwrap(),
        r#"{"Ping":{"client_time_ms":5}}"#
    );
    let message = Encoding::Json
        .decode_client(br#"{"Move":{"seq":1,"lon":4.9,"lat":52.37,"heading":0}}"#)
        .unwrap();
    assert!(matches!(
        message,
        ClientMessage::Move {
            accuracy_m: None,
            fix_time_ms: None,
            ..
        }
    ));
}

#[test]
fn unknown_types_are_named_not_called_garbage() {
    let err = Encoding::Json
        .decode_client(br#"{"Teleport":{"x":1}}"#)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
    // Variant index 200 as a one-byte varint, followed by nothing we know.
    let err = Encoding::Bincode
        .decode_client(&[200, 1, 2, 3])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
}

#[test]
fn malformed_frames_are_malformed() {
    for frame in [&b"{not json"[..], b"[]", br#"{"Move":{"seq":"x"}}"#, b""] {
        assert_eq!(
            Encoding::Json.decode_client(frame).unwrap_err().code(),
            ErrorCode::Malformed
        );
    }
    // A Move cut short.
    let mut frame = Encoding::Bincode.encode(&ClientMessage::Ping {
        client_time_ms: 1 << 40,
    });
    frame.truncate(frame.len() - 1);
    assert_eq!(
        Encoding::Bincode.decode_client(&frame).unwrap_err().code(),
        ErrorCode::Malformed
    );
    // Trailing garbage after a valid message.
    let mut frame = Encoding::Bincode.encode(&ClientMessage::Ping { client_time_ms: 1 });
    frame.push(0);
    assert_eq!(
        Encoding::Bincode.decode_client(&frame).unwrap_err().code(),
        ErrorCode::Malformed
    );
}

#[test]
fn oversized_frames_and_fields_are_refused() {
    let huge = vec![b' '; MAX_FRAME_BYTES + 1];
    for encoding in BOTH {
        assert_eq!(
            encoding.decode_client(&huge).unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }
    let hello = ClientMessage::Hello {
        token: String::new(),
        world: Some("w".repeat(65)),
        resume: None,
    };
    for encoding in BOTH {
        let err = encoding
            .decode_client(&encoding.encode(&hello))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidValue, "{err}");
    }
    let err = Encoding::Json
        .decode_client(br#"{"SetUpdateRate":{"hz":0}}"#)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidValue);
}

#[test]
fn chat_longer_than_the_limit_or_empty_is_refused_by_name() {
    let chat = |text: String| ClientMessage::Chat {
        channel: ChatChannel::World,
        text,
    };
    for encoding in BOTH {
        // The limit counts characters, not bytes: 280 emoji are fine.
        let longest = chat("🙂".repeat(limits::MAX_CHAT_CHARS));
        assert_eq!(
            encoding.decode_client(&encoding.encode(&longest)).unwrap(),
            longest
        );
        let err = encoding
            .decode_client(&encoding.encode(&chat("a".repeat(limits::MAX_CHAT_CHARS + 1))))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidValue, "{err}");
        assert!(err.to_string().contains("281 characters"), "{err}");
        let err = encoding
            .decode_client(&encoding.encode(&chat("\n\u{7}\t".into())))
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
    let err = Encoding::Json
        .decode_client(br#"{"Chat":{"channel":"shouting","text":"hi"}}"#)
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::Malformed,
        "an unknown channel: {err}"
    );
}

#[test]
fn a_length_prefix_cannot_make_the_decoder_allocate_gigabytes() {
    // Hello whose token claims to be 2^32 bytes long.
    let frame = [0u8, 253, 0, 0, 0, 0, 1, 0, 0, 0];
    let err = Encoding::Bincode.decode_client(&frame).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Malformed);
}

#[test]
fn subprotocols_name_the_version_and_encoding() {
    assert_eq!(
        Encoding::from_subprotocol("meridian.v1.json"),
        Some(Encoding::Json)
    );
    assert_eq!(
        Encoding::from_subprotocol("meridian.v1.bincode"),
        Some(Encoding::Bincode)
    );
    assert_eq!(Encoding::from_subprotocol("meridian.v2.json"), None);
    assert_eq!(Encoding::Json.subprotocol(), "meridian.v1.json");
}
