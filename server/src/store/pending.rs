//! Positions waiting to be flushed: the newest one per player, so memory is
//! bounded by the number of players however long the database is away.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

use uuid::Uuid;

use super::StoredPosition;

/// The hand-off between the tick (which marks players dirty) and the flusher
/// (which writes them).
///
/// A std `Mutex` is used, not a channel: the tick inserts once per tick and the
/// flusher swaps the whole map out once per interval, so the lock is held for
/// microseconds and never across an `.await`, and unlike a channel the map
/// keeps only the newest position per player.
type Positions = foldhash::HashMap<(Uuid, Uuid), StoredPosition>;

#[derive(Debug, Default)]
pub struct PendingPositions {
    /// Newest unsaved position per (user, world). The tick inserts thousands
    /// a second; the ids are the server's own UUIDs, not chosen by clients,
    /// so a fast non-keyed hash is safe.
    map: Mutex<Positions>,
    /// Whether the last flush attempt failed (readiness reports it).
    failing: AtomicBool,
    /// When a flush last succeeded, Unix milliseconds (0: not yet).
    flushed_at_ms: AtomicI64,
}

impl PendingPositions {
    /// Record positions, keeping the newer `(epoch, seq)` per player.
    pub fn insert_all(&self, positions: impl IntoIterator<Item = StoredPosition>) {
        let mut map = self.map.lock().expect("pending positions lock poisoned");
        for p in positions {
            merge(&mut map, p);
        }
    }

    /// Take everything pending, sorted by user id so concurrent writers lock rows
    /// in the same order.
    #[must_use]
    pub fn take(&self) -> Vec<StoredPosition> {
        let map = {
            let mut map = self.map.lock().expect("pending positions lock poisoned");
            // Sized for the next interval like this one, so the tick's inserts
            // do not grow the map again from nothing every flush.
            let next = Positions::with_capacity_and_hasher(map.len(), Default::default());
            std::mem::replace(&mut *map, next)
        };
        let mut batch: Vec<StoredPosition> = map.into_values().collect();
        batch.sort_unstable_by_key(|p| (p.user_id, p.world_id));
        batch
    }

    /// Put back a batch that could not be written, without overwriting anything
    /// newer that arrived meanwhile.
    pub fn restore(&self, batch: Vec<StoredPosition>) {
        self.insert_all(batch);
    }

    /// How many positions are waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .expect("pending positions lock poisoned")
            .len()
    }

    /// Whether nothing is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record whether the last flush failed.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Whether the last flush failed.
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Record that a flush succeeded at `now_ms`.
    pub fn set_flushed(&self, now_ms: i64) {
        self.flushed_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When a flush last succeeded, Unix milliseconds; `None` before the first.
    #[must_use]
    pub fn flushed_at_ms(&self) -> Option<i64> {
        Some(self.flushed_at_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }
}

fn merge(map: &mut Positions, p: StoredPosition) {
    map.entry((p.user_id, p.world_id))
        .and_modify(|old| {
            if (p.epoch, p.seq) > (old.epoch, old.seq) {
                *old = p;
            }
        })
        .or_insert(p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_protocol::LonLat;

    fn at(user: u128, epoch: u64, seq: u64) -> StoredPosition {
        StoredPosition {
            user_id: Uuid::from_u128(user),
            world_id: Uuid::nil(),
            position: LonLat {
                lon: seq as f64 / 1000.0,
                lat: 0.0,
            },
            heading: 0.0,
            epoch,
            seq,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn keeps_only_the_newest_per_player_and_restores_without_regressing() {
        let pending = PendingPositions::default();
        pending.insert_all([at(2, 1, 5), at(1, 1, 3), at(1, 1, 4), at(1, 1, 2)]);
        let batch = pending.take();
        assert_eq!(batch.iter().map(|p| p.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(pending.is_empty());
        // While the batch was out, a newer epoch arrived for player 1.
        pending.insert_all([at(1, 2, 1)]);
        pending.restore(batch);
        let again = pending.take();
        assert_eq!((again[0].epoch, again[0].seq), (2, 1));
        assert_eq!(again[1].seq, 5);
    }
}
