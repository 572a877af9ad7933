//! Persistence: the `Store` trait that the shard loads from and saves to, its
//! records, and the write-behind position flusher.
//!
//! All game-time spatial logic lives in Rust (the `world` module), so the store
//! only loads and saves: the embedded SQLite implementation and the PostGIS one
//! answer the same calls and pass the same contract tests. With Redis,
//! `CachedStore` wraps either of them and answers session and profile reads
//! from Redis.

pub mod cached;
pub mod captures;
pub mod database;
pub mod flusher;
pub mod gameplay;
pub mod pending;
pub mod postgres;
pub mod redis_cache;
mod sql;
pub mod sqlite;

use async_trait::async_trait;
use meridian_protocol::{AreaKind, LonLat};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use cached::CachedStore;
pub use captures::CaptureWriter;
pub use database::Database;
pub use flusher::Flusher;
pub use gameplay::{Capture, CaptureOutcome, CommittedCapture, Team, TeamScore};
pub use pending::PendingPositions;
pub use postgres::PgStore;
pub use redis_cache::{CacheError, RedisCache};
pub use sqlite::SqliteStore;

/// Why a store call failed. Callers map these to client-facing errors; the text
/// of database errors is logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a username).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database cannot be reached or refused the operation; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be interpreted (a bug or a hand-edited row).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Migrations failed or the schema is from a newer version.
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A player's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Plays the game.
    Player,
    /// Operates the game (admin API, dashboard).
    Admin,
}

impl Role {
    /// The stable name stored in `roles.name`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::Admin => "admin",
        }
    }

    /// Parse the stable name stored in `roles.name`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "player" => Some(Self::Player),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// UUIDv7 key.
    pub id: Uuid,
    /// Unique login name (guests get a generated one).
    pub username: String,
    /// The name other players see, if the account chose one (else the username).
    pub display_name: Option<String>,
    /// Argon2id PHC string; `None` for a guest account.
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of a guest account's device secret; `None` for named accounts.
    pub device_hash: Option<String>,
    /// Roles held.
    pub roles: Vec<Role>,
    /// The team played for. `create_user` given `None` assigns the team with
    /// the fewest members (the first in display order on a tie).
    pub team: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// What other players and the token signer need of an account: no secrets, so
/// it may be cached outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The account.
    pub id: Uuid,
    /// Its username.
    pub username: String,
    /// The name it chose to be shown by, if any.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its team; `None` only for an account no team was ever assigned to.
    #[serde(default)]
    pub team: Option<String>,
}

impl Profile {
    /// The name other players see: the chosen one, or the username.
    #[must_use]
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.username)
    }
}

impl From<User> for Profile {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            username: user.username,
            display_name: user.display_name,
            roles: user.roles,
            team: user.team,
        }
    }
}

/// A login session: what an access token names, revocable by logout. Its
/// refresh-token hash is not part of it: it is only ever compared inside the
/// store, by [`Store::rotate_refresh`].
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// UUIDv7 key, the `sid` claim of access tokens.
    pub id: Uuid,
    /// The account.
    pub user_id: Uuid,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds after which the session is dead.
    pub expires_at_ms: i64,
    /// Set by logout.
    pub revoked: bool,
}

/// What [`Store::rotate_refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The presented hash was the session's current one, and the new hash has
    /// replaced it. No other call presenting the same hash can get this.
    Rotated {
        /// The session's account.
        user_id: Uuid,
    },
    /// The presented hash is the one the last rotation replaced: a refresh
    /// token that was already used is being used again, so a copy of it is in
    /// someone else's hands. Nothing was changed; the caller revokes.
    Reused,
    /// Neither: no such session, not live (revoked or expired), or a secret it
    /// never had. Nothing was changed.
    Refused,
}

/// How a world judges movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementMode {
    /// Keyboard/joystick input: the speed limit is strict.
    Input,
    /// Real GPS fixes: reported accuracy widens the tolerance and speed alone never kicks.
    Gps,
}

impl MovementMode {
    /// The stable name stored in `worlds.movement_mode`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Gps => "gps",
        }
    }

    /// Parse the stable name stored in `worlds.movement_mode`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "input" => Some(Self::Input),
            "gps" => Some(Self::Gps),
            _ => None,
        }
    }
}

/// A rectangle of longitude/latitude, inclusive. `min_lon > max_lon` means the
/// box crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// West edge.
    pub min_lon: f64,
    /// South edge.
    pub min_lat: f64,
    /// East edge.
    pub max_lon: f64,
    /// North edge.
    pub max_lat: f64,
}

impl Bounds {
    /// The whole Earth.
    pub const WORLD: Bounds = Bounds {
        min_lon: -180.0,
        min_lat: -90.0,
        max_lon: 180.0,
        max_lat: 90.0,
    };

    /// Whether a (normalized) point lies inside.
    #[must_use]
    pub fn contains(&self, p: LonLat) -> bool {
        let lat_ok = p.lat >= self.min_lat && p.lat <= self.max_lat;
        let lon_ok = if self.min_lon <= self.max_lon {
            p.lon >= self.min_lon && p.lon <= self.max_lon
        } else {
            p.lon >= self.min_lon || p.lon <= self.max_lon
        };
        lat_ok && lon_ok
    }
}

/// A world: the map a set of players share.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldDef {
    /// UUIDv7 key.
    pub id: Uuid,
    /// Unique name clients join by (`Hello::world`).
    pub name: String,
    /// Players must stay inside.
    pub bounds: Bounds,
    /// Where the map is centred, and where players spawn if it has no spawn area.
    pub center: LonLat,
    /// How movement is judged.
    pub movement_mode: MovementMode,
    /// Speed limit in m/s; the shard's `MAX_SPEED_MPS` when `None`.
    pub max_speed_mps: Option<f64>,
}

/// A polygon area of a world.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    /// UUIDv7 key.
    pub id: Uuid,
    /// The world it belongs to.
    pub world_id: Uuid,
    /// Display name, sent in `AreaEvent`.
    pub name: String,
    /// What it does.
    pub kind: AreaKind,
    /// Its shape, SRID 4326 lon/lat.
    pub geometry: geo::MultiPolygon<f64>,
    /// Kind-specific settings, e.g. `{"max_speed_mps": 2.0}` for `speed_limit`.
    pub properties: serde_json::Value,
}

/// A placed object of a world (flags and others).
#[derive(Debug, Clone, PartialEq)]
pub struct WorldObject {
    /// UUIDv7 key.
    pub id: Uuid,
    /// The world it belongs to.
    pub world_id: Uuid,
    /// Its type, e.g. `flag`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Where it stands.
    pub position: LonLat,
    /// Type-specific settings, e.g. `{"capture_radius_m": 20}`.
    pub properties: serde_json::Value,
    /// The team holding it (flags), if any.
    pub owner: Option<String>,
    /// Increases with every change (a capture, an edit), so a capture can be a
    /// conditional update on the version it was won against. `put_world_object`
    /// ignores the value given: it writes 0 for a new object and the stored
    /// version plus one for a replaced one.
    pub version: i64,
}

/// A player's last known position in a world, ordered by `(epoch, seq)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredPosition {
    /// The account.
    pub user_id: Uuid,
    /// The world.
    pub world_id: Uuid,
    /// Where.
    pub position: LonLat,
    /// Facing, degrees clockwise from north.
    pub heading: f32,
    /// The fencing number taken at login; a newer epoch always wins.
    pub epoch: u64,
    /// Increases with every accepted move within an epoch.
    pub seq: u64,
    /// Unix milliseconds when the shard accepted it.
    pub updated_at_ms: i64,
}

/// The shard's persistence. Implementations are cheap to clone behind an `Arc`
/// and safe to call from many tasks; none of it is ever called from the tick.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply pending migrations.
    ///
    /// # Errors
    /// `StoreError::Migration` if a migration fails or was modified after it ran.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Check the database answers (for readiness).
    ///
    /// # Errors
    /// `StoreError::Unavailable` if it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Create an account with the `player` role (plus any in `user.roles`).
    ///
    /// # Errors
    /// `StoreError::Conflict` if the username or device is taken.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;

    /// Find an account by username.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// Find a guest account by the hash of its device secret.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn user_by_device(&self, device_hash: &str) -> Result<Option<User>, StoreError>;

    /// Find an account by id.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError>;

    /// An account's profile (name and roles, no secrets). The same as
    /// `user_by_id`, which is what databases answer it with; a cache in front
    /// of the store answers it without the database.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn profile(&self, id: Uuid) -> Result<Option<Profile>, StoreError> {
        Ok(self.user_by_id(id).await?.map(Profile::from))
    }

    /// Record a new session with the hash (SHA-256, hex) of its first refresh
    /// secret.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn create_session(&self, session: &Session, refresh_hash: &str)
        -> Result<(), StoreError>;

    /// Replace a live session's refresh hash `old_hash` by `new_hash`, in one
    /// conditional write, so that of several calls presenting the same hash at
    /// once exactly one gets `Rotated`. Otherwise say whether `old_hash` is the
    /// one the last rotation replaced (`Reused`) or not (`Refused`).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn rotate_refresh(
        &self,
        session_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<Rotation, StoreError>;

    /// Find a session by id.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError>;

    /// Revoke a session; returns whether it existed and was live.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn revoke_session(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Atomically take the next fencing epoch for an account (1, 2, 3, ...).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn next_epoch(&self, user_id: Uuid) -> Result<u64, StoreError>;

    /// Every world.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn worlds(&self) -> Result<Vec<WorldDef>, StoreError>;

    /// Create or replace a world (by id).
    ///
    /// # Errors
    /// `StoreError::Conflict` if another world has the name.
    async fn put_world(&self, world: &WorldDef) -> Result<(), StoreError>;

    /// Every area of a world.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn areas(&self, world_id: Uuid) -> Result<Vec<Area>, StoreError>;

    /// Create or replace an area (by id).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn put_area(&self, area: &Area) -> Result<(), StoreError>;

    /// Delete an area; returns whether it existed.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn delete_area(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Every placed object of a world.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn world_objects(&self, world_id: Uuid) -> Result<Vec<WorldObject>, StoreError>;

    /// Create or replace a placed object (by id).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn put_world_object(&self, object: &WorldObject) -> Result<(), StoreError>;

    /// Delete a placed object; returns whether it existed. Its captures stay
    /// in the history.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn delete_world_object(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Every team, in display order.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn teams(&self) -> Result<Vec<Team>, StoreError>;

    /// Every team's score in a world, in display order (0 before any capture).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn team_scores(&self, world_id: Uuid) -> Result<Vec<TeamScore>, StoreError>;

    /// Set every team's score in a world to 0. The capture history stays.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn reset_scores(&self, world_id: Uuid) -> Result<(), StoreError>;

    /// Commit a capture in one transaction: the flag's owner and version are
    /// updated only if it is still at `capture.version`, the capture joins the
    /// history (not yet announced), and the team's score goes up by one. A
    /// capture whose id is already in the history is `Stale` too, so a retry
    /// never counts twice.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure; nothing was written then.
    async fn capture_flag(&self, capture: &Capture) -> Result<CaptureOutcome, StoreError>;

    /// Committed captures not yet marked announced, captured at or before
    /// `before_ms`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn unannounced_captures(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<CommittedCapture>, StoreError>;

    /// Mark captures announced (unknown ids are ignored).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn mark_announced(&self, ids: &[Uuid]) -> Result<(), StoreError>;

    /// A world's captures at or after `since_ms`, oldest first.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn captures(
        &self,
        world_id: Uuid,
        since_ms: i64,
    ) -> Result<Vec<CommittedCapture>, StoreError>;

    /// A player's last stored position in a world.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn position(
        &self,
        user_id: Uuid,
        world_id: Uuid,
    ) -> Result<Option<StoredPosition>, StoreError>;

    /// Write a batch of positions in one statement, each applied only if its
    /// `(epoch, seq)` is newer than the stored one. Returns how many rows changed.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure; nothing was written then.
    async fn save_positions(&self, batch: &[StoredPosition]) -> Result<u64, StoreError>;

    /// The stored player positions and the objects of a world within
    /// `radius_m` great-circle metres of `center`, nearest first, at most
    /// `limit` of each: the operators' spatial query (PostGIS answers it with
    /// `ST_DWithin` on geography; SQLite by filtering in Rust).
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    async fn nearby(
        &self,
        world_id: Uuid,
        center: LonLat,
        radius_m: f64,
        limit: usize,
    ) -> Result<Nearby, StoreError>;
}

/// What `Store::nearby` finds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nearby {
    /// Stored players' positions, nearest first.
    pub players: Vec<NearbyPlayer>,
    /// Placed objects, nearest first.
    pub objects: Vec<NearbyObject>,
}

/// A player's stored position, as `Store::nearby` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyPlayer {
    /// The account.
    pub user_id: Uuid,
    /// Its username.
    pub username: String,
    /// Where it was last flushed.
    pub position: LonLat,
    /// When, Unix milliseconds.
    pub updated_at_ms: i64,
    /// Great-circle metres from the query's centre.
    pub distance_m: f64,
}

/// A placed object, as `Store::nearby` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyObject {
    /// The object.
    pub object: WorldObject,
    /// Great-circle metres from the query's centre.
    pub distance_m: f64,
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
