//! `CachedStore`: any `Store` with Redis in front of its session and profile
//! reads, used when `REDIS_URL` is set.
//!
//! Keys (all with a TTL, so Redis never needs cleaning up):
//! * `meridian:session:{id}`: a live session (its account and times), set when
//!   the session is created and on a read that missed, for at most 24 h and
//!   never past the session's end; deleted when the session is revoked.
//! * `meridian:session:{id}:revoked`: set just before the session is revoked
//!   in the database, for 24 h; a read that missed refills the session key
//!   only while this mark is absent (in one script), so a read that saw the
//!   session live just before the revocation cannot bring the key back.
//! * `meridian:profile:{user_id}`: an account's name and roles, for 5 minutes,
//!   filled on a read that missed and deleted after every write to the account.
//!
//! The database stays the record: Redis only answers what the database said.
//! When Redis fails or is slow (see `RedisCache`), reads go to the database and
//! writes to Redis are skipped, except removals: a revocation or invalidation
//! that Redis missed is remembered here, reads of that key skip Redis, and a
//! background task retries the removal until Redis takes it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::redis_cache::{CacheError, RedisCache};
use meridian_protocol::LonLat;

use super::{
    now_ms, Area, Capture, CaptureOutcome, CommittedCapture, Nearby, Profile, Rotation, Session,
    Store, StoreError, StoredPosition, Team, TeamScore, User, WorldDef, WorldObject,
};

/// The longest a session key lives. Sessions last longer (the database has
/// their end); a read after that refills the key from the database.
pub const SESSION_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a profile is served from Redis after it was read from the database.
pub const PROFILE_TTL: Duration = Duration::from_secs(5 * 60);

/// How long a revoked session's mark blocks refills. Far longer than any read
/// can take, and as long as a session key can live.
const REVOKED_MARK_TTL: Duration = SESSION_KEY_TTL;

/// How often removals that Redis missed are retried.
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// The most removals remembered for retrying. Past it, during a very long
/// outage, new ones are dropped with an error in the log: a stale session key
/// then keeps the session's current access tokens working until the key's TTL
/// (new tokens need a refresh, which always asks the database).
const MAX_UNSYNCED: usize = 100_000;

/// Refill a session key unless the session was marked revoked meanwhile.
/// KEYS: session key, revoked mark. ARGV: value, TTL in ms. Returns 1 if set.
const REFILL_SESSION: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
     redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

fn session_key(id: Uuid) -> String {
    format!("meridian:session:{id}")
}

fn revoked_key(id: Uuid) -> String {
    format!("meridian:session:{id}:revoked")
}

fn profile_key(user_id: Uuid) -> String {
    format!("meridian:profile:{user_id}")
}

/// The value of a session key. Only live sessions are cached, so it has no
/// `revoked` flag.
#[derive(Debug, Serialize, Deserialize)]
struct CachedSession {
    user_id: Uuid,
    created_at_ms: i64,
    expires_at_ms: i64,
}

/// A key whose Redis value may be stale because removing it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unsynced {
    /// A revoked session: mark it revoked and delete its key.
    Session(Uuid),
    /// A changed account: delete its profile.
    Profile(Uuid),
}

/// A `Store` that serves sessions and profiles from Redis when it can.
pub struct CachedStore {
    /// The database: the record, and the answer whenever Redis has none.
    inner: Arc<dyn Store>,
    /// Sessions and profiles.
    redis: RedisCache,
    /// Removals Redis missed, until the repair task gets them through. A std
    /// `Mutex`: it is held for a set operation, never across an `.await`.
    unsynced: Arc<Mutex<HashSet<Unsynced>>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Put `redis` in front of `inner`. Must be called inside a tokio runtime:
    /// it starts a task that reports whether Redis answers and retries missed
    /// removals, which ends when the store is dropped.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, redis: RedisCache) -> Self {
        let unsynced = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(repair(redis.clone(), Arc::downgrade(&unsynced)));
        Self {
            inner,
            redis,
            unsynced,
        }
    }

    /// Wrap `inner` when a Redis URL is given, or return it as it is.
    ///
    /// # Errors
    /// `CacheError::Url` if the URL is invalid. Redis being down is not an
    /// error: the store works without it and uses it once it answers.
    pub fn wrap(inner: Arc<dyn Store>, url: Option<&str>) -> Result<Arc<dyn Store>, CacheError> {
        Ok(match url {
            Some(url) => Arc::new(Self::new(inner, RedisCache::open(url)?)),
            None => inner,
        })
    }

    fn is_unsynced(&self, key: Unsynced) -> bool {
        self.unsynced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key)
    }

    fn remember_unsynced(&self, key: Unsynced) {
        let mut unsynced = self
            .unsynced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if unsynced.len() < MAX_UNSYNCED {
            unsynced.insert(key);
        } else {
            tracing::error!(
                "too many cache removals waiting for Redis; dropping one (a revoked session \
                 may stay cached until its key expires)"
            );
        }
    }

    /// Cache a live session read from the database, unless it was revoked
    /// since (see `REFILL_SESSION`). A failure only costs a later miss.
    async fn refill_session(&self, session: &Session) {
        let Some((value, ttl)) = session_entry(session) else {
            return;
        };
        let ttl_ms = ttl.as_millis().to_string();
        let keys = [session_key(session.id), revoked_key(session.id)];
        let _ = self
            .redis
            .eval(
                REFILL_SESSION,
                &[&keys[0], &keys[1]],
                &[&value, ttl_ms.as_str()],
            )
            .await;
    }

    /// Mark a session revoked and delete its key, in one transaction.
    async fn remove_session(redis: &RedisCache, id: Uuid) -> Result<(), CacheError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("SET")
            .arg(revoked_key(id))
            .arg("1")
            .arg("PX")
            .arg(millis(REVOKED_MARK_TTL))
            .ignore()
            .cmd("DEL")
            .arg(session_key(id))
            .ignore();
        redis.atomic(pipeline).await
    }

    /// Drop an account's cached profile after a write to the account.
    async fn invalidate_profile(&self, user_id: Uuid) {
        if self.redis.delete(&profile_key(user_id)).await.is_err() {
            self.remember_unsynced(Unsynced::Profile(user_id));
        }
    }
}

/// The value and TTL of a session's key, or `None` if it is not live.
fn session_entry(session: &Session) -> Option<(String, Duration)> {
    let left_ms = session.expires_at_ms.saturating_sub(now_ms());
    if session.revoked || left_ms <= 0 {
        return None;
    }
    let ttl = SESSION_KEY_TTL.min(Duration::from_millis(left_ms.unsigned_abs()));
    let value = serde_json::to_string(&CachedSession {
        user_id: session.user_id,
        created_at_ms: session.created_at_ms,
        expires_at_ms: session.expires_at_ms,
    })
    .ok()?;
    Some((value, ttl))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Say whether Redis answers at startup, then retry missed removals until the
/// store is dropped.
async fn repair(redis: RedisCache, unsynced: Weak<Mutex<HashSet<Unsynced>>>) {
    // A failure is logged by the cache itself, and the server serves from the
    // database until Redis answers.
    if redis.ping().await.is_ok() {
        tracing::info!("Redis answers: sessions and profiles are cached");
    }
    let mut every = tokio::time::interval(REPAIR_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(unsynced) = unsynced.upgrade() else {
            return;
        };
        let pending: Vec<Unsynced> = {
            let set = unsynced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            set.iter().copied().collect()
        };
        for key in pending {
            let result = match key {
                Unsynced::Session(id) => CachedStore::remove_session(&redis, id).await,
                Unsynced::Profile(user_id) => redis.delete(&profile_key(user_id)).await,
            };
            if result.is_err() {
                // Still failing: leave the rest for the next round rather than
                // spend a timeout on each.
                break;
            }
            unsynced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        }
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.create_user(user).await?;
        // After the write: a read before it could only have cached the old
        // account, and this removes it. (A read racing the write can still put
        // the old one back; it lives at most PROFILE_TTL.)
        self.invalidate_profile(user.id).await;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_name(username).await
    }

    async fn user_by_device(&self, device_hash: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_device(device_hash).await
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        // Accounts carry password and device hashes, which are not copied
        // into Redis; `profile` is the cached view.
        self.inner.user_by_id(id).await
    }

    async fn profile(&self, id: Uuid) -> Result<Option<Profile>, StoreError> {
        let key = profile_key(id);
        if !self.is_unsynced(Unsynced::Profile(id)) {
            if let Ok(Some(json)) = self.redis.get(&key).await {
                // An entry that does not parse (say, from another version) is
                // ignored and overwritten below.
                if let Ok(profile) = serde_json::from_str::<Profile>(&json) {
                    if profile.id == id {
                        return Ok(Some(profile));
                    }
                }
            }
        }
        let profile = self.inner.profile(id).await?;
        if let Some(profile) = &profile {
            if !self.is_unsynced(Unsynced::Profile(id)) {
                if let Ok(json) = serde_json::to_string(profile) {
                    let _ = self.redis.set(&key, &json, PROFILE_TTL).await;
                }
            }
        }
        Ok(profile)
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        // The database first: a session exists once it is recorded there.
        self.inner.create_session(session, refresh_hash).await?;
        if let Some((value, ttl)) = session_entry(session) {
            // The id is new and its token not yet handed out, so nothing can
            // have revoked it: a plain SET. If it fails, reads miss and ask
            // the database.
            let _ = self.redis.set(&session_key(session.id), &value, ttl).await;
        }
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        if !self.is_unsynced(Unsynced::Session(id)) {
            if let Ok(Some(json)) = self.redis.get(&session_key(id)).await {
                if let Ok(cached) = serde_json::from_str::<CachedSession>(&json) {
                    return Ok(Some(Session {
                        id,
                        user_id: cached.user_id,
                        created_at_ms: cached.created_at_ms,
                        expires_at_ms: cached.expires_at_ms,
                        revoked: false,
                    }));
                }
            }
        }
        let session = self.inner.session(id).await?;
        if let Some(session) = &session {
            if !self.is_unsynced(Unsynced::Session(id)) {
                self.refill_session(session).await;
            }
        }
        Ok(session)
    }

    async fn revoke_session(&self, id: Uuid) -> Result<bool, StoreError> {
        // Redis first: once the database says revoked, no key says live and
        // none can be refilled. If Redis cannot be told, this shard stops
        // trusting the key and keeps trying to remove it.
        if Self::remove_session(&self.redis, id).await.is_err() {
            self.remember_unsynced(Unsynced::Session(id));
        }
        self.inner.revoke_session(id).await
    }

    async fn rotate_refresh(
        &self,
        session_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<Rotation, StoreError> {
        // Refresh hashes live only in the database, where rotation is atomic.
        self.inner
            .rotate_refresh(session_id, old_hash, new_hash)
            .await
    }

    async fn next_epoch(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.inner.next_epoch(user_id).await
    }

    async fn worlds(&self) -> Result<Vec<WorldDef>, StoreError> {
        self.inner.worlds().await
    }

    async fn put_world(&self, world: &WorldDef) -> Result<(), StoreError> {
        self.inner.put_world(world).await
    }

    async fn areas(&self, world_id: Uuid) -> Result<Vec<Area>, StoreError> {
        self.inner.areas(world_id).await
    }

    async fn put_area(&self, area: &Area) -> Result<(), StoreError> {
        self.inner.put_area(area).await
    }

    async fn delete_area(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_area(id).await
    }

    async fn world_objects(&self, world_id: Uuid) -> Result<Vec<WorldObject>, StoreError> {
        self.inner.world_objects(world_id).await
    }

    async fn put_world_object(&self, object: &WorldObject) -> Result<(), StoreError> {
        self.inner.put_world_object(object).await
    }

    async fn delete_world_object(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_world_object(id).await
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        self.inner.teams().await
    }

    async fn team_scores(&self, world_id: Uuid) -> Result<Vec<TeamScore>, StoreError> {
        self.inner.team_scores(world_id).await
    }

    async fn reset_scores(&self, world_id: Uuid) -> Result<(), StoreError> {
        self.inner.reset_scores(world_id).await
    }

    async fn capture_flag(&self, capture: &Capture) -> Result<CaptureOutcome, StoreError> {
        self.inner.capture_flag(capture).await
    }

    async fn unannounced_captures(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<CommittedCapture>, StoreError> {
        self.inner.unannounced_captures(before_ms, limit).await
    }

    async fn mark_announced(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        self.inner.mark_announced(ids).await
    }

    async fn captures(
        &self,
        world_id: Uuid,
        since_ms: i64,
    ) -> Result<Vec<CommittedCapture>, StoreError> {
        self.inner.captures(world_id, since_ms).await
    }

    async fn position(
        &self,
        user_id: Uuid,
        world_id: Uuid,
    ) -> Result<Option<StoredPosition>, StoreError> {
        self.inner.position(user_id, world_id).await
    }

    async fn save_positions(&self, batch: &[StoredPosition]) -> Result<u64, StoreError> {
        self.inner.save_positions(batch).await
    }

    async fn nearby(
        &self,
        world_id: Uuid,
        center: LonLat,
        radius_m: f64,
        limit: usize,
    ) -> Result<Nearby, StoreError> {
        self.inner.nearby(world_id, center, radius_m, limit).await
    }
}
