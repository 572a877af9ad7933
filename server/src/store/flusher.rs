//! The write-behind flusher: the background task that moves positions from
//! [`PendingPositions`] to the store, one batch per interval, and keeps them
//! pending (newest per player) while the store is down.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{PendingPositions, Store, StoreError};

/// The longest wait between attempts while the store keeps failing: long
/// enough not to hammer a recovering database, short enough that positions
/// are written soon after it returns.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Attempts of the final flush on shutdown. The process is about to exit, so
/// it retries briefly rather than backing off.
const FINAL_ATTEMPTS: u32 = 3;

/// Pause between final-flush attempts.
const FINAL_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Writes pending positions to the store every interval, in one batch.
pub struct Flusher;

impl Flusher {
    /// Start flushing every `interval` (the first flush one interval from now);
    /// on `shutdown`, flush once more and return. Await the handle to know the
    /// final flush is done.
    ///
    /// While the store fails, the batch goes back into `pending` (which keeps
    /// only the newest position per player, so memory stays bounded),
    /// `pending.is_failing()` is set for readiness, and attempts back off
    /// exponentially from `interval` up to 30 s.
    #[must_use]
    pub fn spawn(
        store: Arc<dyn Store>,
        pending: Arc<PendingPositions>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(
            run(store, pending, interval, shutdown).instrument(tracing::info_span!("flusher")),
        )
    }
}

async fn run(
    store: Arc<dyn Store>,
    pending: Arc<PendingPositions>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // `tokio::time::interval` panics on zero; a zero interval means "as often as
    // possible", and a millisecond is that in practice.
    let interval = interval.max(Duration::from_millis(1));
    // Positions need a tick to arrive first, so the first flush is one interval out.
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a slow flush, keep a full interval before the next one instead of
    // bursting to catch up: each batch already holds everything pending.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut backoff = interval;

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        match flush(&*store, &pending).await {
            Ok(_) => backoff = interval,
            Err(e) => {
                // The error text names tables and constraints, never bound values,
                // so no coordinates reach the logs.
                tracing::warn!(
                    error = %e,
                    pending = pending.len(),
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "position flush failed; positions kept for retry"
                );
                ticker.reset_after(backoff);
                backoff = next_backoff(backoff, interval);
            }
        }
    }

    final_flush(&*store, &pending).await;
}

/// One attempt: take everything pending and write it, or put it back.
/// Returns how many positions were written.
async fn flush(store: &dyn Store, pending: &PendingPositions) -> Result<usize, StoreError> {
    let batch = pending.take();
    if batch.is_empty() {
        pending.set_flushed(super::now_ms());
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let saved = store.save_positions(&batch).await;
    metrics::histogram!("meridian_flush_duration_seconds").record(started.elapsed().as_secs_f64());
    match saved {
        Ok(_) => {
            metrics::counter!("meridian_flushed_positions_total").increment(batch.len() as u64);
            pending.set_flushed(super::now_ms());
            if pending.is_failing() {
                tracing::info!(positions = batch.len(), "position flush recovered");
            }
            pending.set_failing(false);
            Ok(batch.len())
        }
        Err(e) => {
            metrics::counter!("meridian_flush_failures_total").increment(1);
            pending.restore(batch);
            pending.set_failing(true);
            Err(e)
        }
    }
}

/// The flush on shutdown, retried a few times so that a momentarily busy
/// database does not lose the last interval of movement.
async fn final_flush(store: &dyn Store, pending: &PendingPositions) {
    for attempt in 1..=FINAL_ATTEMPTS {
        match flush(store, pending).await {
            Ok(written) => {
                tracing::info!(positions = written, "final position flush done");
                return;
            }
            Err(e) if attempt < FINAL_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "final position flush failed; retrying");
                tokio::time::sleep(FINAL_RETRY_DELAY).await;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    lost = pending.len(),
                    "final position flush failed; the last positions of these players are lost"
                );
            }
        }
    }
}

/// The wait after another failure: double the last one, between one interval
/// and [`MAX_BACKOFF`] (or the interval, if that is longer).
fn next_backoff(last: Duration, interval: Duration) -> Duration {
    last.saturating_mul(2)
        .clamp(interval, MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use meridian_protocol::LonLat;
    use sqlx::Connection;
    use uuid::Uuid;

    use super::*;
    use crate::store::sqlite::SqliteOptions;
    use crate::store::{now_ms, Bounds, MovementMode, SqliteStore, StoredPosition, User, WorldDef};

    const INTERVAL: Duration = Duration::from_millis(50);

    /// A migrated store with one player and one world, and a position of theirs.
    async fn setup(path: &Path) -> (Arc<SqliteStore>, StoredPosition) {
        let options = SqliteOptions {
            // A locked database then fails fast instead of stalling the test.
            busy_timeout: Duration::from_millis(50),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(path, options).await.unwrap();
        store.migrate().await.unwrap();
        let user = User {
            id: Uuid::now_v7(),
            username: "walker".into(),
            display_name: None,
            password_hash: None,
            device_hash: None,
            roles: vec![],
            team: None,
            created_at_ms: now_ms(),
        };
        store.create_user(&user).await.unwrap();
        let world = WorldDef {
            id: Uuid::now_v7(),
            name: "w".into(),
            bounds: Bounds::WORLD,
            center: LonLat { lon: 0.0, lat: 0.0 },
            movement_mode: MovementMode::Input,
            max_speed_mps: None,
        };
        store.put_world(&world).await.unwrap();
        let position = StoredPosition {
            user_id: user.id,
            world_id: world.id,
            position: LonLat {
                lon: 4.8932,
                lat: 52.3731,
            },
            heading: 90.0,
            epoch: 1,
            seq: 7,
            updated_at_ms: now_ms(),
        };
        (Arc::new(store), position)
    }

    async fn stored(store: &SqliteStore, p: &StoredPosition) -> Option<StoredPosition> {
        store.position(p.user_id, p.world_id).await.unwrap()
    }

    /// Wait until `cond` holds, failing the test after `within`.
    async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn pending_positions_reach_the_store_after_an_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (store, p) = setup(&dir.path().join("db")).await;
        let pending = Arc::new(PendingPositions::default());
        let shutdown = CancellationToken::new();
        let task = Flusher::spawn(store.clone(), pending.clone(), INTERVAL, shutdown.clone());

        pending.insert_all([p]);
        eventually(Duration::from_secs(2), "the batch is taken", || {
            pending.is_empty()
        })
        .await;
        // Taken is not yet written: wait for the write itself.
        let deadline = Instant::now() + Duration::from_secs(2);
        while stored(&store, &p).await.is_none() {
            assert!(Instant::now() < deadline, "position never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stored(&store, &p).await, Some(p));
        assert!(!pending.is_failing());

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (store, p) = setup(&dir.path().join("db")).await;
        let pending = Arc::new(PendingPositions::default());
        let shutdown = CancellationToken::new();
        // No periodic flush will come within the test: only the final one writes.
        let task = Flusher::spawn(
            store.clone(),
            pending.clone(),
            Duration::from_secs(3600),
            shutdown.clone(),
        );
        pending.insert_all([p]);
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(
            stored(&store, &p).await,
            None,
            "nothing written before shutdown"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the flusher stops promptly")
            .unwrap();
        assert_eq!(stored(&store, &p).await, Some(p));
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn a_locked_database_keeps_positions_pending_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (store, p) = setup(&path).await;

        // Another process holds SQLite's write lock, as a long backup or a stuck
        // writer would: every write fails with "database is locked".
        let mut intruder = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
        )
        .await
        .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut intruder)
            .await
            .unwrap();

        let pending = Arc::new(PendingPositions::default());
        let shutdown = CancellationToken::new();
        let task = Flusher::spawn(store.clone(), pending.clone(), INTERVAL, shutdown.clone());
        pending.insert_all([p]);

        eventually(Duration::from_secs(5), "the flush fails", || {
            pending.is_failing()
        })
        .await;
        assert_eq!(pending.len(), 1, "the position is still pending");
        assert_eq!(stored(&store, &p).await, None, "nothing was written");

        // A newer position arriving during the outage replaces the pending one.
        let newer = StoredPosition { seq: 8, ..p };
        pending.insert_all([newer]);
        assert_eq!(pending.len(), 1, "still one per player");

        sqlx::query("ROLLBACK")
            .execute(&mut intruder)
            .await
            .unwrap();
        intruder.close().await.unwrap();

        eventually(Duration::from_secs(10), "the flush recovers", || {
            !pending.is_failing() && pending.is_empty()
        })
        .await;
        assert_eq!(stored(&store, &p).await, Some(newer));

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_during_an_outage_returns_and_keeps_the_positions() {
        let dir = tempfile::tempdir().unwrap();
        let (store, p) = setup(&dir.path().join("db")).await;
        store.close().await;
        let pending = Arc::new(PendingPositions::default());
        let shutdown = CancellationToken::new();
        let task = Flusher::spawn(store.clone(), pending.clone(), INTERVAL, shutdown.clone());
        pending.insert_all([p]);
        eventually(Duration::from_secs(5), "the flush fails", || {
            pending.is_failing()
        })
        .await;

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the final flush gives up after a few attempts")
            .unwrap();
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let interval = Duration::from_secs(1);
        let mut wait = interval;
        let mut waits = vec![];
        for _ in 0..8 {
            wait = next_backoff(wait, interval);
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30, 30]);
        // An interval longer than the cap is never shortened.
        let long = Duration::from_secs(60);
        assert_eq!(next_backoff(long, long), long);
    }
}
