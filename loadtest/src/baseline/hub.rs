//! The baseline's shared state: clients in fixed groups, each member's newest
//! state, and the tick that encodes each group's changes once and publishes
//! them to the group's connections.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meridian_protocol::{EntityState, LonLat, WireState};
use meridian_server::world::pacer::Pacer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::BaselineOptions;
use crate::stats::unix_ms;

/// What one tick publishes to a group: the states of the members that moved.
#[derive(Debug, Default)]
pub struct GroupTick {
    /// The tick number.
    pub tick: u64,
    /// Wall clock at the tick, Unix milliseconds.
    pub server_time_ms: u64,
    /// Members that moved: (entity id, state, its bincode encoding).
    pub moved: Vec<(u32, EntityState, WireState)>,
}

/// One member's newest state.
#[derive(Debug)]
struct Member {
    id: u32,
    state: EntityState,
    /// Moved since the last tick.
    changed: bool,
    /// Still connected.
    present: bool,
}

/// A fixed group of clients that see each other.
#[derive(Debug)]
pub struct Group {
    /// Members' newest states (a std `Mutex`: held for a copy, never across `.await`).
    members: Mutex<Vec<Member>>,
    /// The newest tick, a latest-value slot: a slow connection skips stale ticks.
    ticks: watch::Sender<Arc<GroupTick>>,
}

impl Group {
    /// Record a member's move.
    pub fn moved(&self, id: u32, state: EntityState) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = members.iter_mut().find(|m| m.id == id) {
            m.state = state;
            m.changed = true;
        }
    }

    /// A member left.
    pub fn leave(&self, id: u32) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = members.iter_mut().find(|m| m.id == id) {
            m.present = false;
        }
    }

    /// The group's newest tick.
    #[must_use]
    pub fn latest(&self) -> Arc<GroupTick> {
        Arc::clone(&self.ticks.borrow())
    }
}

/// Every group, and the counter that assigns clients to them.
#[derive(Debug)]
pub struct Hub {
    /// Group size minus one.
    fanout: usize,
    /// Ticks per second.
    pub tick_hz: u8,
    /// Whether `Welcome` is sent without waiting for `Hello`.
    pub no_auth: bool,
    /// Groups in join order (a std `Mutex`: never held across `.await`).
    groups: Mutex<Vec<Arc<Group>>>,
    /// Clients joined so far; the next one's entity id is this plus one.
    joined: AtomicU32,
    /// The number of the last tick, published once every group has it.
    ticks: watch::Sender<u64>,
}

impl Hub {
    /// An empty hub.
    #[must_use]
    pub fn new(options: &BaselineOptions) -> Self {
        Self {
            fanout: options.fanout.max(1),
            tick_hz: options.tick_hz,
            no_auth: options.no_auth,
            groups: Mutex::new(Vec::new()),
            joined: AtomicU32::new(0),
            ticks: watch::channel(0).0,
        }
    }

    /// Add a client at `position`: its entity id and group.
    pub fn join(&self, position: LonLat) -> (u32, Arc<Group>) {
        let index = self.joined.fetch_add(1, Ordering::Relaxed);
        let id = index + 1;
        let number = index as usize / (self.fanout + 1);
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        while groups.len() <= number {
            groups.push(Arc::new(Group {
                members: Mutex::new(Vec::with_capacity(self.fanout + 1)),
                ticks: watch::channel(Arc::new(GroupTick::default())).0,
            }));
        }
        let group = Arc::clone(&groups[number]);
        drop(groups);
        group
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Member {
                id,
                state: EntityState::quantize(id, position, 0.0, 0.0),
                changed: true,
                present: true,
            });
        (id, group)
    }

    /// Follow the ticks (all groups at once).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// Tick until `stop` is cancelled: publish each group's moved members,
    /// encoded once.
    pub fn run_ticks(&self, stop: &CancellationToken) {
        let mut pacer = Pacer::new(Duration::from_secs_f64(1.0 / f64::from(self.tick_hz)));
        let mut tick = 0u64;
        while pacer.wait(stop).is_some() {
            tick += 1;
            let server_time_ms = unix_ms();
            let groups = self
                .groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for group in groups {
                let moved = {
                    let mut members = group.members.lock().unwrap_or_else(PoisonError::into_inner);
                    members
                        .iter_mut()
                        .filter(|m| m.present && m.changed)
                        .map(|m| {
                            m.changed = false;
                            (m.id, m.state, WireState::encode(&m.state))
                        })
                        .collect()
                };
                // Published every tick, changed or not: a connection may
                // still owe its client a new ack.
                group.ticks.send_replace(Arc::new(GroupTick {
                    tick,
                    server_time_ms,
                    moved,
                }));
            }
            self.ticks.send_replace(tick);
        }
    }
}
