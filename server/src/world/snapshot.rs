//! The immutable picture of a world that the tick publishes every tick.
//!
//! Connection tasks hold an `Arc<Snapshot>` and compute their own client's view
//! from it in parallel, off the tick thread; the tick never waits for them and
//! never copies anything per recipient.

use std::sync::Arc;

use meridian_protocol::{EntityState, WireState};
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
    /// The account behind it.
    pub player_id: Uuid,
    /// Display name.
    pub name: Arc<str>,
    /// Earth-centred metric position (see `geodesy::to_ecef`).
    pub ecef: [f64; 3],
    /// Quantized state as sent on the wire; `state.id` is the entity id.
    pub state: EntityState,
    /// `state` encoded once in bincode.
    pub wire: WireState,
    /// The tick in which `state` last changed.
    pub changed_tick: u64,
    /// The last move `seq` accepted from this player.
    pub ack_seq: u32,
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
    /// Index of the entities' positions.
    pub grid: Grid,
    /// How long the previous tick's steps took.
    pub timings: TickTimings,
    /// Ticks so far that took longer than the tick period.
    pub overruns: u64,
    /// Tick duration percentiles.
    pub stats: TickStats,
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

    /// How many entities there are.
    #[must_use]
    pub fn population(&self) -> usize {
        self.grid.len()
    }
}
