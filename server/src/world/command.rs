//! The closed set of requests other tasks make of the tick.

use std::sync::Arc;

use meridian_protocol::{ChatChannel, LonLat};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::chat::ChatLine;
use super::ghost::RemotePlayer;
use super::link::ConnLink;
use crate::bus::ControlEvent;
use crate::store::{Area, CommittedCapture, StoredPosition, WorldObject};

/// A request to the tick task.
#[derive(Debug)]
pub enum Command {
    /// An authenticated connection wants to play.
    Join {
        /// Who, and how to reach them.
        request: JoinRequest,
        /// Answered once the player is in the world.
        reply: oneshot::Sender<Result<Joined, JoinError>>,
    },
    /// A dropped client came back with its resume token.
    Resume {
        /// The token from `Welcome::resume_token`.
        token: String,
        /// The new connection.
        link: ConnLink,
        /// Answered once the player is reattached.
        reply: oneshot::Sender<Result<Joined, JoinError>>,
    },
    /// Input from a connected player.
    Input {
        /// The player's entity id.
        entity: u32,
        /// The connection it came from (stale connections are ignored).
        conn_id: u64,
        /// What the player did.
        input: Input,
    },
    /// A player's socket closed. A dropped player stays for the resume grace
    /// period; one that closed normally (`leave`) is removed at once.
    Disconnected {
        /// The player's entity id.
        entity: u32,
        /// The connection that closed.
        conn_id: u64,
        /// The client closed with code 1000 (leaving, not dropped).
        leave: bool,
    },
    /// An event from the bus that every shard applies.
    Control(ControlEvent),
    /// The world's areas changed: use these from now on.
    ReplaceAreas(Vec<Area>),
    /// A connected player said something (text already checked and cleaned).
    Chat {
        /// The player's entity id.
        entity: u32,
        /// The connection it came from (stale connections are ignored).
        conn_id: u64,
        /// Where.
        channel: ChatChannel,
        /// What.
        text: String,
    },
    /// A line of chat said on another shard.
    RemoteChat(ChatLine),
    /// The world's placed objects changed: use these flags from now on.
    ReplaceFlags(Vec<WorldObject>),
    /// The writer's answer to a proposed capture.
    CaptureDone {
        /// The flag.
        flag_id: Uuid,
        /// The capture's id.
        capture_id: Uuid,
        /// What became of it.
        result: CaptureResult,
    },
    /// Players of another shard, as it published them: shown here as ghosts.
    Ghosts {
        /// The shard they are on.
        shard: Arc<str>,
        /// Their states.
        players: Vec<RemotePlayer>,
    },
}

/// Player input the tick validates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// A new position.
    Move {
        /// Client sequence number.
        seq: u32,
        /// Longitude as sent.
        lon: f64,
        /// Latitude as sent.
        lat: f64,
        /// Facing in degrees.
        heading: f32,
        /// GPS accuracy in metres, if reported.
        accuracy_m: Option<f32>,
    },
    /// The client applied a correction.
    AckCorrection {
        /// The correction's id.
        id: u32,
    },
}

/// A player joining.
#[derive(Debug)]
pub struct JoinRequest {
    /// The account.
    pub user_id: Uuid,
    /// The session the access token named.
    pub session_id: Uuid,
    /// Display name.
    pub name: String,
    /// The fencing epoch taken for this login.
    pub epoch: u64,
    /// The player's last stored position in this world, if any.
    pub stored: Option<StoredPosition>,
    /// The player's team, if it has one.
    pub team: Option<String>,
    /// The connection.
    pub link: ConnLink,
}

/// A player is in the world. `Welcome` has already been queued on the link.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The player's entity id.
    pub entity: u32,
    /// The account.
    pub user_id: Uuid,
    /// Where the player stands.
    pub position: LonLat,
}

/// What the writer did with a proposed capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureResult {
    /// Committed: announce it.
    Committed(CommittedCapture),
    /// Not written: the flag had moved on (the winner's announcement follows).
    Stale,
    /// Not written: the database is unavailable, so the capture is refused.
    Unsaved,
}

/// Why a join or resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The resume token is unknown, already used, or past its grace period.
    #[error("resume token unknown or expired")]
    ResumeFailed,
    /// The world has no room for another entity.
    #[error("world is full")]
    Full,
}
