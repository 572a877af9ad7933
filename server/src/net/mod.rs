//! The WebSocket gateway: `/ws` on the game port, the task that reads each
//! connection (`connection` → `reader`), and each world's fan-out tasks that
//! write to all of them (`fanout`) through the sockets' writers (`socket`).
//!
//! Architecture Invariant: a connection's failure ends that connection only.
//! Connection tasks reach the tick through its command channel and read its
//! snapshots; they never touch the world directly.

pub mod addresses;
mod connection;
pub mod deadline;
pub mod fanout;
pub mod forwarded;
pub mod frames;
mod limiter;
mod reader;
pub mod socket;
mod upgrade;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::store::{RedisCache, Store};
use crate::world::interest::View;
use crate::world::WorldHandle;

pub use fanout::FanOut;
pub use upgrade::{accept, negotiate, router, tune_socket};

/// How long a socket may take to authenticate before it is closed.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client's socket may stay unable to take its frames before the
/// client is dropped as too slow.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// Ticks per second (the highest update rate).
    pub tick_hz: u8,
    /// What a client sees.
    pub view: View,
    /// Close sockets silent for this long.
    pub idle_timeout: Duration,
    /// Messages per second a client may send.
    pub client_msg_rate: u32,
    /// This shard's name, in the logins it announces.
    pub shard_id: String,
    /// Open game sockets allowed per client address (0: no limit).
    pub max_connections_per_address: usize,
}

impl NetSettings {
    /// The network settings of a shard configuration.
    #[must_use]
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            tick_hz: config.tick_hz,
            view: View::new(config.aoi_radius_m, config.aoi_max),
            idle_timeout: config.idle_timeout,
            client_msg_rate: config.client_msg_rate,
            shard_id: config.shard_id.clone(),
            max_connections_per_address: config.max_connections_per_address,
        }
    }
}

/// How connections reach the other shards.
pub struct OtherShards {
    /// Where a login is announced, so that other shards drop an older one.
    pub bus: Arc<dyn Bus>,
    /// With Redis: where a player taken over from another shard stands now.
    pub handover: Option<RedisCache>,
}

/// Everything connection tasks share.
pub struct Gateway {
    /// Running worlds by name.
    pub worlds: HashMap<String, WorldHandle>,
    /// Each world's fan-out, by world name: built from `worlds`, so every
    /// world a connection can join has one.
    pub fanouts: HashMap<String, FanOut<socket::Writer>>,
    /// The world joined when a client names none.
    pub default_world: String,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// Where positions and epochs are loaded from.
    pub store: Arc<dyn Store>,
    /// Where a login is announced, so that other shards drop an older one.
    pub bus: Arc<dyn Bus>,
    /// With Redis: where a player taken over from another shard stands now.
    pub handover: Option<RedisCache>,
    /// Per-connection settings.
    pub settings: NetSettings,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the shard shuts down.
    pub shutdown: CancellationToken,
    /// Open sockets per client address.
    pub addresses: Arc<addresses::AddressCap>,
    next_conn: AtomicU64,
}

impl Gateway {
    /// A gateway over running worlds, with a fan-out task per core for each
    /// (call it inside the runtime).
    #[must_use]
    pub fn new(
        worlds: HashMap<String, WorldHandle>,
        default_world: String,
        auth: Arc<Auth>,
        store: Arc<dyn Store>,
        others: OtherShards,
        settings: NetSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let OtherShards { bus, handover } = others;
        let tracker = TaskTracker::new();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let fanouts = worlds
            .iter()
            .map(|(name, world)| {
                let fanout = FanOut::start(
                    &world.snapshots,
                    settings.view,
                    settings.tick_hz,
                    cores,
                    &tracker,
                );
                (name.clone(), fanout)
            })
            .collect();
        Self {
            addresses: addresses::AddressCap::new(settings.max_connections_per_address),
            worlds,
            fanouts,
            bus,
            handover,
            default_world,
            auth,
            store,
            settings,
            tracker,
            shutdown,
            next_conn: AtomicU64::new(1),
        }
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
