//! Shard sync: the `Bus` trait through which shards share control events, the
//! in-process implementation used by a shard alone, and the Redis one used by
//! shards that share a Redis (`REDIS_URL`).

pub mod cells;
pub mod local;
pub mod presence;
pub mod redis;
pub mod stream;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use self::redis::{BusError, BusStats, RedisBus};
pub use local::LocalBus;
pub use presence::ShardRecord;

/// An event every shard must apply, this one included. Control events must not
/// be lost: the Redis implementation carries them on a stream that each shard
/// reads from its last id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlEvent {
    /// A session was revoked (logout): every shard drops its socket.
    SessionRevoked {
        /// The revoked session.
        session_id: Uuid,
    },
    /// An operator kicked a player.
    Kick {
        /// The account.
        user_id: Uuid,
    },
    /// A world's areas changed in the store: reload them.
    AreasChanged {
        /// The world.
        world_id: Uuid,
    },
    /// An account logged in with this fencing epoch: a shard holding an older
    /// login of it kicks that one (`logged_in_elsewhere`), so the account is
    /// online once across all shards.
    LoggedIn {
        /// The account.
        user_id: Uuid,
        /// The new login's epoch.
        epoch: u64,
        /// The shard it logged in on (which takes the player over itself).
        shard: String,
    },
    /// An operator's message to every player of a world, or of every world.
    Broadcast {
        /// The world; `None` is every world.
        world_id: Option<Uuid>,
        /// What to say, already cleaned.
        text: String,
    },
    /// A flag capture was committed: every shard announces it once (by its id).
    FlagCaptured(crate::store::CommittedCapture),
    /// A world's flags changed in the store (an operator added, moved or
    /// removed one): reload them.
    FlagsChanged {
        /// The world.
        world_id: Uuid,
    },
    /// An operator reset a world's scores to 0.
    ScoresReset {
        /// The world.
        world_id: Uuid,
    },
}

/// The shards' shared channel. Calls never block: they hand work to a
/// background task, so the tick and request handlers may call them freely.
pub trait Bus: Send + Sync + 'static {
    /// Deliver a control event to every shard, this one included.
    fn send_control(&self, event: ControlEvent);

    /// Subscribe to control events from every shard, in the order they were sent.
    /// A subscriber that falls far behind sees `RecvError::Lagged` and should
    /// resynchronise from the store.
    fn subscribe_control(&self) -> broadcast::Receiver<ControlEvent>;
}
