//! WebSocket close codes the server uses, so clients can tell why a socket
//! closed even when they missed the `Kicked` or `Error` message before it.

use crate::message::KickReason;

/// Normal closure (RFC 6455).
pub const NORMAL: u16 = 1000;
/// The server is shutting down; reconnect later (RFC 6455 "going away").
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol: an unmasked frame, reserved bits,
/// a fragmented or oversized control frame, a bad close code (RFC 6455
/// "protocol error").
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame that is not UTF-8 (RFC 6455 "invalid frame payload data").
pub const INVALID_PAYLOAD: u16 = 1007;
/// Authentication failed: missing, bad or revoked token (RFC 6455 "policy violation").
pub const AUTH_FAILED: u16 = 1008;
/// A frame exceeded `limits::MAX_FRAME_BYTES` (RFC 6455 "message too big").
pub const TOO_BIG: u16 = 1009;
/// No `Hello` within the authentication timeout.
pub const AUTH_TIMEOUT: u16 = 4000;
/// Nothing received for longer than the idle timeout.
pub const IDLE: u16 = 4001;
/// Flooding, or too many malformed or refused frames.
pub const PROTOCOL_ABUSE: u16 = 4002;
/// The account connected again elsewhere.
pub const LOGGED_IN_ELSEWHERE: u16 = 4003;
/// The session was revoked (logout).
pub const SESSION_REVOKED: u16 = 4004;
/// Too many refused moves.
pub const TOO_MANY_CORRECTIONS: u16 = 4005;
/// The client read too slowly for too long.
pub const TOO_SLOW: u16 = 4006;
/// An operator kicked the player.
pub const ADMIN_KICK: u16 = 4007;

/// The close code that follows a `Kicked` with this reason.
#[must_use]
pub fn for_kick(reason: KickReason) -> u16 {
    match reason {
        KickReason::LoggedInElsewhere => LOGGED_IN_ELSEWHERE,
        KickReason::SessionRevoked => SESSION_REVOKED,
        KickReason::Shutdown => GOING_AWAY,
        KickReason::TooManyCorrections => TOO_MANY_CORRECTIONS,
        KickReason::ProtocolAbuse => PROTOCOL_ABUSE,
        KickReason::TooSlow => TOO_SLOW,
        KickReason::Idle => IDLE,
        KickReason::Admin => ADMIN_KICK,
    }
}
