//! The messages exchanged over the game WebSocket, in both directions.
//!
//! Every enum here is **append-only**: new variants go at the end and old ones
//! are never removed or reordered, because bincode identifies a variant by its
//! index. JSON uses serde's externally tagged form (`{"Move": {...}}`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorCode;

/// A point on the WGS 84 ellipsoid in degrees (SRID 4326).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LonLat {
    /// Longitude in degrees, normalized to [-180, 180).
    pub lon: f64,
    /// Latitude in degrees, in [-90, 90].
    pub lat: f64,
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Authenticate a socket that did not send `Authorization: Bearer`, or resume a dropped one.
    Hello {
        /// The access token from `/api/login`, `/api/guest` or `/api/register` + login.
        /// May be empty when `resume` is given.
        token: String,
        /// The world to join; the server's default world when absent.
        world: Option<String>,
        /// A `resume_token` from an earlier `Welcome`, to continue as the same player.
        resume: Option<String>,
    },
    /// The player's new position. Moves of a player are validated in `seq` order.
    Move {
        /// Client sequence number; the last accepted one is echoed as `Update::ack_seq`.
        seq: u32,
        /// Longitude in degrees.
        lon: f64,
        /// Latitude in degrees.
        lat: f64,
        /// Facing in degrees clockwise from north.
        heading: f32,
        /// GPS accuracy radius in metres, for clients on real location fixes.
        accuracy_m: Option<f32>,
        /// When the GPS fix was taken (client clock, Unix milliseconds).
        fix_time_ms: Option<u64>,
    },
    /// Measure round-trip time and clock offset.
    Ping {
        /// The client's clock, echoed back in `Pong`.
        client_time_ms: u64,
    },
    /// Acknowledge a `Correction`; moves are ignored between the two.
    AckCorrection {
        /// The `Correction::id` being acknowledged.
        id: u32,
    },
    /// Lower (or restore) how often this client receives `Update`s, to save battery.
    SetUpdateRate {
        /// Updates per second, 1..=the server's tick rate.
        hz: u8,
    },
    /// Say something on a chat channel.
    Chat {
        /// Where.
        channel: ChatChannel,
        /// What: at most `limits::MAX_CHAT_CHARS` characters; control
        /// characters are removed by the server.
        text: String,
    },
}

/// A chat channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatChannel {
    /// Everyone in the world, on every shard.
    World,
    /// Players within the server's chat radius of the speaker, on every shard.
    Nearby,
}

impl ChatChannel {
    /// The stable snake_case name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::World => "world",
            Self::Nearby => "nearby",
        }
    }
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The socket is authenticated and the player is in the world.
    Welcome {
        /// The player's account id.
        player_id: Uuid,
        /// The player's entity id in `Update`s of this shard.
        entity_id: u32,
        /// Which shard is serving this socket.
        shard_id: String,
        /// How many ticks per second the shard runs.
        tick_hz: u8,
        /// Where the player stands now (restored, resumed or spawned).
        position: LonLat,
        /// The world joined.
        world: String,
        /// The server's clock, Unix milliseconds.
        server_time_ms: u64,
        /// Send this in `Hello::resume` to continue after a dropped connection.
        resume_token: String,
    },
    /// What changed in the player's area of interest since the last `Update`.
    Update(Update),
    /// A move was refused; the player stands at the given authoritative position.
    Correction {
        /// Acknowledge with `AckCorrection { id }`; moves are ignored until then.
        id: u32,
        /// The `seq` of the refused move.
        seq: u32,
        /// Authoritative longitude.
        lon: f64,
        /// Authoritative latitude.
        lat: f64,
        /// Why the move was refused.
        reason: CorrectionReason,
    },
    /// The player entered or left an area.
    AreaEvent {
        /// Numbered per player from 1, so clients can order events.
        n: u32,
        /// The area's id.
        area_id: Uuid,
        /// The area's display name.
        name: String,
        /// The area's kind.
        kind: AreaKind,
        /// Whether the player entered or left.
        transition: Transition,
    },
    /// Answer to `Ping`.
    Pong {
        /// The client's clock from the `Ping`.
        client_time_ms: u64,
        /// The server's clock, Unix milliseconds.
        server_time_ms: u64,
    },
    /// The server is closing this session. The socket closes after this message.
    Kicked {
        /// Why.
        reason: KickReason,
        /// When to reconnect, if it makes sense to.
        retry_after_ms: Option<u32>,
        /// Where to reconnect instead, if somewhere else.
        redirect: Option<String>,
    },
    /// A frame or request was refused. The connection stays open unless a close follows.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Someone said something on a chat channel (the sender gets it too).
    ChatMessage {
        /// Where.
        channel: ChatChannel,
        /// The speaker's account id.
        from: Uuid,
        /// The speaker's display name.
        name: String,
        /// What was said, control characters removed.
        text: String,
        /// When the speaker's shard took it, Unix milliseconds.
        sent_ms: u64,
    },
    /// The world's teams with their scores, and its flags: sent after
    /// `Welcome`, and again whenever an operator adds, moves or removes a
    /// flag or resets the scores. Later changes come as `FlagEvent`s.
    Flags {
        /// The player's own team (`None` for an account without one).
        team: Option<String>,
        /// Every team, in display order.
        teams: Vec<TeamInfo>,
        /// Every flag of the world.
        flags: Vec<FlagInfo>,
    },
    /// Something happened at a flag.
    FlagEvent {
        /// Numbered per player from 1, so clients can order events.
        n: u32,
        /// The flag.
        flag_id: Uuid,
        /// What happened.
        change: FlagChange,
    },
}

/// A team, as `ServerMessage::Flags` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamInfo {
    /// Unique name, e.g. `red`.
    pub name: String,
    /// Display colour, CSS hex.
    pub colour: String,
    /// Flags captured since the last reset.
    pub score: i64,
}

/// A flag, as `ServerMessage::Flags` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagInfo {
    /// The flag's id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Where it stands.
    pub position: LonLat,
    /// Players within this many metres of it capture or contest it.
    pub radius_m: f32,
    /// How long a team must hold the zone alone to capture it, in milliseconds.
    pub capture_ms: u32,
    /// The team holding it, if any.
    pub owner: Option<String>,
    /// Whether it can be captured at all (not when it stands in a `safe` area).
    pub capturable: bool,
}

/// What happened at a flag (`ServerMessage::FlagEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagChange {
    /// The player entered the flag's capture zone.
    Enter,
    /// The player left the flag's capture zone.
    Leave,
    /// A team alone in the zone started capturing it (sent to players near it).
    Capturing {
        /// The capturing team.
        team: String,
        /// When the capture completes if nothing changes, server Unix milliseconds.
        done_ms: u64,
    },
    /// Players of more than one team are in the zone: the capture in progress
    /// is lost and nobody captures until one team is alone again.
    Contested,
    /// The capturing team left the zone before the capture time: its progress is lost.
    Reset,
    /// The capture could not be saved (the database is unavailable): it did
    /// not happen, and holding the zone starts it again.
    Refused,
    /// The flag was captured (sent to every player of the world).
    Captured {
        /// The capture's id, unique across shards.
        capture_id: Uuid,
        /// The team that now holds the flag.
        team: String,
        /// The player credited with it.
        player_id: Uuid,
        /// That player's display name.
        name: String,
        /// The team's new score.
        score: i64,
    },
}

/// The interest-managed delta sent to one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The tick this state is from.
    pub tick: u64,
    /// The server's clock at that tick, Unix milliseconds.
    pub server_time_ms: u64,
    /// The last `Move::seq` accepted from this client (0 before any).
    pub ack_seq: u32,
    /// Entities that came into view. Apply `left` first: an id may leave and re-enter.
    pub entered: Vec<EntityInfo>,
    /// Entities in view whose state changed.
    pub moved: Vec<EntityState>,
    /// Entity ids that left view.
    pub left: Vec<u32>,
}

/// An entity coming into view: who it is and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityInfo {
    /// The player's account id (stable across shards and sessions).
    pub player_id: Uuid,
    /// Display name.
    pub name: String,
    /// Current state; `state.id` is the entity id used in later `moved`/`left`.
    pub state: EntityState,
}

/// Where an entity is and how it moves, quantized for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityState {
    /// Shard-local entity id.
    pub id: u32,
    /// Longitude in units of 1e-7 degrees.
    pub lon_e7: i32,
    /// Latitude in units of 1e-7 degrees.
    pub lat_e7: i32,
    /// Heading in hundredths of a degree clockwise from north, 0..36000.
    pub heading_cdeg: u16,
    /// Ground speed in centimetres per second.
    pub speed_cms: u16,
}

impl EntityState {
    /// Quantize a position, heading (degrees) and speed (m/s) for the wire.
    #[must_use]
    pub fn quantize(id: u32, pos: LonLat, heading_deg: f32, speed_mps: f32) -> Self {
        let heading = heading_deg.rem_euclid(360.0);
        Self {
            id,
            lon_e7: (pos.lon * 1e7).round() as i32,
            lat_e7: (pos.lat * 1e7).round() as i32,
            heading_cdeg: ((heading * 100.0).round() as u16) % 36000,
            speed_cms: (speed_mps * 100.0).round().clamp(0.0, f32::from(u16::MAX)) as u16,
        }
    }

    /// The position in degrees.
    #[must_use]
    pub fn position(&self) -> LonLat {
        LonLat {
            lon: f64::from(self.lon_e7) / 1e7,
            lat: f64::from(self.lat_e7) / 1e7,
        }
    }
}

/// Why a move was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionReason {
    /// Not finite, or latitude outside [-90, 90].
    InvalidCoordinates,
    /// Farther than the distance budget allows (speed limit × time, with a burst).
    TooFast,
    /// The path crosses a `blocked` area.
    Blocked,
    /// The destination is outside the world's bounds.
    OutOfBounds,
}

impl CorrectionReason {
    /// Stable snake_case name, as in JSON and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCoordinates => "invalid_coordinates",
            Self::TooFast => "too_fast",
            Self::Blocked => "blocked",
            Self::OutOfBounds => "out_of_bounds",
        }
    }
}

/// The kind of a map area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaKind {
    /// Players may not enter or cross it.
    Blocked,
    /// Lowers the speed limit inside it.
    SpeedLimit,
    /// No combat or captures inside.
    Safe,
    /// New players are placed inside one.
    Spawn,
    /// A named region, for events and gameplay.
    Zone,
}

impl AreaKind {
    /// Stable snake_case name, as in JSON and the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::SpeedLimit => "speed_limit",
            Self::Safe => "safe",
            Self::Spawn => "spawn",
            Self::Zone => "zone",
        }
    }

    /// Parse the stable name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "blocked" => Self::Blocked,
            "speed_limit" => Self::SpeedLimit,
            "safe" => Self::Safe,
            "spawn" => Self::Spawn,
            "zone" => Self::Zone,
            _ => return None,
        })
    }
}

/// Entering or leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The player is now inside.
    Enter,
    /// The player is no longer inside.
    Leave,
}

/// Why a session was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KickReason {
    /// The same account connected again; the newer connection wins.
    LoggedInElsewhere,
    /// The session was revoked (logout).
    SessionRevoked,
    /// The server is shutting down; reconnect after `retry_after_ms`.
    Shutdown,
    /// Too many refused moves.
    TooManyCorrections,
    /// Too many malformed or refused frames, or a message flood.
    ProtocolAbuse,
    /// The client read too slowly for too long.
    TooSlow,
    /// No frame for longer than the idle timeout.
    Idle,
    /// An operator kicked the player.
    Admin,
}

impl KickReason {
    /// Stable snake_case name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedInElsewhere => "logged_in_elsewhere",
            Self::SessionRevoked => "session_revoked",
            Self::Shutdown => "shutdown",
            Self::TooManyCorrections => "too_many_corrections",
            Self::ProtocolAbuse => "protocol_abuse",
            Self::TooSlow => "too_slow",
            Self::Idle => "idle",
            Self::Admin => "admin",
        }
    }
}
