//! Meridian's shard: a real-time geospatial game server.
//!
//! `run` binds the game and ops ports and serves until the shutdown future
//! resolves. See ARCHITECTURE.md for the map of the code and its invariants.

pub mod auth;
pub mod bus;
pub mod config;
pub mod demo;
pub mod net;
pub mod ops;
pub mod pages;
mod server;
pub mod store;
pub mod world;

pub use config::{Config, MigrateAction, MigrateArgs, ServeArgs};
pub use server::{run, Server, ServerError};
