//! The production store: PostgreSQL with PostGIS, selected by `DATABASE_URL`.
//!
//! Encoding choices:
//! * ids are native `uuid`, counters `bigint`, timestamps `timestamptz`
//!   converted to and from Unix milliseconds in SQL, so no date crate is needed;
//! * geometry is SRID 4326: points are built with `ST_MakePoint` from the two
//!   `f64`s (exact), area shapes travel as WKB (exact, unlike GeoJSON text);
//! * properties are `jsonb`.
//!
//! Positions, the only hot write, go in one `INSERT … SELECT FROM UNNEST(…)`
//! per flush with `synchronous_commit = off` for that transaction alone.

use std::time::Duration;

use async_trait::async_trait;
use geozero::wkb;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::sql::{corrupt, db_error, migrate_error};
use super::*;
use crate::config::DbPool;

/// The PostgreSQL schema: the same folder `sqlx migrate` reads, embedded in
/// the binary (the `sqlite/` folder beside the files is not part of it).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How many months of `flag_captures` partitions exist ahead of the current one.
pub const CAPTURE_PARTITIONS_AHEAD: u32 = 3;

/// A timestamp column as Unix milliseconds.
macro_rules! ms {
    ($column:literal) => {
        concat!("round(extract(epoch FROM ", $column, ") * 1000)::int8")
    };
}

/// The select list and table of a query for [`committed_capture`] rows.
macro_rules! capture_columns {
    () => {
        concat!(
            "SELECT id, world_id, object_id, user_id, team, name, version, score, ",
            ms!("captured_at"),
            " AS captured_at_ms FROM flag_captures"
        )
    };
}

/// PostgreSQL + PostGIS implementation of [`Store`]. Cheap to share: it is a
/// connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `url` with the pool settings. Does not migrate: call
    /// [`Store::migrate`].
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the URL is malformed or the database
    /// cannot be reached.
    pub async fn connect(url: &str, settings: DbPool) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid DATABASE_URL: {e}")))?;
        let options = options.application_name("meridian");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A connection broken by a database restart is found and replaced
            // before a call uses it, not by the call failing.
            .test_before_acquire(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Self { pool })
    }

    /// The connection pool, for `meridian migrate` and tests.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Close every connection, waiting for calls in progress.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Create the monthly `flag_captures` partitions from the current month to
    /// `months_ahead` months after it, where missing, so that a capture never
    /// lands in the default partition. Returns how many were created.
    ///
    /// # Errors
    /// `StoreError::Unavailable` on database failure.
    pub async fn create_capture_partitions(&self, months_ahead: u32) -> Result<u32, StoreError> {
        let mut created = 0;
        for month in 0..=months_ahead {
            // The name and bounds are computed by PostgreSQL from its own clock,
            // so shards with skewed clocks agree on them.
            let row = sqlx::query(
                "SELECT to_char(m, 'YYYYMM') AS suffix, m::date::text AS from_day, \
                        (m + interval '1 month')::date::text AS to_day \
                 FROM date_trunc('month', now() + make_interval(months => $1)) AS m",
            )
            .bind(month as i32)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
            let suffix: String = row.try_get("suffix").map_err(db_error)?;
            let from: String = row.try_get("from_day").map_err(db_error)?;
            let to: String = row.try_get("to_day").map_err(db_error)?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(format!("flag_captures_{suffix}"))
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
            if exists {
                continue;
            }
            // Identifiers and bounds come from the query above (digits and
            // ISO dates), never from input. Two shards racing here: the loser
            // gets a duplicate-table error, which is fine.
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS flag_captures_{suffix} PARTITION OF flag_captures \
                 FOR VALUES FROM ('{from}') TO ('{to}')"
            );
            match sqlx::query(&ddl).execute(&self.pool).await {
                Ok(_) => created += 1,
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P07") => {}
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(created)
    }

    async fn load_user(&self, column: &str, key: Key<'_>) -> Result<Option<User>, StoreError> {
        // `column` is one of three fixed names chosen by the callers below, never input.
        let sql = format!(
            "SELECT u.id, u.username, u.display_name, u.password_hash, u.device_hash, {created}, \
                    coalesce((SELECT array_agg(r.name) FROM user_roles ur \
                              JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), \
                             '{{}}') AS roles, \
                    p.team \
             FROM users u LEFT JOIN player_profiles p ON p.user_id = u.id \
             WHERE u.{column} = $1",
            created = concat!(ms!("u.created_at"), " AS created_at_ms"),
        );
        let query = sqlx::query(&sql);
        let query = match key {
            Key::Id(id) => query.bind(id),
            Key::Text(text) => query.bind(text),
        };
        let row = query.fetch_optional(&self.pool).await.map_err(db_error)?;
        row.map(|row| {
            let names: Vec<String> = row.try_get("roles").map_err(db_error)?;
            let mut roles = names
                .iter()
                .map(|s| Role::parse(s).ok_or_else(|| corrupt("users", format!("role {s:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            // A fixed order, so that the same roles compare equal whatever the
            // database's aggregation order.
            roles.sort_by_key(|r| *r as u8);
            Ok(User {
                id: row.try_get("id").map_err(db_error)?,
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

/// The key a user is looked up by.
enum Key<'a> {
    Id(Uuid),
    Text(&'a str),
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| migrate_error("postgres", e))?;
        self.create_capture_partitions(CAPTURE_PARTITIONS_AHEAD)
            .await
            .map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        // The account, its roles and its profile appear together or not at all.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, device_hash, created_at, updated_at, display_name) \
             VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000), to_timestamp($5::float8 / 1000), $6)",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(&user.device_hash)
        .bind(user.created_at_ms)
        .bind(&user.display_name)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let roles: Vec<&str> = std::iter::once(Role::Player)
            .chain(user.roles.iter().copied())
            .map(Role::as_str)
            .collect();
        sqlx::query(
            "INSERT INTO user_roles (user_id, role_id) \
             SELECT $1, id FROM roles WHERE name = ANY($2) ON CONFLICT DO NOTHING",
        )
        .bind(user.id)
        .bind(&roles)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Epoch 0, so that the first `next_epoch` still takes 1. An unknown
        // chosen team fails the foreign key: a `Conflict`, and no account.
        // Assignment takes no lock: sign-ups committing at the same moment
        // may join the same team, and the next ones make up for it, so teams
        // never drift apart by more than the sign-ups in flight, and no
        // cluster-wide lock queues every new account behind the others.
        sqlx::query(
            "INSERT INTO player_profiles (user_id, epoch, team) \
             VALUES ($1, 0, coalesce($2, \
                 (SELECT t.name FROM teams t \
                  ORDER BY (SELECT count(*) FROM player_profiles p WHERE p.team = t.name), \
                           t.position \
                  LIMIT 1)))",
        )
        .bind(user.id)
        .bind(&user.team)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.load_user("username", Key::Text(username)).await
    }

    async fn user_by_device(&self, device_hash: &str) -> Result<Option<User>, StoreError> {
        self.load_user("device_hash", Key::Text(device_hash)).await
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.load_user("id", Key::Id(id)).await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, updated_at, expires_at, revoked, \
                                   refresh_hash) \
             VALUES ($1, $2, to_timestamp($3::float8 / 1000), to_timestamp($3::float8 / 1000), \
                     to_timestamp($4::float8 / 1000), $5, $6)",
        )
        .bind(session.id)
        .bind(session.user_id)
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
        // The condition on the current hash makes this the only place a refresh
        // token is spent: a concurrent UPDATE of the same row waits for this
        // one's row lock, then re-checks the condition (READ COMMITTED), finds
        // the hash replaced and changes nothing.
        let user_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE sessions SET previous_refresh_hash = refresh_hash, refresh_hash = $3 \
             WHERE id = $1 AND refresh_hash = $2 AND NOT revoked AND expires_at > now() \
             RETURNING user_id",
        )
        .bind(session_id)
        .bind(old_hash)
        .bind(new_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        if let Some(user_id) = user_id {
            return Ok(Rotation::Rotated { user_id });
        }
        let reused: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM sessions \
             WHERE id = $1 AND previous_refresh_hash = $2 AND NOT revoked AND expires_at > now()",
        )
        .bind(session_id)
        .bind(old_hash)
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
        let row = sqlx::query(concat!(
            "SELECT id, user_id, revoked, ",
            ms!("created_at"),
            " AS created_at_ms, ",
            ms!("expires_at"),
            " AS expires_at_ms FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(Session {
                id: row.try_get("id").map_err(db_error)?,
                user_id: row.try_get("user_id").map_err(db_error)?,
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
        let live: Option<bool> = sqlx::query_scalar(
            "UPDATE sessions SET revoked = true WHERE id = $1 AND NOT revoked \
             RETURNING expires_at > now()",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(live == Some(true))
    }

    async fn next_epoch(&self, user_id: Uuid) -> Result<u64, StoreError> {
        // One statement: the row lock serializes concurrent takeovers, so two
        // shards taking over the same player at once get different epochs.
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO player_profiles (user_id, epoch) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET epoch = player_profiles.epoch + 1 \
             RETURNING epoch",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        u64::try_from(epoch).map_err(|_| corrupt("player_profiles", format!("epoch {epoch}")))
    }

    async fn worlds(&self) -> Result<Vec<WorldDef>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, min_lon, min_lat, max_lon, max_lat, \
                    ST_X(center) AS center_lon, ST_Y(center) AS center_lat, \
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
                    id: row.try_get("id").map_err(db_error)?,
                    name: row.try_get("name").map_err(db_error)?,
                    bounds: Bounds {
                        min_lon: row.try_get("min_lon").map_err(db_error)?,
                        min_lat: row.try_get("min_lat").map_err(db_error)?,
                        max_lon: row.try_get("max_lon").map_err(db_error)?,
                        max_lat: row.try_get("max_lat").map_err(db_error)?,
                    },
                    center: lon_lat(row, "center_lon", "center_lat")?,
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
            "INSERT INTO worlds (id, name, min_lon, min_lat, max_lon, max_lat, center, \
                                 movement_mode, max_speed_mps) \
             VALUES ($1, $2, $3, $4, $5, $6, ST_SetSRID(ST_MakePoint($7, $8), 4326), $9, $10) \
             ON CONFLICT (id) DO UPDATE SET \
                 name = excluded.name, min_lon = excluded.min_lon, min_lat = excluded.min_lat, \
                 max_lon = excluded.max_lon, max_lat = excluded.max_lat, \
                 center = excluded.center, movement_mode = excluded.movement_mode, \
                 max_speed_mps = excluded.max_speed_mps",
        )
        .bind(world.id)
        .bind(&world.name)
        .bind(b.min_lon)
        .bind(b.min_lat)
        .bind(b.max_lon)
        .bind(b.max_lat)
        .bind(world.center.lon)
        .bind(world.center.lat)
        .bind(world.movement_mode.as_str())
        .bind(world.max_speed_mps)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn areas(&self, world_id: Uuid) -> Result<Vec<Area>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, world_id, name, kind, geom, properties FROM areas \
             WHERE world_id = $1 ORDER BY id",
        )
        .bind(world_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(db_error)?;
                let geom: wkb::Decode<geo::Geometry<f64>> =
                    row.try_get("geom").map_err(db_error)?;
                let sqlx::types::Json(properties) = row
                    .try_get::<sqlx::types::Json<serde_json::Value>, _>("properties")
                    .map_err(db_error)?;
                Ok(Area {
                    id: row.try_get("id").map_err(db_error)?,
                    world_id: row.try_get("world_id").map_err(db_error)?,
                    name: row.try_get("name").map_err(db_error)?,
                    kind: AreaKind::parse(&kind)
                        .ok_or_else(|| corrupt("areas", format!("kind {kind:?}")))?,
                    geometry: match geom.geometry {
                        Some(geo::Geometry::MultiPolygon(mp)) => mp,
                        Some(geo::Geometry::Polygon(p)) => geo::MultiPolygon(vec![p]),
                        _ => return Err(corrupt("areas", "geometry that is not a polygon".into())),
                    },
                    properties,
                })
            })
            .collect()
    }

    async fn put_area(&self, area: &Area) -> Result<(), StoreError> {
        // The column's type and check refuse a wrong SRID or an invalid shape:
        // that is a `Conflict` with PostGIS's reason, not a stored bad area.
        sqlx::query(
            "INSERT INTO areas (id, world_id, name, kind, geom, properties) \
             VALUES ($1, $2, $3, $4, ST_SetSRID($5::geometry, 4326), $6) \
             ON CONFLICT (id) DO UPDATE SET \
                 world_id = excluded.world_id, name = excluded.name, kind = excluded.kind, \
                 geom = excluded.geom, properties = excluded.properties",
        )
        .bind(area.id)
        .bind(area.world_id)
        .bind(&area.name)
        .bind(area.kind.as_str())
        .bind(wkb::Encode(geo::Geometry::MultiPolygon(
            area.geometry.clone(),
        )))
        .bind(sqlx::types::Json(&area.properties))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn delete_area(&self, id: Uuid) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM areas WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(db_error)
    }

    async fn world_objects(&self, world_id: Uuid) -> Result<Vec<WorldObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, world_id, kind, name, ST_X(geom) AS lon, ST_Y(geom) AS lat, properties, \
                    owner_team, version \
             FROM world_objects WHERE world_id = $1 ORDER BY id",
        )
        .bind(world_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(world_object).collect()
    }

    async fn put_world_object(&self, object: &WorldObject) -> Result<(), StoreError> {
        // `version` counts changes, so that a capture can be a conditional
        // update on the version it saw; the given one is ignored.
        sqlx::query(
            "INSERT INTO world_objects (id, world_id, kind, name, geom, properties, owner_team, \
                                        version) \
             VALUES ($1, $2, $3, $4, ST_SetSRID(ST_MakePoint($5, $6), 4326), $7, $8, 0) \
             ON CONFLICT (id) DO UPDATE SET \
                 world_id = excluded.world_id, kind = excluded.kind, name = excluded.name, \
                 geom = excluded.geom, properties = excluded.properties, \
                 owner_team = excluded.owner_team, version = world_objects.version + 1",
        )
        .bind(object.id)
        .bind(object.world_id)
        .bind(&object.kind)
        .bind(&object.name)
        .bind(object.position.lon)
        .bind(object.position.lat)
        .bind(sqlx::types::Json(&object.properties))
        .bind(&object.owner)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn delete_world_object(&self, id: Uuid) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM world_objects WHERE id = $1")
            .bind(id)
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
             LEFT JOIN team_scores s ON s.team = t.name AND s.world_id = $1 \
             ORDER BY t.position",
        )
        .bind(world_id)
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
        sqlx::query("UPDATE team_scores SET score = 0 WHERE world_id = $1 AND score <> 0")
            .bind(world_id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn capture_flag(&self, capture: &Capture) -> Result<CaptureOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The condition on the version makes this the only place a capture is
        // won: a concurrent capture of the same flag waits for this row lock,
        // then re-checks the condition (READ COMMITTED), finds the version
        // moved on and changes nothing. The flag's row is locked first and
        // the score's second in every capture, so captures cannot deadlock.
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE world_objects SET owner_team = $1, version = version + 1 \
             WHERE id = $2 AND world_id = $3 AND kind = 'flag' AND version = $4 \
             RETURNING version",
        )
        .bind(&capture.team)
        .bind(capture.flag_id)
        .bind(capture.world_id)
        .bind(capture.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(version) = version else {
            tx.rollback().await.map_err(db_error)?;
            return Ok(CaptureOutcome::Stale);
        };
        // A retried capture (same id) never counts twice, even against a flag
        // that was deleted and placed again at its old version. The history's
        // key includes the partition's month, so the id alone is checked here
        // (each partition's key index answers it); a retry of the same capture
        // is serialized with it by the flag's row lock taken above.
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM flag_captures WHERE id = $1)")
                .bind(capture.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if known {
            tx.rollback().await.map_err(db_error)?;
            return Ok(CaptureOutcome::Stale);
        }
        let score: i64 = sqlx::query_scalar(
            "INSERT INTO team_scores (world_id, team, score) VALUES ($1, $2, 1) \
             ON CONFLICT (world_id, team) DO UPDATE SET score = team_scores.score + 1 \
             RETURNING score",
        )
        .bind(capture.world_id)
        .bind(&capture.team)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO flag_captures (id, world_id, object_id, user_id, team, name, version, \
                                        score, captured_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8 / 1000))",
        )
        .bind(capture.id)
        .bind(capture.world_id)
        .bind(capture.flag_id)
        .bind(capture.user_id)
        .bind(&capture.team)
        .bind(&capture.name)
        .bind(version)
        .bind(score)
        .bind(capture.captured_at_ms)
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
            " WHERE announced_at IS NULL AND captured_at <= to_timestamp($1::float8 / 1000) \
              ORDER BY captured_at, id LIMIT $2"
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
        sqlx::query(
            "UPDATE flag_captures SET announced_at = now() \
             WHERE id = ANY($1) AND announced_at IS NULL",
        )
        .bind(ids)
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
            " WHERE world_id = $1 AND captured_at >= to_timestamp($2::float8 / 1000) \
              ORDER BY captured_at, id"
        ))
        .bind(world_id)
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
        let row = sqlx::query(concat!(
            "SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat, heading, epoch, seq, ",
            ms!("updated_at"),
            " AS updated_at_ms FROM player_positions WHERE user_id = $1 AND world_id = $2"
        ))
        .bind(user_id)
        .bind(world_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            let epoch: i64 = row.try_get("epoch").map_err(db_error)?;
            let seq: i64 = row.try_get("seq").map_err(db_error)?;
            Ok(StoredPosition {
                user_id,
                world_id,
                position: lon_lat(&row, "lon", "lat")?,
                heading: row.try_get("heading").map_err(db_error)?,
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
        // On the sphere (`use_spheroid = false`), as the game measures.
        // `player_positions` has no GiST index (see its migration): the world's
        // rows are few enough to test each; `world_objects` has one.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Both queries take the same parameters: world, centre, radius, limit.
        let around = |sql: &'static str| async move {
            sqlx::query(sql)
                .bind(world_id)
                .bind(center.lon)
                .bind(center.lat)
                .bind(radius_m)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)
        };
        let rows = around(
            "WITH c AS (SELECT ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography AS g) \
             SELECT p.user_id, u.username, ST_X(p.geom) AS lon, ST_Y(p.geom) AS lat, \
                    (extract(epoch FROM p.updated_at) * 1000)::bigint AS updated_at_ms, \
                    ST_Distance(p.geom::geography, c.g, false) AS distance_m \
             FROM player_positions p JOIN users u ON u.id = p.user_id, c \
             WHERE p.world_id = $1 AND ST_DWithin(p.geom::geography, c.g, $4, false) \
             ORDER BY distance_m, p.user_id LIMIT $5",
        )
        .await?;
        let players = rows
            .iter()
            .map(|row| {
                Ok(NearbyPlayer {
                    user_id: row.try_get("user_id").map_err(db_error)?,
                    username: row.try_get("username").map_err(db_error)?,
                    position: lon_lat(row, "lon", "lat")?,
                    updated_at_ms: row.try_get("updated_at_ms").map_err(db_error)?,
                    distance_m: row.try_get("distance_m").map_err(db_error)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let rows = around(
            "WITH c AS (SELECT ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography AS g) \
             SELECT o.id, o.world_id, o.kind, o.name, ST_X(o.geom) AS lon, ST_Y(o.geom) AS lat, \
                    o.properties, o.owner_team, o.version, \
                    ST_Distance(o.geom::geography, c.g, false) AS distance_m \
             FROM world_objects o, c \
             WHERE o.world_id = $1 AND ST_DWithin(o.geom::geography, c.g, $4, false) \
             ORDER BY distance_m, o.id LIMIT $5",
        )
        .await?;
        let objects = rows
            .iter()
            .map(|row| {
                Ok(NearbyObject {
                    object: world_object(row)?,
                    distance_m: row.try_get("distance_m").map_err(db_error)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Nearby { players, objects })
    }

    async fn save_positions(&self, batch: &[StoredPosition]) -> Result<u64, StoreError> {
        let columns = PositionColumns::from_batch(batch);
        if columns.user_ids.is_empty() {
            return Ok(0);
        }
        match self.upsert_positions(&columns, false).await {
            // Rows of accounts or worlds deleted meanwhile fail the batch on
            // their foreign key. They are rare, so only then is the batch sent
            // again skipping them (checking every row up front costs a third
            // of the flush): the player is gone, and one such row must not
            // block everyone else's positions, now or on any retry.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(FOREIGN_KEY_VIOLATION) => {
                self.upsert_positions(&columns, true)
                    .await
                    .map_err(db_error)
            }
            result => result.map_err(db_error),
        }
    }
}

/// PostgreSQL's SQLSTATE for a foreign key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

impl PgStore {
    /// One upsert of the whole batch in one transaction; with `only_known`,
    /// rows whose account or world does not exist are skipped.
    async fn upsert_positions(
        &self,
        columns: &PositionColumns,
        only_known: bool,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Positions are write-behind anyway: a crash may lose the last flush
        // interval, so this transaction need not wait for its WAL to reach
        // disk. Accounts and sessions keep full durability.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let filter = if only_known {
            "WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = b.user_id) \
               AND EXISTS (SELECT 1 FROM worlds w WHERE w.id = b.world_id)"
        } else {
            ""
        };
        // Rows are written in key order, so shards flushing at once take row
        // locks in the same order and cannot deadlock.
        let sql = format!(
            "INSERT INTO player_positions \
                 (user_id, world_id, geom, heading, epoch, seq, updated_at) \
             SELECT b.user_id, b.world_id, ST_SetSRID(ST_MakePoint(b.lon, b.lat), 4326), \
                    b.heading, b.epoch, b.seq, to_timestamp(b.at_ms::float8 / 1000) \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::float4[], \
                         $6::int8[], $7::int8[], $8::int8[]) \
                  AS b (user_id, world_id, lon, lat, heading, epoch, seq, at_ms) \
             {filter} \
             ORDER BY b.user_id, b.world_id \
             ON CONFLICT (user_id, world_id) DO UPDATE SET \
                 geom = excluded.geom, heading = excluded.heading, \
                 epoch = excluded.epoch, seq = excluded.seq, updated_at = excluded.updated_at \
             WHERE (excluded.epoch, excluded.seq) > (player_positions.epoch, player_positions.seq)"
        );
        let result = sqlx::query(&sql)
            .bind(&columns.user_ids)
            .bind(&columns.world_ids)
            .bind(&columns.lons)
            .bind(&columns.lats)
            .bind(&columns.headings)
            .bind(&columns.epochs)
            .bind(&columns.seqs)
            .bind(&columns.updated_at_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}

/// A position batch as one array per column, for `UNNEST`.
#[derive(Debug, Default)]
struct PositionColumns {
    user_ids: Vec<Uuid>,
    world_ids: Vec<Uuid>,
    lons: Vec<f64>,
    lats: Vec<f64>,
    headings: Vec<f32>,
    epochs: Vec<i64>,
    seqs: Vec<i64>,
    updated_at_ms: Vec<i64>,
}

impl PositionColumns {
    /// Sorted by key, so that shards flushing at once lock rows in the same
    /// order (no deadlocks), with one row per key, the newest, since an upsert
    /// may not touch a row twice. A coordinate the table cannot hold is
    /// dropped: keeping it would fail this batch and every retry after it.
    fn from_batch(batch: &[StoredPosition]) -> Self {
        let mut rows: Vec<&StoredPosition> = batch
            .iter()
            .filter(|p| {
                let LonLat { lon, lat } = p.position;
                (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)
            })
            .collect();
        rows.sort_unstable_by_key(|p| (p.user_id, p.world_id, p.epoch, p.seq));
        rows.dedup_by(|later, earlier| {
            // `dedup_by` keeps the first of a run; make it the newest.
            let same = (later.user_id, later.world_id) == (earlier.user_id, earlier.world_id);
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let mut columns = Self::default();
        for p in rows {
            columns.user_ids.push(p.user_id);
            columns.world_ids.push(p.world_id);
            columns.lons.push(p.position.lon);
            columns.lats.push(p.position.lat);
            columns.headings.push(if p.heading.is_finite() {
                p.heading
            } else {
                0.0
            });
            // Counters never get near 2^63; saturating keeps the order if one did.
            columns
                .epochs
                .push(i64::try_from(p.epoch).unwrap_or(i64::MAX));
            columns.seqs.push(i64::try_from(p.seq).unwrap_or(i64::MAX));
            columns.updated_at_ms.push(p.updated_at_ms);
        }
        columns
    }
}

/// A `flag_captures` row decoded as what was committed. The stored version is
/// the flag's after the capture, so the one it was won against is one less. A
/// deleted account's capture (no `user_id`) names the nil id.
fn committed_capture(row: &PgRow) -> Result<CommittedCapture, StoreError> {
    let version: i64 = row.try_get("version").map_err(db_error)?;
    let user_id: Option<Uuid> = row.try_get("user_id").map_err(db_error)?;
    Ok(CommittedCapture {
        capture: Capture {
            id: row.try_get("id").map_err(db_error)?,
            world_id: row.try_get("world_id").map_err(db_error)?,
            flag_id: row.try_get("object_id").map_err(db_error)?,
            user_id: user_id.unwrap_or_else(Uuid::nil),
            name: row.try_get("name").map_err(db_error)?,
            team: row.try_get("team").map_err(db_error)?,
            version: version - 1,
            captured_at_ms: row.try_get("captured_at_ms").map_err(db_error)?,
        },
        version,
        score: row.try_get("score").map_err(db_error)?,
    })
}

/// A `world_objects` row selected with `lon`, `lat`, `owner_team` and
/// `version` columns.
fn world_object(row: &PgRow) -> Result<WorldObject, StoreError> {
    let sqlx::types::Json(properties) = row
        .try_get::<sqlx::types::Json<serde_json::Value>, _>("properties")
        .map_err(db_error)?;
    Ok(WorldObject {
        id: row.try_get("id").map_err(db_error)?,
        world_id: row.try_get("world_id").map_err(db_error)?,
        kind: row.try_get("kind").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        position: lon_lat(row, "lon", "lat")?,
        properties,
        owner: row.try_get("owner_team").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
    })
}

fn lon_lat(row: &PgRow, lon: &str, lat: &str) -> Result<LonLat, StoreError> {
    Ok(LonLat {
        lon: row.try_get(lon).map_err(db_error)?,
        lat: row.try_get(lat).map_err(db_error)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(user: Uuid, epoch: u64, seq: u64, lon: f64) -> StoredPosition {
        StoredPosition {
            user_id: user,
            world_id: Uuid::nil(),
            position: LonLat { lon, lat: 1.0 },
            heading: f32::NAN,
            epoch,
            seq,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_batch_keeps_the_newest_row_per_key_in_key_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let batch = [
            at(b, 1, 5, 1.0),
            at(a, 2, 1, 2.0),
            at(a, 1, 9, 3.0),
            at(b, 1, 7, 4.0),
            at(a, 1, 1, f64::NAN),
            at(b, 1, 8, 200.0),
        ];
        let columns = PositionColumns::from_batch(&batch);
        assert_eq!(columns.user_ids, [a, b]);
        assert_eq!(columns.lons, [2.0, 4.0]);
        assert_eq!((columns.epochs[0], columns.seqs[0]), (2, 1));
        assert_eq!(columns.headings, [0.0, 0.0], "a NaN heading is stored as 0");
    }
}
