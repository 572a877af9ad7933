//! The bus between shards that share one Redis: control events on a stream
//! (`stream.rs`), the shard's ownership of its id and its presence record
//! (`presence.rs`), and the counters and shutdown that tie them together.
//!
//! Nothing here blocks the shard on Redis: `send_control` queues, background
//! tasks do the calls, and while Redis is away they retry with backoff and
//! the shard goes on serving its own players.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::presence::{self, Announcement, ShardRecord};
use super::stream;
use super::{Bus, ControlEvent};

/// The longest one Redis call of the bus may take (the stream's blocking
/// read excepted); a stalled Redis is then treated as a failed one.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long startup waits for Redis before starting without it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long shutdown waits for the tasks to finish their last calls.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Control events queued for the writer before `send_control` drops them:
/// far more than a shard sends while Redis restarts, and a bound on memory
/// during a long outage.
const OUTBOX: usize = 4096;

/// How many control events a slow subscriber may fall behind before it lags.
const SUBSCRIBERS: usize = 1024;

/// At most one warning about dropped events per this interval.
const DROP_WARNING_INTERVAL_MS: i64 = 10_000;

/// Why the Redis bus could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not a valid Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// Another running shard holds this shard's id.
    #[error(
        "SHARD_ID {shard_id:?} is in use by another running shard (Redis key \
         meridian:shard:{shard_id}:owner); give every shard its own SHARD_ID"
    )]
    ShardIdTaken {
        /// The id.
        shard_id: String,
    },
    /// Redis did not answer within `CALL_TIMEOUT`.
    #[error("Redis did not answer within {} ms", CALL_TIMEOUT.as_millis())]
    Timeout,
    /// Redis refused the command or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What the bus's tasks share.
pub struct Shared {
    /// `SHARD_ID`.
    pub shard_id: String,
    /// This process's random token: the owner key's value, and the stream's
    /// epoch if this process creates the stream.
    pub token: String,
    /// When the bus started, Unix ms.
    pub started_at_ms: i64,
    /// Cancelled to stop every task.
    pub stop: CancellationToken,
    /// What the presence record says about the ports and players; `None`
    /// until the shard has bound its ports. A std `Mutex`, held only to copy
    /// the values out, never across an await.
    pub announced: Mutex<Option<Announcement>>,
    /// Counts for metrics.
    pub counters: Counters,
}

/// Counts of what the bus did since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Control events appended to the stream by this shard.
    pub sent: AtomicU64,
    /// Control events read from the stream (every shard's, this one's included).
    pub received: AtomicU64,
    /// Control events never appended: the queue was full, or shutdown came first.
    pub dropped: AtomicU64,
    /// Times the stream reader connected again after losing Redis.
    pub reconnects: AtomicU64,
    /// When a drop was last logged, Unix ms.
    last_drop_warning_ms: std::sync::atomic::AtomicI64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BusStats {
    /// Control events appended to the stream by this shard.
    pub sent: u64,
    /// Control events read from the stream.
    pub received: u64,
    /// Control events never appended.
    pub dropped: u64,
    /// Reconnects of the stream reader.
    pub reconnects: u64,
}

/// Exponential backoff between attempts, reset after a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

/// The bus of a shard among others sharing one Redis.
pub struct RedisBus {
    /// State shared with the tasks.
    shared: Arc<Shared>,
    /// Where the reader delivers control events.
    control: broadcast::Sender<ControlEvent>,
    /// The writer's queue.
    outbox: mpsc::Sender<ControlEvent>,
    /// For listing shards; shared with the writer and the keeper.
    connection: ConnectionManager,
    /// The reader, writer and keeper, joined on shutdown. A std `Mutex`, only
    /// taken once to move them out.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password, so it is not kept or shown.
        f.debug_struct("RedisBus")
            .field("shard_id", &self.shared.shard_id)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Claim `shard_id` in the Redis at `url`, note the control stream's
    /// current end, and start the reader, writer and presence tasks. If Redis
    /// does not answer within a couple of seconds the bus starts anyway and
    /// the tasks do all of this once it does (the id cannot be checked then).
    ///
    /// # Errors
    /// `BusError::Url` if the URL is invalid; `BusError::ShardIdTaken` if
    /// another running shard holds `shard_id`.
    pub async fn start(url: &str, shard_id: &str) -> Result<Self, BusError> {
        // The parser's message can quote the URL, password included, so only
        // its kind is kept.
        let client = redis::Client::open(url).map_err(|e| BusError::Url(e.category().into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let mut connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let shared = Arc::new(Shared {
            shard_id: shard_id.to_owned(),
            token: hex::encode(rand::random::<[u8; 16]>()),
            started_at_ms: crate::store::now_ms(),
            stop: CancellationToken::new(),
            announced: Mutex::new(None),
            counters: Counters::default(),
        });

        let startup = async {
            presence::claim(&mut connection, &shared).await?;
            Ok::<_, BusError>(stream::current_end(&mut connection).await?)
        };
        // The claim may wait up to a TTL for a dead holder's key to expire;
        // only an unreachable Redis is cut short.
        let cursor = match tokio::time::timeout(presence::TTL + STARTUP_TIMEOUT, startup).await {
            Ok(Ok(cursor)) => Some(cursor),
            Ok(Err(error @ BusError::ShardIdTaken { .. })) => return Err(error),
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis does not answer; starting without it, shard sync follows once it does");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "Redis does not answer; starting without it, shard sync follows once it does"
                );
                None
            }
        };

        let control = broadcast::channel(SUBSCRIBERS).0;
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let tasks = vec![
            tokio::spawn(stream::read(
                Arc::clone(&shared),
                client,
                control.clone(),
                cursor,
            )),
            tokio::spawn(stream::write(
                Arc::clone(&shared),
                connection.clone(),
                queued,
            )),
            tokio::spawn(presence::keep(Arc::clone(&shared), connection.clone())),
        ];
        Ok(Self {
            shared,
            control,
            outbox,
            connection,
            tasks: Mutex::new(tasks),
        })
    }

    /// Say where this shard serves, and how to count its players, for the
    /// presence record (written from the next heartbeat on).
    pub fn announce(
        &self,
        game_addr: SocketAddr,
        ops_addr: SocketAddr,
        players: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        *self.shared.announced.lock().expect("never poisoned") = Some(Announcement {
            game_addr,
            ops_addr,
            players: Box::new(players),
        });
    }

    /// The shards alive now (those whose presence record has not expired),
    /// this one included once it has announced itself.
    ///
    /// # Errors
    /// `BusError` if Redis does not answer.
    pub async fn shards(&self) -> Result<Vec<ShardRecord>, BusError> {
        presence::live(&mut self.connection.clone()).await
    }

    /// Whether Redis answers a `PING` now.
    ///
    /// # Errors
    /// `BusError` if it does not.
    pub async fn ping(&self) -> Result<(), BusError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> BusStats {
        let c = &self.shared.counters;
        BusStats {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Stop the tasks: queued control events get a last try, the presence
    /// record is deleted and the shard id released, so a successor with the
    /// same id can start at once.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("never poisoned"));
        let joined = futures_util::future::join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, joined)
            .await
            .is_err()
        {
            tracing::warn!("the Redis bus did not stop in time");
        }
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // Without a shutdown the tasks still stop (and release the id, if the
        // runtime lets them).
        self.shared.stop.cancel();
    }
}

impl Bus for RedisBus {
    fn send_control(&self, event: ControlEvent) {
        if self.outbox.try_send(event).is_ok() {
            return;
        }
        // Full (Redis has been away long enough to fill the queue) or closed
        // (shutting down): the event is lost to the other shards. Count it,
        // and say so at most once per interval.
        let counters = &self.shared.counters;
        let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::store::now_ms();
        let last = counters.last_drop_warning_ms.load(Ordering::Relaxed);
        if now - last >= DROP_WARNING_INTERVAL_MS
            && counters
                .last_drop_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(dropped, "control event dropped: the queue to Redis is full");
        }
    }

    fn subscribe_control(&self) -> broadcast::Receiver<ControlEvent> {
        self.control.subscribe()
    }
}
