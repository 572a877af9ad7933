//! The two encodings, chosen per socket by WebSocket subprotocol, and the
//! functions that turn messages into frames and back.
//!
//! * `meridian.v1.bincode`: binary frames, bincode 2 with its standard
//!   configuration (little-endian, variable-length integers, enums as a varint
//!   variant index followed by the fields in declaration order).
//! * `meridian.v1.json`: text frames, serde's externally tagged JSON.
//!
//! Decoding enforces `limits`: frame size, string lengths, value ranges. It never
//! panics, whatever the input (property-tested).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::DecodeError;
use crate::limits;
use crate::message::{ClientMessage, EntityState, ServerMessage, Update};

/// bincode's configuration for every frame. The decode limit caps what a length
/// prefix may make the decoder allocate, so a tiny frame cannot ask for gigabytes.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ limits::MAX_FRAME_BYTES }>,
> {
    bincode::config::standard().with_limit::<{ limits::MAX_FRAME_BYTES }>()
}

/// A socket's encoding, named by the WebSocket subprotocol the server picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// bincode in binary frames (`meridian.v1.bincode`).
    Bincode,
    /// JSON in text frames (`meridian.v1.json`).
    Json,
}

impl Encoding {
    /// Every subprotocol this server speaks, in order of preference.
    pub const SUBPROTOCOLS: [&'static str; 2] = ["meridian.v1.bincode", "meridian.v1.json"];

    /// The subprotocol name for this encoding.
    #[must_use]
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Bincode => Self::SUBPROTOCOLS[0],
            Self::Json => Self::SUBPROTOCOLS[1],
        }
    }

    /// The encoding for a subprotocol name, if it is one of ours.
    #[must_use]
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name.trim() {
            "meridian.v1.bincode" => Some(Self::Bincode),
            "meridian.v1.json" => Some(Self::Json),
            _ => None,
        }
    }

    /// Whether frames of this encoding are text frames (JSON) or binary (bincode).
    #[must_use]
    pub fn is_text(self) -> bool {
        matches!(self, Self::Json)
    }

    /// Encode any message. JSON output is UTF-8.
    #[must_use]
    pub fn encode<T: Serialize>(self, message: &T) -> Vec<u8> {
        match self {
            // Our message types contain no maps with non-string keys and no
            // unbounded recursion, so serialization cannot fail; the
            // `expect`s document an invariant of this crate's types.
            Self::Bincode => bincode::serde::encode_to_vec(message, config())
                .expect("protocol messages always encode"),
            Self::Json => serde_json::to_vec(message).expect("protocol messages always encode"),
        }
    }

    /// Decode a client frame and check its limits.
    ///
    /// # Errors
    /// A `DecodeError` saying whether the frame was too large, of an unknown
    /// type, malformed, or had a value out of range.
    pub fn decode_client(self, frame: &[u8]) -> Result<ClientMessage, DecodeError> {
        let message: ClientMessage = self.decode(frame, CLIENT_VARIANTS)?;
        message.validate()?;
        Ok(message)
    }

    /// Decode a server frame (for clients, bots and tests).
    ///
    /// # Errors
    /// As `decode_client`.
    pub fn decode_server(self, frame: &[u8]) -> Result<ServerMessage, DecodeError> {
        self.decode(frame, SERVER_VARIANTS)
    }

    fn decode<T: DeserializeOwned>(
        self,
        frame: &[u8],
        variants: &[&str],
    ) -> Result<T, DecodeError> {
        if frame.len() > limits::MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge(frame.len()));
        }
        match self {
            Self::Bincode => decode_bincode(frame, variants),
            Self::Json => decode_json(frame, variants),
        }
    }
}

/// The variant names of `ClientMessage`, in declaration order (= bincode index).
const CLIENT_VARIANTS: &[&str] = &[
    "Hello",
    "Move",
    "Ping",
    "AckCorrection",
    "SetUpdateRate",
    "Chat",
];

/// The variant names of `ServerMessage`, in declaration order (= bincode index).
const SERVER_VARIANTS: &[&str] = &[
    "Welcome",
    "Update",
    "Correction",
    "AreaEvent",
    "Pong",
    "Kicked",
    "Error",
    "ChatMessage",
    "Flags",
    "FlagEvent",
];

/// The bincode variant index of `ServerMessage::Update`.
const UPDATE_VARIANT: u32 = 1;

fn decode_bincode<T: DeserializeOwned>(frame: &[u8], variants: &[&str]) -> Result<T, DecodeError> {
    match bincode::serde::decode_from_slice::<T, _>(frame, config()) {
        Ok((message, read)) if read == frame.len() => Ok(message),
        Ok((_, read)) => Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the message",
            frame.len() - read
        ))),
        Err(err) => {
            // A well-formed frame of a newer client names a variant we lack:
            // tell it so instead of calling it garbage.
            if let Ok((index, _)) = bincode::decode_from_slice::<u32, _>(frame, config()) {
                if index as usize >= variants.len() {
                    return Err(DecodeError::UnknownType(format!("variant index {index}")));
                }
            }
            Err(DecodeError::Malformed(err.to_string()))
        }
    }
}

fn decode_json<T: DeserializeOwned>(frame: &[u8], variants: &[&str]) -> Result<T, DecodeError> {
    match serde_json::from_slice::<T>(frame) {
        Ok(message) => Ok(message),
        Err(err) => {
            if let Ok(serde_json::Value::Object(map)) =
                serde_json::from_slice::<serde_json::Value>(frame)
            {
                if map.len() == 1 {
                    let name = map.keys().next().map(String::as_str).unwrap_or_default();
                    if !variants.contains(&name) {
                        let shown: String = name.chars().take(64).collect();
                        return Err(DecodeError::UnknownType(format!("\"{shown}\"")));
                    }
                }
            }
            Err(DecodeError::Malformed(err.to_string()))
        }
    }
}

impl ClientMessage {
    /// Check the limits that the types alone do not express.
    ///
    /// Coordinates are deliberately not checked here: a `Move` with NaN or
    /// out-of-range coordinates is answered by the tick with a `Correction`
    /// carrying the authoritative position, which is what the client needs to
    /// resynchronise.
    ///
    /// # Errors
    /// `DecodeError::InvalidValue` naming the field.
    pub fn validate(&self) -> Result<(), DecodeError> {
        fn max_len(field: &str, value: &str, max: usize) -> Result<(), DecodeError> {
            if value.len() > max {
                return Err(DecodeError::InvalidValue(format!(
                    "{field} is {} bytes, at most {max} allowed",
                    value.len()
                )));
            }
            Ok(())
        }
        match self {
            Self::Hello {
                token,
                world,
                resume,
            } => {
                max_len("token", token, limits::MAX_TOKEN_BYTES)?;
                if let Some(world) = world {
                    max_len("world", world, limits::MAX_WORLD_NAME_BYTES)?;
                }
                if let Some(resume) = resume {
                    max_len("resume", resume, limits::MAX_RESUME_TOKEN_BYTES)?;
                }
                Ok(())
            }
            Self::Chat { text, .. } => {
                let chars = text.chars().filter(|c| !c.is_control()).count();
                if chars == 0 {
                    return Err(DecodeError::InvalidValue(
                        "chat text is empty (control characters are removed)".into(),
                    ));
                }
                if chars > limits::MAX_CHAT_CHARS {
                    return Err(DecodeError::InvalidValue(format!(
                        "chat text is {chars} characters, at most {} allowed",
                        limits::MAX_CHAT_CHARS
                    )));
                }
                Ok(())
            }
            Self::SetUpdateRate { hz } if *hz == 0 || *hz > limits::MAX_UPDATE_HZ => {
                Err(DecodeError::InvalidValue(format!(
                    "hz must be in 1..={}, got {hz}",
                    limits::MAX_UPDATE_HZ
                )))
            }
            _ => Ok(()),
        }
    }

    /// The variant's name, for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Move { .. } => "move",
            Self::Ping { .. } => "ping",
            Self::AckCorrection { .. } => "ack_correction",
            Self::SetUpdateRate { .. } => "set_update_rate",
            Self::Chat { .. } => "chat",
        }
    }
}

/// An `EntityState` encoded once in bincode, kept inline (no allocation) so the
/// tick can encode each moving entity once per tick and every recipient's
/// `Update` can copy the bytes instead of re-encoding.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct WireState {
    bytes: [u8; WireState::CAPACITY],
    len: u8,
}

impl WireState {
    /// The largest bincode encoding of an `EntityState`: a u32 varint (5), two
    /// zigzag i32 varints (5 each) and two u16 varints (3 each).
    pub const CAPACITY: usize = 21;

    /// Encode a state.
    #[must_use]
    pub fn encode(state: &EntityState) -> Self {
        let mut bytes = [0u8; Self::CAPACITY];
        let len = bincode::serde::encode_into_slice(state, &mut bytes, config())
            .expect("an EntityState always fits WireState::CAPACITY");
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for WireState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireState({:02x?})", self.as_bytes())
    }
}

/// Write `ServerMessage::Update` in bincode from states that were already
/// encoded, producing exactly the bytes `Encoding::Bincode.encode` would
/// (`header.moved` is ignored; `moved` is written instead).
///
/// # Errors
/// Only those of `out` itself (none for a `Vec` or a `BytesMut` writer).
pub fn write_bincode_update<'a, W: std::io::Write>(
    out: &mut W,
    header: &Update,
    moved: impl ExactSizeIterator<Item = &'a WireState>,
) -> std::io::Result<()> {
    fn put<T: Serialize, W: std::io::Write>(out: &mut W, value: &T) -> std::io::Result<()> {
        bincode::serde::encode_into_std_write(value, out, config())
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
    put(out, &UPDATE_VARIANT)?;
    put(out, &header.tick)?;
    put(out, &header.server_time_ms)?;
    put(out, &header.ack_seq)?;
    // serde sequences carry their length as a u64 varint in bincode.
    put(out, &(header.entered.len() as u64))?;
    for info in &header.entered {
        put(out, info)?;
    }
    put(out, &(moved.len() as u64))?;
    for state in moved {
        out.write_all(state.as_bytes())?;
    }
    put(out, &(header.left.len() as u64))?;
    for id in &header.left {
        put(out, id)?;
    }
    Ok(())
}

impl ServerMessage {
    /// The variant's name, for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Update(_) => "update",
            Self::Correction { .. } => "correction",
            Self::AreaEvent { .. } => "area_event",
            Self::Pong { .. } => "pong",
            Self::Kicked { .. } => "kicked",
            Self::Error { .. } => "error",
            Self::ChatMessage { .. } => "chat_message",
            Self::Flags { .. } => "flags",
            Self::FlagEvent { .. } => "flag_event",
        }
    }
}
