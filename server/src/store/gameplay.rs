//! Records of the game's durable state beyond accounts and positions: teams,
//! their scores, and flag captures.
//!
//! A capture is the one gameplay event that must never be announced and then
//! lost: the tick proposes it, `Store::capture_flag` commits it in one
//! transaction (the flag's conditional update on its version, the history row,
//! the team's score), and only then is it announced. Committed captures that no
//! shard announced (the capturing shard died between the commit and the
//! announcement) are found again by `Store::unannounced_captures`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A team players belong to (the `teams` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Unique name, e.g. `red`: what the wire, profiles and captures carry.
    pub name: String,
    /// Display colour, CSS hex (`#e5484d`).
    pub colour: String,
}

/// A team's score in one world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamScore {
    /// The team's name.
    pub team: String,
    /// Flags captured since the last reset.
    pub score: i64,
}

/// A capture a shard proposes: a player of `team` held `flag_id`'s zone for
/// the capture time while the flag was at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// UUIDv7 chosen by the proposing shard: the idempotency key every shard
    /// applies the capture by.
    pub id: Uuid,
    /// The world.
    pub world_id: Uuid,
    /// The flag (a `world_objects` row of kind `flag`).
    pub flag_id: Uuid,
    /// The player credited.
    pub user_id: Uuid,
    /// The player's display name, for the announcement.
    pub name: String,
    /// The capturing team.
    pub team: String,
    /// The flag's version the capture was won against; the commit succeeds
    /// only if the flag is still at it.
    pub version: i64,
    /// When the dwell time was complete, Unix milliseconds.
    pub captured_at_ms: i64,
}

/// What `Store::capture_flag` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// Committed: the flag now belongs to the team at `version` (the old one
    /// plus one) and the team's score is `score`.
    Committed {
        /// The flag's new version.
        version: i64,
        /// The capturing team's new score in the world.
        score: i64,
    },
    /// Nothing written: the flag is no longer at the proposed version (another
    /// shard captured it first, or an operator moved or deleted it).
    Stale,
}

/// A capture as committed, which is what shards announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedCapture {
    /// The capture as proposed.
    pub capture: Capture,
    /// The flag's version after it.
    pub version: i64,
    /// The team's score after it.
    pub score: i64,
}
