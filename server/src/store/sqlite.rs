//! The embedded store: SQLite under `DATA_DIR`. PLACEHOLDER: being written.

use std::path::Path;

use async_trait::async_trait;
use uuid::Uuid;

use super::*;

/// SQLite implementation of `Store`.
pub struct SqliteStore {
    _pool: sqlx::SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path`.
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the file cannot be opened.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let _ = path;
        Err(StoreError::Unavailable("not yet implemented".into()))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn create_user(&self, _user: &User) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn user_by_name(&self, _username: &str) -> Result<Option<User>, StoreError> {
        unimplemented!()
    }
    async fn user_by_device(&self, _device_hash: &str) -> Result<Option<User>, StoreError> {
        unimplemented!()
    }
    async fn user_by_id(&self, _id: Uuid) -> Result<Option<User>, StoreError> {
        unimplemented!()
    }
    async fn create_session(&self, _session: &Session) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn session(&self, _id: Uuid) -> Result<Option<Session>, StoreError> {
        unimplemented!()
    }
    async fn revoke_session(&self, _id: Uuid) -> Result<bool, StoreError> {
        unimplemented!()
    }
    async fn next_epoch(&self, _user_id: Uuid) -> Result<u64, StoreError> {
        unimplemented!()
    }
    async fn worlds(&self) -> Result<Vec<WorldDef>, StoreError> {
        unimplemented!()
    }
    async fn put_world(&self, _world: &WorldDef) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn areas(&self, _world_id: Uuid) -> Result<Vec<Area>, StoreError> {
        unimplemented!()
    }
    async fn put_area(&self, _area: &Area) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn delete_area(&self, _id: Uuid) -> Result<bool, StoreError> {
        unimplemented!()
    }
    async fn world_objects(&self, _world_id: Uuid) -> Result<Vec<WorldObject>, StoreError> {
        unimplemented!()
    }
    async fn put_world_object(&self, _object: &WorldObject) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn position(
        &self,
        _user_id: Uuid,
        _world_id: Uuid,
    ) -> Result<Option<StoredPosition>, StoreError> {
        unimplemented!()
    }
    async fn save_positions(&self, _batch: &[StoredPosition]) -> Result<u64, StoreError> {
        unimplemented!()
    }
}
