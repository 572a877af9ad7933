//! Meridian's load test: a swarm of WebSocket bots that random-walk at a legal
//! speed and measure what the shard gives them (move→ack latency, updates,
//! bytes, corrections, errors), and a transport baseline server that speaks
//! the same protocol without game logic, as the ceiling to compare with.
//!
//! `run(options)` drives one measurement and returns its `Report`; the
//! `meridian-loadtest` and `meridian-baseline` binaries are thin shells.

pub mod baseline;
mod bot;
mod error;
pub mod flood;
mod load;
mod options;
pub mod procstat;
mod report;
pub mod rush;
mod stats;
mod swarm;
mod tokens;
mod walk;

pub use error::LoadtestError;
pub use options::{BBox, EncodingArg, Options};
pub use report::{Latency, ProcessStats, Report};
pub use swarm::run;
pub use walk::Obstacle;
