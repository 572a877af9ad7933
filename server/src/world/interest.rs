//! Interest management: which entities one client sees, and what changed since
//! it was last told.
//!
//! Each connection owns an `Interest`: the entities its client knows and the
//! version of each it was last sent. Diffing that against the newest snapshot
//! gives entered/moved/left. Because the diff is against *current* state, a
//! client that could not keep up skips straight to fresh state instead of
//! replaying a backlog, and the memory per connection is bounded by `AOI_MAX`.

use super::geodesy::{chord2, chord_for_arc};
use super::prefetch;
use super::snapshot::{Snapshot, SLOT_MASK};

/// How far a client sees.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Entities closer than this come into view, in metres.
    pub radius_m: f64,
    /// Entities in view leave only beyond this (hysteresis), in metres.
    pub leave_radius_m: f64,
    /// At most this many entities are in view, nearest first.
    pub max: usize,
    /// Ticks between full scans of the area of interest. In between, a client
    /// is only told about the entities it already knows (moved, or gone from
    /// the world), which costs a lookup per known entity instead of a scan of
    /// everything nearby.
    pub rescan_ticks: u64,
}

impl View {
    /// The leave radius as a multiple of the enter radius.
    pub const HYSTERESIS: f64 = 1.2;

    /// Full scans every 8 ticks (400 ms at 20 Hz): an entity crossing into
    /// view appears at most that much later, a few metres inside 150 m even
    /// at the default 10 m/s limit, while the scan — half the fan-out's cost
    /// when it ran every 4 ticks (`fanout/10000`: 18.9 ms a snapshot, 13.5 at
    /// 8, 9.4 without scans) — runs an eighth as often.
    pub const RESCAN_TICKS: u64 = 8;

    /// A view of `radius_m` with the standard hysteresis and rescan period.
    #[must_use]
    pub fn new(radius_m: f64, max: usize) -> Self {
        Self {
            radius_m,
            leave_radius_m: radius_m * Self::HYSTERESIS,
            max,
            rescan_ticks: Self::RESCAN_TICKS,
        }
    }
}

/// What to tell a client: slots for `entered`/`moved` (read their state from the
/// snapshot) and entity ids for `left`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Slots of entities that came into view.
    pub entered: Vec<u32>,
    /// Slots of entities in view whose state changed.
    pub moved: Vec<u32>,
    /// Ids of entities that left view.
    pub left: Vec<u32>,
}

impl Delta {
    /// Whether there is nothing to tell.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty() && self.moved.is_empty() && self.left.is_empty()
    }

    fn clear(&mut self) {
        self.entered.clear();
        self.moved.clear();
        self.left.clear();
    }
}

/// One entity a client knows: its id and the version of its state the client
/// was last sent (see `snapshot::Hot`).
#[derive(Debug, Clone, Copy)]
struct Known {
    id: u32,
    version: u32,
}

/// What one client knows.
///
/// Kept small and contiguous on purpose: the fan-out walks every client's
/// known set on every tick, thousands of them, and a hash map's scattered
/// buckets made that walk mostly cache misses.
#[derive(Debug, Default)]
pub struct Interest {
    /// The entities the client knows, sorted by id.
    known: Vec<Known>,
    /// Where a full scan builds the next `known`, kept to reuse its allocation.
    next: Vec<Known>,
    /// The candidates of a scan as (squared chord distance bits, slot). (The
    /// bits of a non-negative `f64` order like the number.) It never holds
    /// more than twice `View::max`: when it fills up, the nearest `max` are
    /// selected and anything not nearer than the farthest of them is refused
    /// from then on, so a crowd costs one comparison per candidate.
    nearest: Vec<(u64, u32)>,
    /// The tick of the last full scan.
    scanned_at: u64,
}

/// Keep the `max` nearest of `candidates` and return the distance bits of the
/// farthest kept: nothing not nearer than that can be kept any more.
fn keep_nearest(candidates: &mut Vec<(u64, u32)>, max: usize) -> u64 {
    if max == 0 {
        candidates.clear();
        return 0;
    }
    let (_, farthest, _) = candidates.select_nth_unstable(max - 1);
    let cutoff = farthest.0;
    candidates.truncate(max);
    cutoff
}

/// Whether `id` is in a known set sorted by id.
fn knows(known: &[Known], id: u32) -> bool {
    known.binary_search_by_key(&id, |k| k.id).is_ok()
}

impl Interest {
    /// Forget everything, so the next diff sends a full view (after a resume).
    pub fn reset(&mut self) {
        self.known.clear();
    }

    /// Start loading this `Interest` itself, where its known set is.
    pub fn prefetch(&self) {
        prefetch::line(self);
    }

    /// Start loading the known set into the cache, ahead of `diff`, which
    /// reads it first (see `prefetch`): the first 16 lines, 128 entities.
    pub fn prefetch_known(&self) {
        prefetch::slice(&self.known, 16);
    }

    /// Start loading the snapshot entries of the entities the client knows,
    /// which `diff` reads next. Best after `prefetch_known` had time to land.
    pub fn prefetch_entities(&self, snapshot: &Snapshot) {
        for known in &self.known {
            if let Some(hot) = snapshot.hot.get((known.id & SLOT_MASK) as usize) {
                prefetch::line(hot);
            }
        }
    }

    /// How many entities the client knows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether the client knows no entity.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Compute what the client of entity `me` should be told now, record that it
    /// was told, and write it into `out`: a full scan every `view.rescan_ticks`
    /// ticks (and whenever the client knows nobody), otherwise a refresh of the
    /// entities it knows. If `me` is gone from the snapshot, everything known
    /// leaves.
    pub fn diff(&mut self, snapshot: &Snapshot, me: u32, view: &View, out: &mut Delta) {
        let due = snapshot.tick >= self.scanned_at + view.rescan_ticks;
        if due || self.known.is_empty() || snapshot.hot(me).is_none() {
            self.scanned_at = snapshot.tick;
            self.scan(snapshot, me, view, out);
        } else {
            self.refresh(snapshot, out);
        }
    }

    /// Tell the client what changed among the entities it knows, without
    /// looking for new ones: moved ones are `moved`, ones gone from the world
    /// are `left`. Distances are checked at the next full scan.
    fn refresh(&mut self, snapshot: &Snapshot, out: &mut Delta) {
        out.clear();
        let (moved, left) = (&mut out.moved, &mut out.left);
        self.known.retain_mut(|known| match snapshot.hot(known.id) {
            Some(hot) => {
                if hot.version != known.version {
                    moved.push(known.id & SLOT_MASK);
                    known.version = hot.version;
                }
                true
            }
            None => {
                left.push(known.id);
                false
            }
        });
    }

    /// The full diff: who is in view now against who the client knows.
    fn scan(&mut self, snapshot: &Snapshot, me: u32, view: &View, out: &mut Delta) {
        out.clear();
        self.nearest.clear();
        if let Some(own) = snapshot.entity(me) {
            let enter2 = chord_for_arc(view.radius_m).powi(2);
            let leave2 = chord_for_arc(view.leave_radius_m).powi(2);
            let own_slot = me & SLOT_MASK;
            let known = &self.known;
            let nearest = &mut self.nearest;
            let max = view.max;
            let mut cutoff = u64::MAX;
            snapshot.grid.for_each_near(own.ecef, |slot, pos| {
                if slot == own_slot {
                    return;
                }
                let d2 = chord2(own.ecef, *pos);
                let bits = d2.to_bits();
                if bits >= cutoff {
                    return;
                }
                // Only entities in the hysteresis band need the known-set
                // lookup; the rest are decided by distance alone.
                let keep =
                    d2 <= enter2 || (d2 <= leave2 && knows(known, snapshot.hot[slot as usize].id));
                if !keep {
                    return;
                }
                nearest.push((bits, slot));
                if nearest.len() >= 2 * max {
                    cutoff = keep_nearest(nearest, max);
                }
            });
            if nearest.len() > max {
                keep_nearest(nearest, max);
            }
        }
        // Who is in view now, sorted by id, merged with who the client knew.
        self.next.clear();
        self.next.extend(self.nearest.iter().map(|&(_, slot)| {
            let hot = &snapshot.hot[slot as usize];
            Known {
                id: hot.id,
                version: hot.version,
            }
        }));
        self.next.sort_unstable_by_key(|k| k.id);
        let mut old = self.known.iter().peekable();
        for now in &self.next {
            while let Some(gone) = old.next_if(|k| k.id < now.id) {
                out.left.push(gone.id);
            }
            match old.next_if(|k| k.id == now.id) {
                Some(was) if was.version == now.version => {}
                Some(_) => out.moved.push(now.id & SLOT_MASK),
                None => out.entered.push(now.id & SLOT_MASK),
            }
        }
        out.left.extend(old.map(|k| k.id));
        std::mem::swap(&mut self.known, &mut self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::geodesy::to_ecef;
    use crate::world::grid::Grid;
    use crate::world::snapshot::{EntitySnap, Hot};
    use meridian_protocol::{EntityState, LonLat, WireState};

    /// Metres → degrees of longitude at the equator.
    fn deg(m: f64) -> f64 {
        m / 111_195.0
    }

    fn snapshot(tick: u64, points: &[(u32, f64, u64)]) -> Snapshot {
        let len = points
            .iter()
            .map(|p| (p.0 & SLOT_MASK) as usize + 1)
            .max()
            .unwrap_or(0)
            .max(16);
        let mut slots = vec![None; len];
        let mut hot: Vec<Hot> = (0..len as u32).map(Hot::vacant).collect();
        for &(id, east_m, changed_tick) in points {
            let pos = LonLat {
                lon: deg(east_m),
                lat: 0.0,
            };
            let state = EntityState::quantize(id, pos, 0.0, 0.0);
            slots[(id & SLOT_MASK) as usize] = Some(EntitySnap {
                ecef: to_ecef(pos),
                state,
                ack_seq: 0,
                ack_arrival: 0,
            });
            hot[(id & SLOT_MASK) as usize] =
                Hot::new(&state, WireState::encode(&state), changed_tick);
        }
        let grid = Grid::build(
            180.0,
            slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|e| (i as u32, e.ecef))),
        );
        Snapshot {
            tick,
            slots,
            hot,
            grid,
            ..Snapshot::default()
        }
    }

    fn ids(snap: &Snapshot, slots: &[u32]) -> Vec<u32> {
        let mut v: Vec<u32> = slots
            .iter()
            .map(|s| snap.slots[*s as usize].as_ref().unwrap().state.id)
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn entities_enter_within_the_radius_and_leave_past_the_hysteresis() {
        let view = View {
            rescan_ticks: 1,
            ..View::new(150.0, 64)
        };
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        // Me at 0 m; 1 at 100 m (in); 2 at 160 m (out); 3 at 1 km (out).
        let s1 = snapshot(
            1,
            &[(0, 0.0, 1), (1, 100.0, 1), (2, 160.0, 1), (3, 1000.0, 1)],
        );
        interest.diff(&s1, 0, &view, &mut delta);
        assert_eq!(ids(&s1, &delta.entered), vec![1]);
        assert!(delta.moved.is_empty() && delta.left.is_empty());
        // Nothing changed: nothing to say.
        interest.diff(&s1, 0, &view, &mut delta);
        assert!(delta.is_empty());
        // 1 walks to 170 m: inside the hysteresis band, it stays and is "moved".
        let s2 = snapshot(2, &[(0, 0.0, 1), (1, 170.0, 2), (2, 160.0, 1)]);
        interest.diff(&s2, 0, &view, &mut delta);
        assert_eq!(ids(&s2, &delta.moved), vec![1]);
        assert!(delta.entered.is_empty() && delta.left.is_empty());
        // 1 walks to 190 m: past 180 m it leaves. 2 walks to 140 m: it enters.
        let s3 = snapshot(3, &[(0, 0.0, 1), (1, 190.0, 3), (2, 140.0, 3)]);
        interest.diff(&s3, 0, &view, &mut delta);
        assert_eq!(delta.left, vec![1]);
        assert_eq!(ids(&s3, &delta.entered), vec![2]);
        assert_eq!(interest.len(), 1);
    }

    #[test]
    fn only_the_nearest_aoi_max_are_seen() {
        let view = View {
            rescan_ticks: 1,
            ..View::new(150.0, 2)
        };
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        let s = snapshot(
            1,
            &[
                (0, 0.0, 1),
                (1, 50.0, 1),
                (2, 10.0, 1),
                (3, 100.0, 1),
                (4, 20.0, 1),
            ],
        );
        interest.diff(&s, 0, &view, &mut delta);
        assert_eq!(ids(&s, &delta.entered), vec![2, 4]);
    }

    #[test]
    fn in_a_crowd_exactly_the_nearest_aoi_max_are_seen() {
        let view = View {
            rescan_ticks: 1,
            ..View::new(150.0, 16)
        };
        // 300 others between 0.3 and 90 m away, in a scrambled order.
        let mut points = vec![(0, 0.0, 1)];
        points.extend((1..=300u32).map(|id| (id, f64::from((id * 7919) % 300 + 1) * 0.3, 1)));
        let s = snapshot(1, &points);
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        interest.diff(&s, 0, &view, &mut delta);
        let mut nearest: Vec<u32> = points[1..].iter().map(|p| p.0).collect();
        nearest.sort_by(|a, b| points[*a as usize].1.total_cmp(&points[*b as usize].1));
        nearest.truncate(16);
        nearest.sort_unstable();
        assert_eq!(ids(&s, &delta.entered), nearest);
    }

    #[test]
    fn a_reused_slot_is_a_different_entity() {
        let view = View {
            rescan_ticks: 1,
            ..View::new(150.0, 64)
        };
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        let s1 = snapshot(1, &[(0, 0.0, 1), (5, 10.0, 1)]);
        interest.diff(&s1, 0, &view, &mut delta);
        // Slot 5 now holds entity (1 << 20) | 5, unchanged since tick 1.
        let reused = (1 << SLOT_BITS_FOR_TEST) | 5;
        let s2 = snapshot(2, &[(0, 0.0, 1), (reused, 10.0, 1)]);
        interest.diff(&s2, 0, &view, &mut delta);
        assert_eq!(delta.left, vec![5]);
        assert_eq!(ids(&s2, &delta.entered), vec![reused]);
    }

    const SLOT_BITS_FOR_TEST: u32 = crate::world::snapshot::SLOT_BITS;

    #[test]
    fn between_scans_known_entities_move_and_vanish_but_newcomers_wait() {
        let view = View::new(150.0, 64);
        let rescan = view.rescan_ticks;
        assert!(rescan >= 4, "the steps below need refreshes between scans");
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        // Tick 4: a full scan (the client knows nobody): 1 enters.
        interest.diff(
            &snapshot(4, &[(0, 0.0, 1), (1, 50.0, 1)]),
            0,
            &view,
            &mut delta,
        );
        assert_eq!(delta.entered.len(), 1);
        // Tick 5: 1 moves, 2 arrives at 20 m, 1 is still known: a refresh only.
        let s5 = snapshot(5, &[(0, 0.0, 1), (1, 60.0, 5), (2, 20.0, 5)]);
        interest.diff(&s5, 0, &view, &mut delta);
        assert_eq!(ids(&s5, &delta.moved), vec![1]);
        assert!(delta.entered.is_empty());
        // Tick 6: 1 leaves the world: it leaves at once, even between scans.
        interest.diff(
            &snapshot(6, &[(0, 0.0, 1), (2, 20.0, 5), (3, 30.0, 6)]),
            0,
            &view,
            &mut delta,
        );
        assert_eq!(delta.left, vec![1]);
        assert!(delta.entered.is_empty());
        // Tick 7: nobody known any more, so a full scan: 2 and 3 enter.
        let s7 = snapshot(7, &[(0, 0.0, 1), (2, 20.0, 5), (3, 30.0, 6)]);
        interest.diff(&s7, 0, &view, &mut delta);
        assert_eq!(ids(&s7, &delta.entered), vec![2, 3]);
        // The ticks up to 7 + rescan are refreshes; that one scans again.
        let far = snapshot(8, &[(0, 0.0, 1), (2, 500.0, 8), (3, 30.0, 6)]);
        interest.diff(&far, 0, &view, &mut delta);
        assert_eq!(
            ids(&far, &delta.moved),
            vec![2],
            "refreshes do not judge distance"
        );
        let before = snapshot(6 + rescan, &[(0, 0.0, 1), (2, 500.0, 8), (3, 30.0, 6)]);
        interest.diff(&before, 0, &view, &mut delta);
        assert!(delta.is_empty(), "still a refresh");
        let due = snapshot(7 + rescan, &[(0, 0.0, 1), (2, 500.0, 8), (3, 30.0, 6)]);
        interest.diff(&due, 0, &view, &mut delta);
        assert_eq!(delta.left, vec![2]);
    }

    #[test]
    fn when_i_am_gone_everything_leaves() {
        let view = View {
            rescan_ticks: 1,
            ..View::new(150.0, 64)
        };
        let mut interest = Interest::default();
        let mut delta = Delta::default();
        interest.diff(
            &snapshot(1, &[(0, 0.0, 1), (1, 10.0, 1)]),
            0,
            &view,
            &mut delta,
        );
        interest.diff(&snapshot(2, &[(1, 10.0, 1)]), 0, &view, &mut delta);
        assert_eq!(delta.left, vec![1]);
        assert!(interest.is_empty());
    }
}
