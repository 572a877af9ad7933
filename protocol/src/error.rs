//! Stable error codes sent to clients, and the decoder's error type.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A stable, machine-readable error code carried by `ServerMessage::Error`.
///
/// Append-only: clients match on these, so a code is never renamed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or bincode for any known message.
    Malformed,
    /// The frame names a message type this server does not know.
    UnknownType,
    /// The frame is larger than `limits::MAX_FRAME_BYTES`.
    TooLarge,
    /// A field is out of its documented range (e.g. a string too long).
    InvalidValue,
    /// The client sent more messages than the rate limit allows; the frame was dropped.
    RateLimited,
    /// No valid token: missing, expired, forged, revoked, or the wrong algorithm.
    Unauthenticated,
    /// The message is not allowed in the connection's current state.
    UnexpectedMessage,
    /// The resume token is unknown, used, or past its grace period; log in again.
    ResumeFailed,
    /// The requested world does not exist on this shard.
    UnknownWorld,
    /// The server is overloaded and dropped the request; retry later.
    ServerBusy,
    /// A binary frame on a JSON socket or a text frame on a bincode socket.
    WrongFrameType,
    /// An internal failure; details are in the server's log, never here.
    Internal,
}

impl ErrorCode {
    /// The stable snake_case name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::InvalidValue => "invalid_value",
            Self::RateLimited => "rate_limited",
            Self::Unauthenticated => "unauthenticated",
            Self::UnexpectedMessage => "unexpected_message",
            Self::ResumeFailed => "resume_failed",
            Self::UnknownWorld => "unknown_world",
            Self::ServerBusy => "server_busy",
            Self::WrongFrameType => "wrong_frame_type",
            Self::Internal => "internal",
        }
    }
}

/// Why a frame could not be decoded. Each maps to one `ErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame exceeds the size limit.
    #[error("frame of {0} bytes exceeds the limit of {max} bytes", max = crate::limits::MAX_FRAME_BYTES)]
    TooLarge(usize),
    /// The frame names an unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(String),
    /// The frame is not a valid encoding of any message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message decoded but a field is out of range.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

impl DecodeError {
    /// The error code to send back to the client.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::InvalidValue(_) => ErrorCode::InvalidValue,
        }
    }
}
