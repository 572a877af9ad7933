//! The demo world seeded on first start. PLACEHOLDER: being written.

/// The name of the demo world.
pub const DEMO_WORLD: &str = "demo";

use crate::store::{Store, StoreError};

/// Seed the demo world (bounds, areas of every kind, flags) if the store has no world.
///
/// # Errors
/// `StoreError` if the store fails.
pub async fn seed_if_empty(_store: &dyn Store) -> Result<(), StoreError> {
    Ok(())
}
