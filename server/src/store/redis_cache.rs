//! The Redis connection behind the session and profile caches: one
//! auto-reconnecting connection, a short deadline on every call, a pause after
//! a failure, and warnings written at most once per interval.
//!
//! Redis is only ever a cache here, so a call that fails or is slow is not an
//! error for the caller's caller: it is reported as `CacheError` and the caller
//! asks the database instead. Nothing waits for Redis longer than
//! [`CALL_TIMEOUT`], whether it is down, unreachable or stalled; and after a
//! failure, calls fail at once for [`PAUSE_AFTER_FAILURE`], so that an outage
//! costs requests nothing but the database's answer, and the connection is
//! tried again about once per pause.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, SetExpiry, SetOptions};

/// The longest any cache call may take before the caller falls back to the
/// database. After one call has timed out the others fail at once (see
/// `PAUSE_AFTER_FAILURE`), so a stalled Redis adds about this much to a
/// request, however many cache calls it makes.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How long one connection attempt may take (inside `CALL_TIMEOUT` calls; a
/// reconnect runs on after the call that started it has given up).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Attempts after the first failed connection attempt, before the connection
/// is reported broken; the next call then starts a new round. Bounded, so a
/// long outage costs one short round of attempts per call at most.
const CONNECT_RETRIES: usize = 2;

/// The backoff between connection attempts of one round.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(50);
const RETRY_MAX_DELAY: Duration = Duration::from_millis(500);

/// After a failed call, how long calls fail at once without trying Redis.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// At most one warning about failing cache calls per this interval; the
/// others are counted and the count is written with the next warning.
const WARN_INTERVAL_MS: i64 = 10_000;

/// Why a cache call did not answer. Callers fall back to the database.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The URL is not a valid Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// No answer within `CALL_TIMEOUT`.
    #[error("Redis did not answer within {} ms", CALL_TIMEOUT.as_millis())]
    Timeout,
    /// Not tried: a call failed less than `PAUSE_AFTER_FAILURE` ago.
    #[error("Redis is paused after a failure")]
    Paused,
    /// Redis refused the command or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A cheap-to-clone handle on one Redis server.
#[derive(Clone)]
pub struct RedisCache {
    /// Multiplexed and reconnecting; cloning it shares the one connection.
    connection: ConnectionManager,
    /// Whether Redis is failing, and the log rate limit.
    health: Arc<Health>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password, so it is not kept or shown.
        f.debug_struct("RedisCache").finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A handle on the Redis server at `url`. It does not connect: the first
    /// call does, and a server that is down at startup is tried again by later
    /// calls, so the shard starts and serves without it. Must be called inside
    /// a tokio runtime.
    ///
    /// # Errors
    /// `CacheError::Url` if the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, CacheError> {
        // The parser's message can quote the URL, password included, so only
        // its kind is kept.
        let client = redis::Client::open(url).map_err(|e| CacheError::Url(e.category().into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(RETRY_MIN_DELAY)
            .set_max_delay(RETRY_MAX_DELAY);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            health: Arc::new(Health::default()),
        })
    }

    /// Check that Redis answers.
    ///
    /// # Errors
    /// `CacheError` if it does not, within `CALL_TIMEOUT`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.call("PING", async move {
            redis::cmd("PING").query_async::<()>(&mut connection).await
        })
        .await
    }

    /// The value of `key`, or `None` if it does not exist.
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut connection = self.connection.clone();
        self.call("GET", async move { connection.get(key).await })
            .await
    }

    /// The bytes of field `field` of hash `key`, or `None` if either is missing.
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn hget_bytes(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut connection = self.connection.clone();
        self.call("HGET", async move { connection.hget(key, field).await })
            .await
    }

    /// Set `key` to `value`, expiring after `ttl` (at least one millisecond).
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let options = SetOptions::default().with_expiration(px(ttl));
        self.call("SET", async move {
            connection
                .set_options::<_, _, ()>(key, value, options)
                .await
        })
        .await
    }

    /// Delete a key (a missing one is fine).
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.call("DEL", async move { connection.del::<_, ()>(key).await })
            .await
    }

    /// Run a Lua script (`EVAL`) and return its integer result.
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn eval(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<i64, CacheError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("EVAL");
        command.arg(script).arg(keys.len()).arg(keys).arg(args);
        self.call("EVAL", async move {
            command.query_async::<i64>(&mut connection).await
        })
        .await
    }

    /// Run a transaction (`MULTI` … `EXEC`) built by the caller.
    ///
    /// # Errors
    /// `CacheError` if Redis does not answer in time or fails.
    pub async fn atomic(&self, pipeline: redis::Pipeline) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.call("MULTI", async move {
            pipeline.query_async::<()>(&mut connection).await
        })
        .await
    }

    /// Await a command within `CALL_TIMEOUT` unless calls are paused, and warn
    /// (rate-limited) if it fails: the caller falls back to the database and
    /// says nothing more.
    async fn call<T>(
        &self,
        command: &'static str,
        future: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        if super::now_ms() < self.health.paused_until_ms.load(Ordering::Relaxed) {
            return Err(CacheError::Paused);
        }
        let error = match tokio::time::timeout(CALL_TIMEOUT, future).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                return Ok(value);
            }
            Ok(Err(error)) => CacheError::Redis(error),
            Err(_) => CacheError::Timeout,
        };
        self.health.failed(command, &error);
        Err(error)
    }
}

/// Redis takes expiries in whole milliseconds and refuses zero.
fn px(ttl: Duration) -> SetExpiry {
    SetExpiry::PX(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// Whether Redis is failing, shared by every clone of a `RedisCache`.
#[derive(Debug, Default)]
struct Health {
    /// Set by a failed call, cleared by a successful one (which says so in
    /// the log).
    down: AtomicBool,
    /// Calls fail at once until then, Unix ms.
    paused_until_ms: AtomicI64,
    /// When the last warning was written, Unix ms (0: never).
    last_warning_ms: AtomicI64,
    /// Failures since then that were not written.
    suppressed: AtomicU64,
}

impl Health {
    fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: sessions and profiles are cached");
        }
    }

    fn failed(&self, command: &'static str, error: &CacheError) {
        let now = super::now_ms();
        let pause = i64::try_from(PAUSE_AFTER_FAILURE.as_millis()).unwrap_or(i64::MAX);
        self.paused_until_ms
            .store(now.saturating_add(pause), Ordering::Relaxed);
        self.down.store(true, Ordering::Relaxed);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let due = now - last >= WARN_INTERVAL_MS;
        // Of racing callers, only the one that moves the clock writes.
        if due
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                command,
                %error,
                suppressed,
                "Redis cache call failed; using the database instead"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
