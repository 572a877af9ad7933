//! The capture writer: the background task that commits the captures the
//! ticks propose, answers each tick, and announces what was committed.
//!
//! A capture is durable before anyone hears of it. The tick hands a proposal
//! over without waiting (`try_send`); the writer commits it with
//! `Store::capture_flag`, tells the proposing world the outcome
//! (`Command::CaptureDone`), and only a committed capture is announced, through
//! the bus's control events to every shard, then marked announced in the store.
//! A shard that dies between the commit and the announcement leaves the
//! capture unannounced in the store; every writer sweeps for such captures and
//! announces them. A capture may thus be announced more than once (two
//! sweepers, or a sweep racing a slow announcement), never zero times, and
//! the worlds apply it once by its id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{now_ms, Capture, CaptureOutcome, Store};
use crate::bus::{Bus, ControlEvent};
use crate::world::{CaptureResult, Command};

/// Proposals queued before the ticks refuse captures outright. Captures are
/// rare (a flag takes seconds to win), so a full queue means the writer is
/// stuck on the database, and refusing is the honest answer.
pub const CAPTURES_CAPACITY: usize = 256;

/// The longest a commit may take before the capture counts as not saved. A
/// database that does not answer within this is down as far as players are
/// concerned; should the commit still land later, the sweep announces it.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the store is swept for committed captures nobody announced.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How old an unannounced capture must be before a sweep announces it: long
/// enough that its own writer, if alive, has announced it first.
const ORPHANED_AFTER_MS: i64 = 5_000;

/// Captures announced per sweep at most.
const SWEEP_BATCH: usize = 100;

/// Commits and announces captures.
pub struct CaptureWriter;

impl CaptureWriter {
    /// The queue the ticks propose captures on (give the sender to every
    /// world with `World::capture_with`, the receiver to `spawn`).
    #[must_use]
    pub fn queue() -> (mpsc::Sender<Capture>, mpsc::Receiver<Capture>) {
        mpsc::channel(CAPTURES_CAPACITY)
    }

    /// Start committing the proposals of `queue` for the worlds in `worlds`
    /// (command queues by world id). The task ends on `stop`.
    #[must_use]
    pub fn spawn(
        queue: mpsc::Receiver<Capture>,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        worlds: HashMap<Uuid, mpsc::Sender<Command>>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let writer = Writer { store, bus, worlds };
        tokio::spawn(
            writer
                .run(queue, stop)
                .instrument(tracing::info_span!("capture_writer")),
        )
    }
}

struct Writer {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    worlds: HashMap<Uuid, mpsc::Sender<Command>>,
}

impl Writer {
    async fn run(self, mut proposals: mpsc::Receiver<Capture>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                proposal = proposals.recv() => match proposal {
                    Some(capture) => self.commit(capture).await,
                    None => return,
                },
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    /// Commit one proposal, answer its world, announce it if committed.
    async fn commit(&self, capture: Capture) {
        let outcome = tokio::time::timeout(COMMIT_TIMEOUT, self.store.capture_flag(&capture)).await;
        let result = match outcome {
            Ok(Ok(CaptureOutcome::Committed { version, score })) => {
                CaptureResult::Committed(super::CommittedCapture {
                    capture: capture.clone(),
                    version,
                    score,
                })
            }
            Ok(Ok(CaptureOutcome::Stale)) => CaptureResult::Stale,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "capture not saved");
                CaptureResult::Unsaved
            }
            Err(_) => {
                tracing::warn!("capture not saved: the database did not answer in time");
                CaptureResult::Unsaved
            }
        };
        metrics::counter!("meridian_captures_total", "result" => result_label(&result))
            .increment(1);
        if let Some(world) = self.worlds.get(&capture.world_id) {
            // The tick may be busy; waiting here delays only other captures.
            let _ = world
                .send(Command::CaptureDone {
                    flag_id: capture.flag_id,
                    capture_id: capture.id,
                    result: result.clone(),
                })
                .await;
        }
        if let CaptureResult::Committed(committed) = result {
            self.bus.send_control(ControlEvent::FlagCaptured(committed));
            if let Err(err) = self.store.mark_announced(&[capture.id]).await {
                // The sweep will announce it again; the worlds ignore repeats.
                tracing::warn!(error = %err, "cannot mark a capture announced");
            }
        }
    }

    /// Announce committed captures that nobody announced.
    async fn sweep(&self) {
        let orphans = match self
            .store
            .unannounced_captures(now_ms() - ORPHANED_AFTER_MS, SWEEP_BATCH)
            .await
        {
            Ok(orphans) => orphans,
            Err(err) => {
                tracing::debug!(error = %err, "cannot sweep for unannounced captures");
                return;
            }
        };
        if orphans.is_empty() {
            return;
        }
        tracing::info!(
            count = orphans.len(),
            "announcing captures nobody announced"
        );
        let ids: Vec<Uuid> = orphans.iter().map(|c| c.capture.id).collect();
        for committed in orphans {
            self.bus.send_control(ControlEvent::FlagCaptured(committed));
        }
        if let Err(err) = self.store.mark_announced(&ids).await {
            tracing::warn!(error = %err, "cannot mark captures announced");
        }
    }
}

fn result_label(result: &CaptureResult) -> &'static str {
    match result {
        CaptureResult::Committed(_) => "committed",
        CaptureResult::Stale => "stale",
        CaptureResult::Unsaved => "unsaved",
    }
}
