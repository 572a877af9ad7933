//! The shard's in-memory world and its tick loop.
//!
//! Architecture Invariant: nothing in this module does I/O or awaits anything
//! but its own command channel and timer. The tick task owns the `World`;
//! everything else talks to it through `Command`s and reads the `Snapshot` it
//! publishes.

pub mod areas;
pub mod chat;
pub mod command;
pub mod flags;
pub mod geodesy;
pub mod ghost;
pub mod grid;
pub mod interest;
pub mod link;
pub mod meters;
pub mod movement;
pub mod pacer;
mod player;
mod prefetch;
pub mod snapshot;
mod spawn;
mod tick;

pub use chat::ChatLine;
pub use command::{CaptureResult, Command, Input, JoinError, JoinRequest, Joined};
pub use ghost::{LocalChanges, RemotePlayer, Shared, GHOST_TTL};
pub use link::{ConnLink, Outgoing, Signals};
pub use snapshot::Snapshot;
pub use tick::{Settings, World, WorldHandle};
