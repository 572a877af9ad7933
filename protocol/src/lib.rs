//! Meridian's wire protocol: the messages of the game WebSocket, their two
//! encodings (bincode in binary frames, JSON in text frames), the limits enforced
//! on decode and the stable error codes.
//!
//! Architecture Invariant: this crate knows nothing of tokio, sqlx or Redis; it is
//! pure data and codecs, usable from any client.
#![deny(missing_docs)]

pub mod close;
pub mod codec;
pub mod error;
pub mod limits;
pub mod message;

pub use codec::{Encoding, WireState};
pub use error::{DecodeError, ErrorCode};
pub use message::{
    AreaKind, ChatChannel, ClientMessage, CorrectionReason, EntityInfo, EntityState, FlagChange,
    FlagInfo, KickReason, LonLat, ServerMessage, TeamInfo, Transition, Update,
};

/// The protocol version carried in the subprotocol names.
pub const PROTOCOL_VERSION: u32 = 1;
