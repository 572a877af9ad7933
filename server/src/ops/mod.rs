//! The ops port: liveness and readiness for orchestrators. Private by default
//! (`OPS_ADDR` is loopback).

mod health;

pub use health::{router, OpsState};
