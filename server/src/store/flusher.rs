//! The write-behind flusher. PLACEHOLDER: being written.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PendingPositions, Store};

/// Writes pending positions to the store every interval, in one batch.
pub struct Flusher;

impl Flusher {
    /// Start flushing every `interval`; on `shutdown`, flush once more and return.
    #[must_use]
    pub fn spawn(
        _store: Arc<dyn Store>,
        _pending: Arc<PendingPositions>,
        _interval: Duration,
        _shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async {})
    }
}
