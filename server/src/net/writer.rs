//! The writing half of a joined connection: whenever the socket can take more,
//! send the client's outbox messages, then one `Update` with the difference
//! between what it knows and the newest snapshot.
//!
//! Nothing is queued per tick: a client that reads slowly simply gets fewer,
//! fresher updates. A send blocked for `WRITE_TIMEOUT` drops the client.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::SinkExt;
use meridian_protocol::{close, Encoding};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::connection::{close_frame, Sink};
use super::{frames, WRITE_TIMEOUT};
use crate::world::interest::{Delta, Interest, View};
use crate::world::{Closer, Outgoing, Snapshot};

/// How long the final messages and close frame may take on a closing socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the writer needs.
pub struct Writer {
    /// Frames to the client.
    pub sink: Sink,
    /// Messages for this client alone.
    pub outbox: mpsc::Receiver<Outgoing>,
    /// Closes the connection.
    pub closer: Arc<Closer>,
    /// The world's snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The player's entity id.
    pub me: u32,
    /// The socket's encoding.
    pub encoding: Encoding,
    /// What the client sees.
    pub view: View,
    /// The tick rate (the most updates per second).
    pub tick_hz: u8,
    /// The client's chosen update rate.
    pub update_hz: Arc<AtomicU8>,
    /// Told each time a message leaves the outbox (the reader waits on it).
    pub room: Arc<Notify>,
}

/// Write until the connection closes or the client stops reading.
pub async fn run(mut w: Writer) {
    let mut interest = Interest::default();
    let mut delta = Delta::default();
    let mut last_ack = 0u32;
    let mut next_update = Instant::now();
    // The first snapshot is a full view for a client that knows nothing.
    w.snapshots.mark_changed();
    let stuck = loop {
        tokio::select! {
            biased;
            () = w.closer.closed() => break false,
            Some(Outgoing::Message(message)) = w.outbox.recv() => {
                w.room.notify_one();
                if !send(&mut w.sink, &w.closer, frames::encode(w.encoding, &message)).await {
                    break true;
                }
            }
            changed = w.snapshots.changed() => {
                if changed.is_err() {
                    w.closer.close(close::GOING_AWAY, "world stopped");
                    break false;
                }
                let hz = w.update_hz.load(Ordering::Relaxed).clamp(1, w.tick_hz);
                if hz < w.tick_hz {
                    // A client that asked for fewer updates gets the newest state
                    // at its own pace; skipped snapshots cost nothing.
                    tokio::time::sleep_until(next_update).await;
                    next_update = Instant::now() + Duration::from_secs_f64(1.0 / f64::from(hz));
                }
                let snapshot = Arc::clone(&w.snapshots.borrow_and_update());
                interest.diff(&snapshot, w.me, &w.view, &mut delta);
                let ack = snapshot.entity(w.me).map_or(last_ack, |e| e.ack_seq);
                if delta.is_empty() && ack == last_ack {
                    continue;
                }
                last_ack = ack;
                let frame = frames::update(w.encoding, &snapshot, ack, &delta);
                drop(snapshot);
                if !send(&mut w.sink, &w.closer, frame).await {
                    break true;
                }
            }
        }
    };
    if stuck {
        return;
    }
    // Closing: flush what the tick or reader queued (a Kicked, an Error), then
    // the close frame, without waiting long on a client that does not read.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Ok(Outgoing::Message(message)) = w.outbox.try_recv() {
            if w.sink
                .send(frames::encode(w.encoding, &message))
                .await
                .is_err()
            {
                return;
            }
        }
        let (code, reason) = w.closer.frame().unwrap_or((close::NORMAL, ""));
        let _ = w.sink.send(close_frame(code, reason)).await;
    })
    .await;
}

/// Send one frame; false if the socket failed or stayed blocked too long.
async fn send(sink: &mut Sink, closer: &Closer, frame: Message) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => {
            closer.close(close::NORMAL, "");
            false
        }
        Err(_) => {
            closer.close(close::TOO_SLOW, "client too slow");
            false
        }
    }
}
