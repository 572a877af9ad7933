//! The immutable picture of a world that the tick publishes every tick.
//!
//! Connection tasks hold an `Arc<Snapshot>` and compute their own client's view
//! from it in parallel, off the tick thread; the tick never waits for them and
//! never copies anything per recipient.

use std::sync::Arc;

use meridian_protocol::{EntityState, FlagInfo, TeamInfo, WireState};
use uuid::Uuid;

use super::grid::Grid;

/// Bits of an entity id that are its slot; the rest count reuses of the slot, so
/// an id is not handed out again while a slow client may still know it.
pub const SLOT_BITS: u32 = 20;
/// Mask of the slot bits.
pub const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// One entity as published.
#[derive(Debug, Clone)]
pub struct EntitySnap {
    /// Earth-centred metric position (see `geodesy::to_ecef`).
    pub ecef: [f64; 3],
    /// Quantized state as sent on the wire; `state.id` is the entity id.
    pub state: EntityState,
    /// The last move `seq` accepted from this player.
    pub ack_seq: u32,
    /// When the client began waiting for that acknowledgement, as the
    /// arrival number of its oldest move then queued: the fan-out serves
    /// those who waited longest first.
    pub ack_arrival: u64,
}

/// Who an entity is: what changes only when players join or leave, so the
/// tick shares one roster between snapshots instead of cloning every name
/// every tick.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The account behind it.
    pub player_id: Uuid,
    /// Display name.
    pub name: Arc<str>,
}

/// What the fan-out reads of an entity for every client that knows it, on
/// every tick: kept apart from `EntitySnap`, 32 bytes a slot in one dense
/// array, so that walking thousands of clients' known entities stays in the
/// cache instead of missing on a large struct per entity.
#[derive(Debug, Clone, Copy)]
pub struct Hot {
    /// The entity in this slot. A vacant slot holds the id `!slot`, whose
    /// slot bits are not this slot's, so no lookup by id matches it.
    pub id: u32,
    /// Differs from the last value whenever the state changes (the low bits
    /// of the tick of the change): a client that was sent version `v` needs
    /// the state again exactly when the version is no longer `v`.
    pub version: u32,
    /// The state encoded once in bincode.
    pub wire: WireState,
}

impl Hot {
    /// The entry of a vacant slot.
    #[must_use]
    pub fn vacant(slot: u32) -> Self {
        Self {
            id: !slot,
            version: 0,
            wire: WireState::default(),
        }
    }

    /// The entry of entity `state.id`, whose state last changed in `changed_tick`.
    #[must_use]
    pub fn new(state: &EntityState, wire: WireState, changed_tick: u64) -> Self {
        Self {
            id: state.id,
            // Truncated on purpose: only equality is ever asked of versions,
            // and a state unchanged for exactly 2^32 ticks (6.8 years at
            // 20 Hz) is not a concern.
            version: changed_tick as u32,
            wire,
        }
    }
}

/// Per-step durations of one tick, in microseconds, in the order of `World::tick`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickTimings {
    /// Applying joins, leaves, inputs and control events.
    pub commands_us: u32,
    /// Validating and applying moves, area events.
    pub movement_us: u32,
    /// Expiring dropped sessions past their grace period.
    pub sessions_us: u32,
    /// Building and publishing the snapshot.
    pub publish_us: u32,
    /// Handing dirty positions to the flusher.
    pub persist_us: u32,
    /// Flags: zone events and captures.
    pub flags_us: u32,
    /// The whole tick.
    pub total_us: u32,
}

/// The distribution of whole-tick durations, refreshed once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickStats {
    /// Ticks run since the world started.
    pub ticks: u64,
    /// Median tick duration since start, in microseconds.
    pub p50_us: u64,
    /// 99th percentile since start, in microseconds.
    pub p99_us: u64,
    /// Longest tick since start, in microseconds.
    pub max_us: u64,
    /// 99th percentile over the last completed 10 s window, in microseconds.
    pub recent_p99_us: u64,
}

/// A world at one tick.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The tick number.
    pub tick: u64,
    /// Unix milliseconds at the tick.
    pub server_time_ms: u64,
    /// Entities by slot.
    pub slots: Vec<Option<EntitySnap>>,
    /// The same entities' ids, versions and wire states, by slot.
    pub hot: Vec<Hot>,
    /// The same entities' identities, by slot.
    pub roster: Arc<Vec<Option<Identity>>>,
    /// Index of the entities' positions.
    pub grid: Grid,
    /// How long the previous tick's steps took.
    pub timings: TickTimings,
    /// Ticks so far that took longer than the tick period.
    pub overruns: u64,
    /// Tick duration percentiles.
    pub stats: TickStats,
    /// How many of the entities are ghosts (players of other shards).
    pub ghosts: usize,
    /// The world's teams with their scores, and its flags.
    pub board: Arc<Board>,
}

/// Teams, scores and flags as the ops endpoints show them: rebuilt only when
/// one of them changes and shared by the snapshots in between.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Board {
    /// Every team with its score, in display order.
    pub teams: Vec<TeamInfo>,
    /// Every flag.
    pub flags: Vec<FlagInfo>,
}

impl Snapshot {
    /// The entity with this id, if it is still there (not replaced in its slot).
    #[must_use]
    pub fn entity(&self, id: u32) -> Option<&EntitySnap> {
        self.slots
            .get((id & SLOT_MASK) as usize)?
            .as_ref()
            .filter(|e| e.state.id == id)
    }

    /// The hot entry of the entity with this id, if it is still there.
    #[must_use]
    pub fn hot(&self, id: u32) -> Option<&Hot> {
        self.hot
            .get((id & SLOT_MASK) as usize)
            .filter(|h| h.id == id)
    }

    /// How many of this shard's players there are (ghosts excluded).
    #[must_use]
    pub fn population(&self) -> usize {
        self.grid.len() - self.ghosts
    }
}
