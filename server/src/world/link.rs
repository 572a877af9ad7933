//! The tick's line to one connection: a bounded outbox for messages only this
//! client gets (corrections, area events, kicks) and a way to close it.
//!
//! The tick never waits on a connection: it `try_send`s, and a client whose
//! outbox is full is closed as too slow instead of being queued for.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;

use meridian_protocol::ServerMessage;
use tokio::sync::mpsc;

/// Messages a connection's outbox holds before its client counts as too slow.
pub const OUTBOX_CAPACITY: usize = 64;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// Send this message.
    Message(ServerMessage),
}

/// What the tick, the reader and the fan-out signal each other about one
/// connection: that it is closing (once, with a close code and reason:
/// whoever closes first decides the code), that its outbox has mail, and the
/// update rate its client chose.
///
/// The reader waits on `closed` and polls it on every wake-up; a flag and one
/// lock-free waker slot make that poll two atomic operations (a cancellation
/// token's took a lock, measurably, at thousands of connections). The fan-out
/// checks both flags on every snapshot and needs no waker: it reads this one
/// cache line per connection instead of probing an empty channel's blocks,
/// which at thousands of connections and twenty snapshots a second was a
/// measurable share of its time.
#[derive(Debug, Default)]
pub struct Signals {
    closed: AtomicBool,
    mail: AtomicBool,
    /// The update rate the client chose, 0 until it chooses one.
    update_hz: AtomicU8,
    waker: AtomicWaker,
    frame: OnceLock<(u16, &'static str)>,
}

impl Signals {
    /// Ask the connection to close with this code; later calls are ignored.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.frame.set((code, reason));
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once someone asked to close. One task at a time may wait.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        // The waker this wait last put in the slot. Only `close` takes it out
        // again, and then the flag is set, so while the task's waker is the
        // same the slot needs no new write: the reader polls this on every
        // frame, and the write (an atomic exchange on a line the fan-out and
        // the tick also use) was 1 % of a busy shard's CPU.
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(move |cx| {
            // Register before checking, so a close in between still wakes us.
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.waker.register(cx.waker());
                registered = Some(cx.waker().clone());
            }
            if self.closed.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Whether someone asked to close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Note that the outbox has a message: call after queueing it.
    pub fn post(&self) {
        self.mail.store(true, Ordering::Release);
    }

    /// Whether the outbox may have messages, clearing the note: call before
    /// draining it, and `post` again if the drain stops short.
    #[must_use]
    pub fn take_mail(&self) -> bool {
        self.mail.load(Ordering::Acquire) && self.mail.swap(false, Ordering::AcqRel)
    }

    /// Record the update rate the client chose (at least 1).
    pub fn set_update_hz(&self, hz: u8) {
        self.update_hz.store(hz, Ordering::Relaxed);
    }

    /// The update rate the client chose, if it chose one.
    #[must_use]
    pub fn update_hz(&self) -> Option<u8> {
        match self.update_hz.load(Ordering::Relaxed) {
            0 => None,
            hz => Some(hz),
        }
    }

    /// The close code and reason, once closed.
    #[must_use]
    pub fn frame(&self) -> Option<(u16, &'static str)> {
        self.frame.get().copied()
    }
}

/// Everything the tick needs to reach one connection.
#[derive(Debug, Clone)]
pub struct ConnLink {
    /// Unique per connection, so a stale connection's events can be told apart.
    pub conn_id: u64,
    /// The connection's outbox.
    pub outbox: mpsc::Sender<Outgoing>,
    /// Closes the connection, notes outbox mail.
    pub signals: Arc<Signals>,
}

impl ConnLink {
    /// A link and the receiving end of its outbox.
    #[must_use]
    pub fn new(conn_id: u64) -> (Self, mpsc::Receiver<Outgoing>) {
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (
            Self {
                conn_id,
                outbox,
                signals: Arc::new(Signals::default()),
            },
            rx,
        )
    }

    /// Queue a message without waiting. Returns false, and closes the connection
    /// as too slow, if its outbox is full.
    pub fn send(&self, message: ServerMessage) -> bool {
        match self.outbox.try_send(Outgoing::Message(message)) {
            Ok(()) => {
                self.signals.post();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("meridian_outbound_drops_total", "cause" => "outbox_full")
                    .increment(1);
                self.signals
                    .close(meridian_protocol::close::TOO_SLOW, "client too slow");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reader_wakes_on_close_and_the_first_code_wins() {
        let signals = Arc::new(Signals::default());
        let waiting = Arc::clone(&signals);
        let reader = tokio::spawn(async move { waiting.closed().await });
        tokio::task::yield_now().await;
        assert!(!signals.is_closed());
        signals.close(4002, "first");
        signals.close(1000, "second");
        reader.await.unwrap();
        assert_eq!(signals.frame(), Some((4002, "first")));
        // Waiting after the close returns at once.
        signals.closed().await;
    }
}
