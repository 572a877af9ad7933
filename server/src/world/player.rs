//! A player as the tick holds it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use meridian_protocol::{CorrectionReason, EntityState, LonLat, WireState};
use uuid::Uuid;

use super::command::Input;
use super::ghost::Ghost;
use super::link::ConnLink;
use super::movement::Budget;

/// Inputs a player may have queued; older ones are dropped past this (a client
/// that sends faster than the tick can validate loses its oldest moves).
pub const MAX_QUEUED_INPUTS: usize = 32;

/// Moves of one player validated per tick; the rest wait for the next tick.
pub const MOVES_PER_TICK: usize = 8;

/// One player in the world, connected or within the resume grace period.
#[derive(Debug)]
pub struct Player {
    /// Entity id (slot plus reuse count).
    pub entity: u32,
    /// The account.
    pub user_id: Uuid,
    /// The session of the current connection.
    pub session_id: Uuid,
    /// Display name.
    pub name: Arc<str>,
    /// The live connection, or `None` while dropped (within the grace period).
    pub link: Option<ConnLink>,
    /// When the connection dropped.
    pub detached_at: Option<Instant>,
    /// Token a dropped client resumes with; rotated on every (re)attach.
    pub resume_token: String,
    /// Authoritative position.
    pub position: LonLat,
    /// Earth-centred metric position, kept in step with `position`.
    pub ecef: [f64; 3],
    /// Facing in degrees, as the client reported.
    pub heading: f32,
    /// Speed over the last movement, m/s.
    pub speed_mps: f32,
    /// When the player last moved (for speed and for stopping).
    pub last_motion: Instant,
    /// Distance budget (speed limit over time).
    pub budget: Budget,
    /// Inputs waiting for the next tick.
    pub inputs: VecDeque<Input>,
    /// Highest move `seq` processed (accepted or refused) on this connection.
    pub last_seq: u32,
    /// Highest move `seq` accepted, echoed in `Update::ack_seq`.
    pub ack_seq: u32,
    /// The arrival number (see `World::arrivals`) of the oldest input in
    /// `inputs`, while there is one.
    pub queued_since: u64,
    /// The arrival number of the oldest input of the tick that last
    /// advanced `ack_seq`: how long the client has waited for that ack.
    pub ack_arrival: u64,
    /// The correction (id, reason) awaiting `AckCorrection`; moves are ignored meanwhile.
    pub awaiting_ack: Option<(u32, CorrectionReason)>,
    /// Id of the next correction.
    pub next_correction: u32,
    /// Correction episodes counted against the player.
    pub strikes: u32,
    /// When the last strike happened (strikes are forgotten after a while).
    pub last_strike: Option<Instant>,
    /// Areas the player is inside.
    pub inside: Vec<Uuid>,
    /// Number of the last `AreaEvent` sent.
    pub area_events: u32,
    /// The team played for.
    pub team: Option<Arc<str>>,
    /// Number of the last `FlagEvent` sent.
    pub flag_events: u32,
    /// Fencing epoch of the current login.
    pub epoch: u64,
    /// Increases with every accepted move; `(epoch, seq)` orders stored positions.
    pub position_seq: u64,
    /// The position changed since it was last handed to the flusher.
    pub dirty: bool,
    /// The state as last published.
    pub state: EntityState,
    /// `state` encoded for the wire.
    pub wire: WireState,
    /// The tick in which `state` last changed.
    pub changed_tick: u64,
    /// Set for a player of another shard (see `ghost`); `None` for a local one.
    pub ghost: Option<Ghost>,
    /// The tick in which this local player was last published to the other
    /// shards.
    pub published_tick: u64,
}

impl Player {
    /// Bring the published state in line with position, heading and speed;
    /// when it changed, re-encode it and mark it changed in `tick`.
    pub fn refresh_state(&mut self, tick: u64) {
        let state = EntityState::quantize(self.entity, self.position, self.heading, self.speed_mps);
        if state != self.state {
            self.state = state;
            self.wire = WireState::encode(&state);
            self.changed_tick = tick;
        }
    }
}
