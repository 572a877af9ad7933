//! The embedded store: one SQLite file under `DATA_DIR`, used when no
//! `DATABASE_URL` is given, so a fresh machine runs the game with no services.
//!
//! Encoding choices, kept the same in every table:
//! * ids are UUIDs as hyphenated lower-case TEXT, which sorts UUIDv7 keys by
//!   creation time, reads well in the `sqlite3` shell, and travels inside the
//!   JSON array that carries a position batch;
//! * `u64` counters are INTEGER (`i64`), timestamps INTEGER Unix milliseconds;
//! * area geometry is GeoJSON text, properties JSON text.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use uuid::fmt::Hyphenated;
use uuid::Uuid;

use super::sql::{corrupt, db_error, migrate_error};
use super::*;

/// The SQLite schema, embedded in the binary so that `meridian` migrates its own
/// database with no files beside it. `meridian migrate revert|info` use it with
/// [`SqliteStore::pool`].
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The select list and table of a query for [`committed_capture`] rows.
macro_rules! capture_columns {
    () => {
        "SELECT id, world_id, object_id, user_id, team, name, version, score, captured_at_ms \
         FROM flag_captures"
    };
}

/// Connection settings of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most open connections. WAL lets readers run beside the one writer, so a
    /// few connections are plenty; writers queue on SQLite's lock.
    pub max_connections: u32,
    /// How long a statement waits for another connection's write lock before it
    /// fails with `StoreError::Unavailable`.
    pub busy_timeout: Duration,
    /// How long a call waits for a free connection from the pool.
    pub acquire_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// SQLite implementation of [`Store`]. Cheap to share: it is a connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Connections to the one database file.
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its directory if needed) the database at
    /// `path` with default [`SqliteOptions`]. Does not migrate: call
    /// [`Store::migrate`].
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the directory or file cannot be created or opened.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Open the database at `path` with explicit connection settings.
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the directory or file cannot be created or opened.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL lets the ops endpoints and logins read while the flusher writes;
            // NORMAL sync is durable across process crashes and only risks the
            // last commits on power loss, which write-behind accepts anyway.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // One connection stays open so the WAL file is not checkpointed and
            // deleted between calls.
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self { pool })
    }

    /// The connection pool, for `meridian migrate revert|info` with [`MIGRATOR`].
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Close every connection, waiting for calls in progress. Later calls fail
    /// with `StoreError::Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that takes the database's write lock at its start
    /// (`BEGIN IMMEDIATE`), waiting up to the busy timeout for it. What it
    /// reads then stays true until it commits, since no one else can write;
    /// a deferred transaction that reads before it writes would instead fail
    /// at its first write, without waiting, if another connection committed
    /// in between.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)
    }

    async fn load_user(&self, column: &str, key: &str) -> Result<Option<User>, StoreError> {
        // `column` is one of three fixed names chosen by the callers below, never input.
        let sql = format!(
            "SELECT u.id, u.username, u.display_name, u.password_hash, u.device_hash, u.created_at_ms, \
                    (SELECT group_concat(r.name, ',') FROM user_roles ur \
                       JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id) AS roles, \
                    p.team \
             FROM users u LEFT JOIN player_profiles p ON p.user_id = u.id \
             WHERE u.{column} = ?1"
        );
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            let roles: Option<String> = row.try_get("roles").map_err(db_error)?;
            let mut roles = roles
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| Role::parse(s).ok_or_else(|| corrupt("users", format!("role {s:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            // A fixed order, so that the same roles compare equal whatever the
            // database's aggregation order.
            roles.sort_by_key(|r| *r as u8);
            Ok(User {
                id: uuid(&row, "id")?,
                username: row.try_get("username").map_err(db_error)?,
                display_name: row.try_get("display_name").map_err(db_error)?,
                password_hash: row.try_get("password_hash").map_err(db_error)?,
                device_hash: row.try_get("device_hash").map_err(db_error)?,
                roles,
                team: row.try_get("team").map_err(db_error)?,
                created_at_ms: row.try_get("created_at_ms").map_err(db_error)?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| migrate_error("sqlite", e))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        // The account, its roles and its profile appear together or not at
        // all. The transaction holds the write lock from its start, so the
        // team counts it assigns by cannot change before it commits: of
        // concurrent sign-ups, each sees the ones before it.
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, device_hash, created_at_ms, updated_at_ms, display_name) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        )
        .bind(user.id.hyphenated())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(&user.device_hash)
        .bind(user.created_at_ms)
        .bind(&user.display_name)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let roles = std::iter::once(Role::Player).chain(user.roles.iter().copied());
        for role in roles {
            sqlx::query(
                "INSERT OR IGNORE INTO user_roles (user_id, role_id) \
                 SELECT ?1, id FROM roles WHERE name = ?2",
            )
            .bind(user.id.hyphenated())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        // Epoch 0, so that the first `next_epoch` still takes 1. An unknown
        // chosen team fails the foreign key: a `Conflict`, and no account.
        sqlx::query(
            "INSERT INTO player_profiles (user_id, epoch, team, created_at_ms, updated_at_ms) \
             VALUES (?1, 0, coalesce(?2, \
                 (SELECT t.name FROM teams t \
                  ORDER BY (SELECT count(*) FROM player_profiles p WHERE p.team = t.name), \
                           t.position \
                  LIMIT 1)), \
                 ?3, ?3)",
        )
        .bind(user.id.hyphenated())
        .bind(&user.team)
        .bind(user.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.load_user("username", username).await
    }

    async fn user_by_device(&self, device_hash: &str) -> Result<Option<User>, StoreError> {
        self.load_user("device_hash", device_hash).await
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.load_user("id", &id.hyphenated().to_string()).await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at_ms, expires_at_ms, revoked, refresh_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(session.id.hyphenated())
        .bind(session.user_id.hyphenated())
        .bind(session.created_at_ms)
        .bind(session.expires_at_ms)
        .bind(session.revoked)
        .bind(refresh_hash)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn rotate_refresh(
        &self,
        session_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<Rotation, StoreError> {
        let now = now_ms();
        // The condition on the current hash makes this the only place a refresh
        // token is spent: SQLite runs one writer at a time, so of two calls with
        // the same hash the second finds it replaced and changes nothing.
        let user_id: Option<Hyphenated> = sqlx::query_scalar(
            "UPDATE sessions SET previous_refresh_hash = refresh_hash, refresh_hash = ?3 \
             WHERE id = ?1 AND refresh_hash = ?2 AND revoked = 0 AND expires_at_ms > ?4 \
             RETURNING user_id",
        )
        .bind(session_id.hyphenated())
        .bind(old_hash)
        .bind(new_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        if let Some(user_id) = user_id {
            return Ok(Rotation::Rotated {
                user_id: user_id.into_uuid(),
            });
        }
        let reused: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sessions \
             WHERE id = ?1 AND previous_refresh_hash = ?2 AND revoked = 0 AND expires_at_ms > ?3",
        )
        .bind(session_id.hyphenated())
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(if reused.is_some() {
            Rotation::Reused
        } else {
            Rotation::Refused
        })
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, created_at_ms, expires_at_ms, revoked FROM sessions WHERE id = ?1",
        )
        .bind(id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(Session {
                id: uuid(&row, "id")?,
                user_id: uuid(&row, "user_id")?,
                created_at_ms: row.try_get("created_at_ms").map_err(db_error)?,
                expires_at_ms: row.try_get("expires_at_ms").map_err(db_error)?,
                revoked: row.try_get("revoked").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn revoke_session(&self, id: Uuid) -> Result<bool, StoreError> {
        // An expired session is still marked revoked (so it reads as dead either
        // way), but only a live one counts as "revoked by this call".
        let expires_at_ms: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET revoked = 1 WHERE id = ?1 AND revoked = 0 RETURNING expires_at_ms",
        )
        .bind(id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(expires_at_ms.is_some_and(|t| t > now_ms()))
    }

    async fn next_epoch(&self, user_id: Uuid) -> Result<u64, StoreError> {
        // One statement, so two shards taking over the same player at once get
        // different epochs: SQLite serializes writers.
        let now = now_ms();
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO player_profiles (user_id, epoch, created_at_ms, updated_at_ms) \
             VALUES (?1, 1, ?2, ?2) \
             ON CONFLICT (user_id) DO UPDATE SET \
                 epoch = player_profiles.epoch + 1, updated_at_ms = excluded.updated_at_ms \
             RETURNING epoch",
        )
        .bind(user_id.hyphenated())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        u64::try_from(epoch).map_err(|_| corrupt("player_profiles", format!("epoch {epoch}")))
    }

    async fn worlds(&self) -> Result<Vec<WorldDef>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, min_lon, min_lat, max_lon, max_lat, center_lon, center_lat, \
                    movement_mode, max_speed_mps \
             FROM worlds ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let mode: String = row.try_get("movement_mode").map_err(db_error)?;
                Ok(WorldDef {
                    id: uuid(row, "id")?,
                    name: row.try_get("name").map_err(db_error)?,
                    bounds: Bounds {
                        min_lon: row.try_get("min_lon").map_err(db_error)?,
                        min_lat: row.try_get("min_lat").map_err(db_error)?,
                        max_lon: row.try_get("max_lon").map_err(db_error)?,
                        max_lat: row.try_get("max_lat").map_err(db_error)?,
                    },
                    center: LonLat {
                        lon: row.try_get("center_lon").map_err(db_error)?,
                        lat: row.try_get("center_lat").map_err(db_error)?,
                    },
                    movement_mode: MovementMode::parse(&mode)
                        .ok_or_else(|| corrupt("worlds", format!("movement_mode {mode:?}")))?,
                    max_speed_mps: row.try_get("max_speed_mps").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn put_world(&self, world: &WorldDef) -> Result<(), StoreError> {
        let b = world.bounds;
        sqlx::query(
            "INSERT INTO worlds (id, name, min_lon, min_lat, max_lon, max_lat, center_lon, \
                                 center_lat, movement_mode, max_speed_mps, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) \
             ON CONFLICT (id) DO UPDATE SET \
                 name = excluded.name, min_lon = excluded.min_lon, min_lat = excluded.min_lat, \
                 max_lon = excluded.max_lon, max_lat = excluded.max_lat, \
                 center_lon = excluded.center_lon, center_lat = excluded.center_lat, \
                 movement_mode = excluded.movement_mode, max_speed_mps = excluded.max_speed_mps, \
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(world.id.hyphenated())
        .bind(&world.name)
        .bind(b.min_lon)
        .bind(b.min_lat)
        .bind(b.max_lon)
        .bind(b.max_lat)
        .bind(world.center.lon)
        .bind(world.center.lat)
        .bind(world.movement_mode.as_str())
        .bind(world.max_speed_mps)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn areas(&self, world_id: Uuid) -> Result<Vec<Area>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, world_id, name, kind, geometry, properties FROM areas \
             WHERE world_id = ?1 ORDER BY id",
        )
        .bind(world_id.hyphenated())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(db_error)?;
                let geometry: String = row.try_get("geometry").map_err(db_error)?;
                let properties: String = row.try_get("properties").map_err(db_error)?;
                Ok(Area {
                    id: uuid(row, "id")?,
                    world_id: uuid(row, "world_id")?,
                    name: row.try_get("name").map_err(db_error)?,
                    kind: AreaKind::parse(&kind)
                        .ok_or_else(|| corrupt("areas", format!("kind {kind:?}")))?,
                    geometry: geometry_from_geojson(&geometry)?,
                    properties: json_from_text("areas", &properties)?,
                })
            })
            .collect()
    }

    async fn put_area(&self, area: &Area) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO areas (id, world_id, name, kind, geometry, properties, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
             ON CONFLICT (id) DO UPDATE SET \
                 world_id = excluded.world_id, name = excluded.name, kind = excluded.kind, \
                 geometry = excluded.geometry, properties = excluded.properties, \
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(area.id.hyphenated())
        .bind(area.world_id.hyphenated())
        .bind(&area.name)
        .bind(area.kind.as_str())
        .bind(geometry_to_geojson(&area.geometry))
        .bind(area.properties.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn delete_area(&self, id: Uuid) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM areas WHERE id = ?1")
            .bind(id.hyphenated())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(db_error)
    }

    async fn world_objects(&self, world_id: Uuid) -> Result<Vec<WorldObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, world_id, kind, name, lon, lat, properties, owner_team, version \
             FROM world_objects WHERE world_id = ?1 ORDER BY id",
        )
        .bind(world_id.hyphenated())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let properties: String = row.try_get("properties").map_err(db_error)?;
                Ok(WorldObject {
                    id: uuid(row, "id")?,
                    world_id: uuid(row, "world_id")?,
                    kind: row.try_get("kind").map_err(db_error)?,
                    name: row.try_get("name").map_err(db_error)?,
                    position: LonLat {
                        lon: row.try_get("lon").map_err(db_error)?,
                        lat: row.try_get("lat").map_err(db_error)?,
                    },
                    properties: json_from_text("world_objects", &properties)?,
                    owner: row.try_get("owner_team").map_err(db_error)?,
                    version: row.try_get("version").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn put_world_object(&self, object: &WorldObject) -> Result<(), StoreError> {
        // The given version is ignored: the store counts changes, so that a
        // capture won against the old version of an edited flag is stale.
        sqlx::query(
            "INSERT INTO world_objects (id, world_id, kind, name, lon, lat, properties, \
                                        owner_team, version, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?9) \
             ON CONFLICT (id) DO UPDATE SET \
                 world_id = excluded.world_id, kind = excluded.kind, name = excluded.name, \
                 lon = excluded.lon, lat = excluded.lat, properties = excluded.properties, \
                 owner_team = excluded.owner_team, version = world_objects.version + 1, \
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(object.id.hyphenated())
        .bind(object.world_id.hyphenated())
        .bind(&object.kind)
        .bind(&object.name)
        .bind(object.position.lon)
        .bind(object.position.lat)
        .bind(object.properties.to_string())
        .bind(&object.owner)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn delete_world_object(&self, id: Uuid) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM world_objects WHERE id = ?1")
            .bind(id.hyphenated())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(db_error)
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query("SELECT name, colour FROM teams ORDER BY position")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Team {
                    name: row.try_get("name").map_err(db_error)?,
                    colour: row.try_get("colour").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn team_scores(&self, world_id: Uuid) -> Result<Vec<TeamScore>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.name, coalesce(s.score, 0) AS score FROM teams t \
             LEFT JOIN team_scores s ON s.team = t.name AND s.world_id = ?1 \
             ORDER BY t.position",
        )
        .bind(world_id.hyphenated())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(TeamScore {
                    team: row.try_get("name").map_err(db_error)?,
                    score: row.try_get("score").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn reset_scores(&self, world_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE team_scores SET score = 0, updated_at_ms = ?2 \
             WHERE world_id = ?1 AND score <> 0",
        )
        .bind(world_id.hyphenated())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn capture_flag(&self, capture: &Capture) -> Result<CaptureOutcome, StoreError> {
        // One transaction holding the write lock from its start (as
        // `rotate_refresh` relies on SQLite's single writer): of several
        // captures won against the same version, the first to get the lock
        // moves the flag on, and every later one finds the version changed.
        let mut tx = self.write().await?;
        let now = now_ms();
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE world_objects SET owner_team = ?1, version = version + 1, updated_at_ms = ?2 \
             WHERE id = ?3 AND world_id = ?4 AND kind = 'flag' AND version = ?5 \
             RETURNING version",
        )
        .bind(&capture.team)
        .bind(now)
        .bind(capture.flag_id.hyphenated())
        .bind(capture.world_id.hyphenated())
        .bind(capture.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(version) = version else {
            tx.rollback().await.map_err(db_error)?;
            return Ok(CaptureOutcome::Stale);
        };
        // A retried capture (same id) never counts twice, even against a flag
        // that was deleted and placed again at its old version.
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM flag_captures WHERE id = ?1")
            .bind(capture.id.hyphenated())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if known.is_some() {
            tx.rollback().await.map_err(db_error)?;
            return Ok(CaptureOutcome::Stale);
        }
        let score: i64 = sqlx::query_scalar(
            "INSERT INTO team_scores (world_id, team, score, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, 1, ?3, ?3) \
             ON CONFLICT (world_id, team) DO UPDATE SET \
                 score = team_scores.score + 1, updated_at_ms = excluded.updated_at_ms \
             RETURNING score",
        )
        .bind(capture.world_id.hyphenated())
        .bind(&capture.team)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO flag_captures (id, world_id, object_id, user_id, team, name, version, \
                                        score, captured_at_ms, announced_at_ms, \
                                        created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?10)",
        )
        .bind(capture.id.hyphenated())
        .bind(capture.world_id.hyphenated())
        .bind(capture.flag_id.hyphenated())
        .bind(capture.user_id.hyphenated())
        .bind(&capture.team)
        .bind(&capture.name)
        .bind(version)
        .bind(score)
        .bind(capture.captured_at_ms)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(CaptureOutcome::Committed { version, score })
    }

    async fn unannounced_captures(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<CommittedCapture>, StoreError> {
        let rows = sqlx::query(concat!(
            capture_columns!(),
            " WHERE announced_at_ms IS NULL AND captured_at_ms <= ?1 \
              ORDER BY captured_at_ms, id LIMIT ?2"
        ))
        .bind(before_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(committed_capture).collect()
    }

    async fn mark_announced(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // The ids travel as one JSON array, as position batches do.
        let ids = serde_json::to_string(ids)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode capture ids: {e}")))?;
        sqlx::query(
            "UPDATE flag_captures SET announced_at_ms = ?2, updated_at_ms = ?2 \
             WHERE announced_at_ms IS NULL AND id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn captures(
        &self,
        world_id: Uuid,
        since_ms: i64,
    ) -> Result<Vec<CommittedCapture>, StoreError> {
        let rows = sqlx::query(concat!(
            capture_columns!(),
            " WHERE world_id = ?1 AND captured_at_ms >= ?2 ORDER BY captured_at_ms, id"
        ))
        .bind(world_id.hyphenated())
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(committed_capture).collect()
    }

    async fn position(
        &self,
        user_id: Uuid,
        world_id: Uuid,
    ) -> Result<Option<StoredPosition>, StoreError> {
        let row = sqlx::query(
            "SELECT lon, lat, heading, epoch, seq, updated_at_ms FROM player_positions \
             WHERE user_id = ?1 AND world_id = ?2",
        )
        .bind(user_id.hyphenated())
        .bind(world_id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            let heading: f64 = row.try_get("heading").map_err(db_error)?;
            let epoch: i64 = row.try_get("epoch").map_err(db_error)?;
            let seq: i64 = row.try_get("seq").map_err(db_error)?;
            Ok(StoredPosition {
                user_id,
                world_id,
                position: LonLat {
                    lon: row.try_get("lon").map_err(db_error)?,
                    lat: row.try_get("lat").map_err(db_error)?,
                },
                // Written from an f32, so the narrowing is exact.
                heading: heading as f32,
                epoch: u64::try_from(epoch)
                    .map_err(|_| corrupt("player_positions", format!("epoch {epoch}")))?,
                seq: u64::try_from(seq)
                    .map_err(|_| corrupt("player_positions", format!("seq {seq}")))?,
                updated_at_ms: row.try_get("updated_at_ms").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn nearby(
        &self,
        world_id: Uuid,
        center: LonLat,
        radius_m: f64,
        limit: usize,
    ) -> Result<Nearby, StoreError> {
        use crate::world::geodesy::distance_m;
        // SQLite has no spatial index here: a latitude band narrows the rows,
        // and the game's own distance function decides.
        let band = (radius_m / crate::world::geodesy::EARTH_RADIUS_M).to_degrees() + 1e-6;
        let rows = sqlx::query(
            "SELECT p.user_id, u.username, p.lon, p.lat, p.updated_at_ms \
             FROM player_positions p JOIN users u ON u.id = p.user_id \
             WHERE p.world_id = ?1 AND p.lat BETWEEN ?2 AND ?3",
        )
        .bind(world_id.hyphenated())
        .bind(center.lat - band)
        .bind(center.lat + band)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut players = Vec::new();
        for row in &rows {
            let position = LonLat {
                lon: row.try_get("lon").map_err(db_error)?,
                lat: row.try_get("lat").map_err(db_error)?,
            };
            let distance_m = distance_m(center, position);
            if distance_m <= radius_m {
                players.push(NearbyPlayer {
                    user_id: uuid(row, "user_id")?,
                    username: row.try_get("username").map_err(db_error)?,
                    position,
                    updated_at_ms: row.try_get("updated_at_ms").map_err(db_error)?,
                    distance_m,
                });
            }
        }
        let mut objects: Vec<NearbyObject> = self
            .world_objects(world_id)
            .await?
            .into_iter()
            .map(|object| NearbyObject {
                distance_m: distance_m(center, object.position),
                object,
            })
            .filter(|o| o.distance_m <= radius_m)
            .collect();
        players.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        objects.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        players.truncate(limit);
        objects.truncate(limit);
        Ok(Nearby { players, objects })
    }

    async fn save_positions(&self, batch: &[StoredPosition]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        // The whole batch travels as one JSON array parameter and is written by
        // one statement: one parse, one transaction, one fsync-free WAL append,
        // however many players are online.
        let rows: Vec<_> = batch
            .iter()
            // A non-finite coordinate cannot be stored (JSON has no NaN); keeping it
            // would fail this batch and every retry after it, so it is dropped.
            .filter(|p| p.position.lon.is_finite() && p.position.lat.is_finite())
            .map(|p| {
                (
                    p.user_id,
                    p.world_id,
                    p.position.lon,
                    p.position.lat,
                    if p.heading.is_finite() {
                        f64::from(p.heading)
                    } else {
                        0.0
                    },
                    // Counters never get near 2^63; saturating keeps the order if one did.
                    i64::try_from(p.epoch).unwrap_or(i64::MAX),
                    i64::try_from(p.seq).unwrap_or(i64::MAX),
                    p.updated_at_ms,
                )
            })
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode position batch: {e}")))?;
        // Rows of accounts or worlds deleted meanwhile are skipped rather than
        // failing the batch: the player is gone, and one such row must not block
        // everyone else's positions. The WHERE clause also settles SQLite's parsing
        // ambiguity between a join's ON and the upsert's ON CONFLICT.
        let result = sqlx::query(
            "INSERT INTO player_positions \
                 (user_id, world_id, lon, lat, heading, epoch, seq, updated_at_ms) \
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, \
                    j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7 \
             FROM json_each(?1) AS j \
             WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = j.value ->> 0) \
               AND EXISTS (SELECT 1 FROM worlds w WHERE w.id = j.value ->> 1) \
             ON CONFLICT (user_id, world_id) DO UPDATE SET \
                 lon = excluded.lon, lat = excluded.lat, heading = excluded.heading, \
                 epoch = excluded.epoch, seq = excluded.seq, \
                 updated_at_ms = excluded.updated_at_ms \
             WHERE (excluded.epoch, excluded.seq) > (player_positions.epoch, player_positions.seq)",
        )
        .bind(json)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected())
    }
}

/// A `flag_captures` row decoded as what was committed. The stored version is
/// the flag's after the capture, so the one it was won against is one less. A
/// deleted account's capture (no `user_id`) names the nil id.
fn committed_capture(row: &sqlx::sqlite::SqliteRow) -> Result<CommittedCapture, StoreError> {
    let version: i64 = row.try_get("version").map_err(db_error)?;
    let user_id: Option<Hyphenated> = row.try_get("user_id").map_err(db_error)?;
    Ok(CommittedCapture {
        capture: Capture {
            id: uuid(row, "id")?,
            world_id: uuid(row, "world_id")?,
            flag_id: uuid(row, "object_id")?,
            user_id: user_id.map_or(Uuid::nil(), Hyphenated::into_uuid),
            name: row.try_get("name").map_err(db_error)?,
            team: row.try_get("team").map_err(db_error)?,
            version: version - 1,
            captured_at_ms: row.try_get("captured_at_ms").map_err(db_error)?,
        },
        version,
        score: row.try_get("score").map_err(db_error)?,
    })
}

fn uuid(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    row.try_get::<Hyphenated, _>(column)
        .map(Hyphenated::into_uuid)
        .map_err(db_error)
}

fn json_from_text(table: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("properties JSON: {e}")))
}

/// Encode an area's shape as a GeoJSON geometry object.
fn geometry_to_geojson(geometry: &geo::MultiPolygon<f64>) -> String {
    geojson::Geometry::from(geometry).to_string()
}

/// Decode an area's shape. A plain `Polygon` (as a hand-written row might hold)
/// is accepted as a one-part `MultiPolygon`.
fn geometry_from_geojson(text: &str) -> Result<geo::MultiPolygon<f64>, StoreError> {
    let geometry: geojson::Geometry = text
        .parse()
        .map_err(|e| corrupt("areas", format!("geometry GeoJSON: {e}")))?;
    match geo::Geometry::<f64>::try_from(geometry) {
        Ok(geo::Geometry::MultiPolygon(mp)) => Ok(mp),
        Ok(geo::Geometry::Polygon(p)) => Ok(geo::MultiPolygon(vec![p])),
        Ok(_) => Err(corrupt("areas", "geometry that is not a polygon".into())),
        Err(e) => Err(corrupt("areas", format!("geometry GeoJSON: {e}"))),
    }
}
