//! Shards as separate processes on one PostgreSQL and one Redis, as a
//! deployment runs them, with the test worlds.
#![allow(dead_code)]

use std::time::Duration;

use meridian_protocol::{Encoding, LonLat};
use meridian_server::config::DbPool;
use meridian_server::store::{PgStore, Store};
use uuid::Uuid;

use super::pg::TestDatabase;
use super::redis::RedisServer;
use super::{place_in, seed_test_worlds, Client, ServerProcess};

/// The shards' `OPS_TOKEN`.
pub const OPS_TOKEN: &str = "cluster-test-ops-token";

/// The shards' `FLUSH_INTERVAL_MS`.
pub const FLUSH: Duration = Duration::from_millis(200);

/// Fields drop in order: the shards stop before Redis and the database.
pub struct Cluster {
    pub shards: Vec<ServerProcess>,
    _dirs: Vec<tempfile::TempDir>,
    pub store: PgStore,
    pub http: reqwest::Client,
    pub redis: RedisServer,
    pub db: TestDatabase,
}

impl Cluster {
    /// `n` shards (`shard-0` …) of the test worlds.
    pub async fn start(n: usize) -> Self {
        let redis = RedisServer::start();
        let db = TestDatabase::create().await;
        let store = PgStore::connect(&db.url, DbPool::default()).await.unwrap();
        store.migrate().await.unwrap();
        seed_test_worlds(&store).await;
        let mut shards = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let id = format!("shard-{i}");
            let env = [
                ("DATABASE_URL", db.url.as_str()),
                ("REDIS_URL", &redis.url()),
                ("SHARD_ID", id.as_str()),
                ("OPS_TOKEN", OPS_TOKEN),
            ];
            shards.push(ServerProcess::start_with_env(dir.path(), FLUSH, &env).await);
            dirs.push(dir);
        }
        Self {
            shards,
            _dirs: dirs,
            store,
            http: reqwest::Client::new(),
            redis,
            db,
        }
    }

    /// A guest logged in on shard `i` with this `/api/guest` body, placed at
    /// `at` in `arena` (if given), connected and welcomed.
    pub async fn guest(&self, i: usize, body: serde_json::Value, at: Option<LonLat>) -> Client {
        let game = self.shards[i].game;
        let answer: serde_json::Value = self
            .http
            .post(format!("http://{game}/api/guest"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let user_id: Uuid = answer["user_id"].as_str().unwrap().parse().unwrap();
        if let Some(at) = at {
            place_in(&self.store, user_id, "arena", at).await;
        }
        let token = answer["token"].as_str().unwrap();
        let mut client = Client::connect(game, Encoding::Bincode, Some(token), Some("arena"))
            .await
            .unwrap();
        client.welcome().await;
        client
    }

    /// The id of the world named `name`.
    pub async fn world_id(&self, name: &str) -> Uuid {
        super::world_id(&self.store, name).await
    }
}
