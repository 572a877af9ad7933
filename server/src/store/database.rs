//! Which database a shard uses, chosen by configuration, and the migration
//! commands of `meridian migrate` on it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use sqlx::migrate::{AppliedMigration, Migrate, MigrateError, Migrator};

use super::sql::{db_error, migrate_error};
use super::{PgStore, SqliteStore, Store, StoreError};
use crate::config::DbPool;

/// The file of the embedded store inside `DATA_DIR`.
pub const SQLITE_FILE: &str = "meridian.db";

/// The configured database: PostgreSQL when a URL is given, otherwise the
/// embedded SQLite file in the data directory.
#[derive(Debug, Clone)]
pub enum Database {
    /// `DATABASE_URL`.
    Postgres(PgStore),
    /// `DATA_DIR/meridian.db`.
    Sqlite(SqliteStore),
}

/// Where a migration stands, for `meridian migrate info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    /// Applied, and the file is unchanged.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the file was edited afterwards: it will be refused.
    Edited,
    /// Applied by a newer version of meridian: this binary does not know it.
    Unknown,
}

/// One line of `meridian migrate info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    /// The timestamp version.
    pub version: i64,
    /// The file name's description.
    pub description: String,
    /// Its state in this database.
    pub state: MigrationState,
}

impl Database {
    /// Open (or connect to) the configured database, without migrating.
    ///
    /// # Errors
    /// `StoreError::Unavailable` if it cannot be opened or reached.
    pub async fn open(
        database_url: Option<&str>,
        data_dir: &Path,
        pool: DbPool,
    ) -> Result<Self, StoreError> {
        Ok(match database_url {
            Some(url) => Self::Postgres(PgStore::connect(url, pool).await?),
            None => Self::Sqlite(SqliteStore::open(&data_dir.join(SQLITE_FILE)).await?),
        })
    }

    /// The store behind the trait, for the shard.
    #[must_use]
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Postgres(store) => Arc::new(store.clone()),
            Self::Sqlite(store) => Arc::new(store.clone()),
        }
    }

    /// "postgres" or "sqlite", for messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Postgres(_) => &super::postgres::MIGRATOR,
            Self::Sqlite(_) => &super::sqlite::MIGRATOR,
        }
    }

    /// Apply every pending migration (what `serve` does on start).
    ///
    /// # Errors
    /// `StoreError::Migration` if one fails or an applied one was edited.
    pub async fn run(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(store) => store.migrate().await,
            Self::Sqlite(store) => store.migrate().await,
        }
    }

    /// Revert applied migrations newer than `target`, or only the latest one
    /// when `target` is `None`. Returns the versions reverted, newest first.
    ///
    /// # Errors
    /// `StoreError::Migration` if a down migration fails or the database has
    /// migrations this binary does not know.
    pub async fn revert(&self, target: Option<i64>) -> Result<Vec<i64>, StoreError> {
        let applied: Vec<i64> = self.applied().await?.iter().map(|m| m.version).collect();
        let target = match target {
            Some(target) => target,
            // Everything but the latest stays.
            None => applied.iter().rev().nth(1).copied().unwrap_or(0),
        };
        let result = match self {
            Self::Postgres(store) => self.migrator().undo(store.pool(), target).await,
            Self::Sqlite(store) => self.migrator().undo(store.pool(), target).await,
        };
        result.map_err(|e| migrate_error(self.kind(), e))?;
        Ok(applied.into_iter().rev().filter(|&v| v > target).collect())
    }

    /// Every migration this binary has and every one the database has applied.
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the database cannot be read.
    pub async fn info(&self) -> Result<Vec<MigrationInfo>, StoreError> {
        let applied = self.applied().await?;
        let mut lines: Vec<MigrationInfo> = self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| {
                let state = match applied.iter().find(|a| a.version == m.version) {
                    None => MigrationState::Pending,
                    Some(a) if a.checksum == m.checksum => MigrationState::Applied,
                    Some(_) => MigrationState::Edited,
                };
                MigrationInfo {
                    version: m.version,
                    description: m.description.to_string(),
                    state,
                }
            })
            .collect();
        for a in &applied {
            if !lines.iter().any(|l| l.version == a.version) {
                lines.push(MigrationInfo {
                    version: a.version,
                    description: String::new(),
                    state: MigrationState::Unknown,
                });
            }
        }
        lines.sort_by_key(|l| l.version);
        Ok(lines)
    }

    async fn applied(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        async fn list<C: Migrate + ?Sized>(
            conn: &mut C,
        ) -> Result<Vec<AppliedMigration>, MigrateError> {
            conn.ensure_migrations_table().await?;
            conn.list_applied_migrations().await
        }
        let listed = match self {
            Self::Postgres(store) => {
                let mut conn = store.pool().acquire().await.map_err(db_error)?;
                list(&mut *conn).await
            }
            Self::Sqlite(store) => {
                let mut conn = store.pool().acquire().await.map_err(db_error)?;
                list(&mut *conn).await
            }
        };
        listed.map_err(|e| migrate_error(self.kind(), e))
    }

    /// Close the connections.
    pub async fn close(&self) {
        match self {
            Self::Postgres(store) => store.close().await,
            Self::Sqlite(store) => store.close().await,
        }
    }
}

/// `meridian migrate info` as text: one line per migration.
#[must_use]
pub fn format_info(kind: &str, lines: &[MigrationInfo]) -> String {
    let mut out = format!("{kind} migrations:\n");
    for line in lines {
        let state = match line.state {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Edited => "EDITED after it was applied: restore the original file",
            MigrationState::Unknown => "applied by a newer meridian (unknown to this binary)",
        };
        let _ = writeln!(
            out,
            "{:>14}  {:<28} {state}",
            line.version, line.description
        );
    }
    out
}
