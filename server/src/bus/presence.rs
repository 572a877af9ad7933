//! Which shards are alive, in Redis: each shard owns its `SHARD_ID` through
//! `meridian:shard:{id}:owner` (a random token per process, so two shards
//! configured with one id cannot both run) and publishes a record of itself
//! in `meridian:shard:{id}`. Both expire unless renewed, so a shard that dies
//! without a goodbye disappears on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::redis::{BusError, Shared, CALL_TIMEOUT};

/// How long the owner key and the presence record live without renewal.
pub const TTL: Duration = Duration::from_secs(10);

/// How often both are renewed: several renewals fit in one TTL, so a few
/// failed calls do not let them lapse.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A sorted set of shard ids scored by their last heartbeat (Unix ms), so the
/// live shards can be listed without scanning the keyspace.
pub const SHARDS_KEY: &str = "meridian:shards";

/// Members whose heartbeat is older than this are removed from `SHARDS_KEY`
/// when the shards are listed.
const FORGET_AFTER_MS: i64 = 60_000;

/// How often a starting shard looks at an owner key held by another token.
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// Take the owner key if it is free, renew it if it is ours; 0 if another
/// token holds it, 1 if renewed, 2 if taken.
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return 0
";

/// Delete the owner key if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// The owner key of a shard id.
#[must_use]
pub fn owner_key(shard_id: &str) -> String {
    format!("meridian:shard:{shard_id}:owner")
}

/// The presence record's key of a shard id.
#[must_use]
pub fn record_key(shard_id: &str) -> String {
    format!("meridian:shard:{shard_id}")
}

/// What a live shard says about itself in `meridian:shard:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// `SHARD_ID`.
    pub shard_id: String,
    /// The game port (WebSocket and account API).
    pub game_addr: String,
    /// The ops port.
    pub ops_addr: String,
    /// The server's version.
    pub version: String,
    /// When the shard started, Unix ms.
    pub started_at_ms: i64,
    /// Players connected to this shard, as of the heartbeat.
    pub players: u64,
    /// When the record was written, Unix ms.
    pub heartbeat_ms: i64,
}

/// What the shard announces once its ports are bound.
pub struct Announcement {
    /// The bound game port.
    pub game_addr: SocketAddr,
    /// The bound ops port.
    pub ops_addr: SocketAddr,
    /// Counts the connected players; called once per heartbeat, so it must be cheap.
    pub players: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The result of one `RENEW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Another token holds the id.
    Other,
    /// Ours, renewed.
    Renewed,
    /// Was free, now ours.
    Taken,
}

async fn renew(connection: &mut ConnectionManager, shared: &Shared) -> Result<Ownership, BusError> {
    let answer: i64 = call(
        redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(owner_key(&shared.shard_id))
            .arg(&shared.token)
            .arg(ms(TTL)),
        connection,
    )
    .await?;
    Ok(match answer {
        1 => Ownership::Renewed,
        2 => Ownership::Taken,
        _ => Ownership::Other,
    })
}

/// Claim the shard id at startup.
///
/// A key held by another token may be a shard that is running, or one that
/// died without releasing it (a crash, a kill), whose key expires within
/// `TTL`. A running holder renews every `HEARTBEAT`, which shows as its key's
/// time to live going up; so this waits, up to `TTL`, until the key is gone
/// (taken then) or is seen renewed (refused at once).
///
/// # Errors
/// `BusError::ShardIdTaken` if another running shard holds the id;
/// `BusError::Redis` or `Timeout` if Redis cannot be asked.
pub async fn claim(connection: &mut ConnectionManager, shared: &Shared) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + TTL + HEARTBEAT;
    let key = owner_key(&shared.shard_id);
    let mut last_ttl: Option<i64> = None;
    loop {
        if renew(connection, shared).await? != Ownership::Other {
            return Ok(());
        }
        let ttl: i64 = call(redis::cmd("PTTL").arg(&key), connection).await?;
        let renewed = last_ttl.is_some_and(|last| ttl > last);
        if renewed || tokio::time::Instant::now() >= deadline {
            return Err(BusError::ShardIdTaken {
                shard_id: shared.shard_id.clone(),
            });
        }
        if last_ttl.is_none() {
            tracing::info!(
                "SHARD_ID is held by another process; waiting to see whether it is still alive"
            );
        }
        last_ttl = Some(ttl);
        tokio::time::sleep(CLAIM_POLL).await;
    }
}

/// Renew the owner key and the presence record every `HEARTBEAT` until
/// stopped, taking the id again after Redis lost it (a restart without
/// persistence); then release both.
pub async fn keep(shared: Arc<Shared>, mut connection: ConnectionManager) {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut lost = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shared.stop.cancelled() => break,
        }
        let result = async {
            let ownership = renew(&mut connection, &shared).await?;
            if ownership != Ownership::Other {
                publish(&mut connection, &shared).await?;
            }
            Ok::<_, BusError>(ownership)
        }
        .await;
        match result {
            Ok(ownership) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("shard presence renewed in Redis again");
                }
                match ownership {
                    Ownership::Other if !lost => {
                        lost = true;
                        // Only possible after this shard failed to renew for a
                        // whole TTL while another process with the same
                        // SHARD_ID started: the id is theirs now.
                        tracing::error!(
                            "another process holds this SHARD_ID in Redis; \
                             this shard no longer announces itself"
                        );
                    }
                    Ownership::Other => {}
                    Ownership::Renewed | Ownership::Taken => lost = false,
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot renew shard presence in Redis; retrying");
                }
            }
        }
    }
    if let Err(error) = release(&mut connection, &shared).await {
        tracing::warn!(%error, "cannot release SHARD_ID in Redis; it expires on its own");
    }
}

/// Write the presence record, once the ports are announced.
async fn publish(connection: &mut ConnectionManager, shared: &Shared) -> Result<(), BusError> {
    let now = crate::store::now_ms();
    let record = {
        let announced = shared.announced.lock().expect("never poisoned");
        let Some(announced) = announced.as_ref() else {
            return Ok(());
        };
        ShardRecord {
            shard_id: shared.shard_id.clone(),
            game_addr: announced.game_addr.to_string(),
            ops_addr: announced.ops_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at_ms: shared.started_at_ms,
            players: (announced.players)(),
            heartbeat_ms: now,
        }
    };
    let json = serde_json::to_string(&record).expect("records serialise");
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("SET")
        .arg(record_key(&shared.shard_id))
        .arg(json)
        .arg("PX")
        .arg(ms(TTL))
        .ignore()
        .cmd("ZADD")
        .arg(SHARDS_KEY)
        .arg(now)
        .arg(&shared.shard_id)
        .ignore();
    call_pipeline(&pipeline, connection).await
}

/// Delete the presence record and the owner key (if still ours).
async fn release(connection: &mut ConnectionManager, shared: &Shared) -> Result<(), BusError> {
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("EVAL")
        .arg(RELEASE)
        .arg(1)
        .arg(owner_key(&shared.shard_id))
        .arg(&shared.token)
        .ignore()
        .cmd("DEL")
        .arg(record_key(&shared.shard_id))
        .ignore()
        .cmd("ZREM")
        .arg(SHARDS_KEY)
        .arg(&shared.shard_id)
        .ignore();
    call_pipeline(&pipeline, connection).await
}

/// The records of the shards alive now, by shard id.
///
/// # Errors
/// `BusError::Redis` or `Timeout` if Redis does not answer.
pub async fn live(connection: &mut ConnectionManager) -> Result<Vec<ShardRecord>, BusError> {
    let forget_before = crate::store::now_ms() - FORGET_AFTER_MS;
    let _: i64 = call(
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(SHARDS_KEY)
            .arg("-inf")
            .arg(forget_before),
        connection,
    )
    .await?;
    let ids: Vec<String> = call(
        redis::cmd("ZRANGE").arg(SHARDS_KEY).arg(0).arg(-1),
        connection,
    )
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| record_key(id)).collect();
    let records: Vec<Option<String>> = call(redis::cmd("MGET").arg(keys), connection).await?;
    let mut live: Vec<ShardRecord> = records
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    live.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    Ok(live)
}

async fn call<T: redis::FromRedisValue>(
    command: &redis::Cmd,
    connection: &mut ConnectionManager,
) -> Result<T, BusError> {
    tokio::time::timeout(CALL_TIMEOUT, command.query_async(connection))
        .await
        .map_err(|_| BusError::Timeout)?
        .map_err(BusError::Redis)
}

async fn call_pipeline(
    pipeline: &redis::Pipeline,
    connection: &mut ConnectionManager,
) -> Result<(), BusError> {
    tokio::time::timeout(CALL_TIMEOUT, pipeline.query_async::<()>(connection))
        .await
        .map_err(|_| BusError::Timeout)?
        .map_err(BusError::Redis)
}

/// Redis takes expiries in whole milliseconds.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
