//! Ghosts: players of other shards, as this shard's world holds them.
//!
//! A ghost sits in the same slots, grid and snapshots as a local player, so
//! local players see it exactly like a neighbour of their own shard (entered,
//! moved, left). It is never validated, never flushed (its own shard does
//! both) and never sent anything. What arrives about it is ordered by
//! `(epoch, seq)`; a ghost that is not refreshed within its TTL leaves, which
//! heals lost messages and dead shards alike. A ghost of a player who is
//! local here is ignored: the local player is the truth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_protocol::LonLat;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long a ghost stays without news. Every shard republishes each of its
/// players at least once a second, so this is three missed republishes.
pub const GHOST_TTL: Duration = Duration::from_secs(3);

/// A player's state as its own shard publishes it to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemotePlayer {
    /// The account.
    pub user_id: Uuid,
    /// Display name (shared with the player record: sharing a moving player
    /// every tick copies no string).
    pub name: Arc<str>,
    /// The fencing epoch of the login on its shard.
    pub epoch: u64,
    /// Increases with every accepted move within the epoch.
    pub seq: u64,
    /// Where.
    pub position: LonLat,
    /// Facing, degrees clockwise from north.
    pub heading: f32,
    /// Speed over its last movement, m/s.
    pub speed_mps: f32,
    /// Its team, which counts when it stands at a flag.
    pub team: Option<Arc<str>>,
}

/// The local players of one world that changed in a tick, or are due for
/// their once-a-second republish, for the other shards.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalChanges {
    /// The world.
    pub world_id: Uuid,
    /// The tick they are from.
    pub tick: u64,
    /// The players.
    pub players: Vec<RemotePlayer>,
}

/// What a world hands the shard-sync task for the other shards.
#[derive(Debug, Clone, PartialEq)]
pub enum Shared {
    /// Local players that changed (or are due for their republish).
    Players(LocalChanges),
    /// A line of world chat said here.
    Chat(super::chat::ChatLine),
}

/// What marks a slot's player as a ghost.
#[derive(Debug, Clone)]
pub struct Ghost {
    /// The shard the player is on.
    pub shard: Arc<str>,
    /// When it was last heard of; it leaves `GHOST_TTL` after.
    pub last_seen: Instant,
}

impl Ghost {
    /// Whether it has gone unheard for longer than the TTL at `now`.
    #[must_use]
    pub fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) > GHOST_TTL
    }
}
