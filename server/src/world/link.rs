//! The tick's line to one connection: a bounded outbox for messages only this
//! client gets (corrections, area events, kicks) and a way to close it.
//!
//! The tick never waits on a connection: it `try_send`s, and a client whose
//! outbox is full is closed as too slow instead of being queued for.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

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

/// Closes one connection, once, with a close code and reason. Whoever closes
/// first (tick, reader, fan-out) decides the code.
///
/// The reader waits on it and polls `closed` on every wake-up; a flag and one
/// lock-free waker slot make that poll two atomic operations (a cancellation
/// token's took a lock, measurably, at thousands of connections). The fan-out
/// checks the flag on every snapshot and needs no waker.
#[derive(Debug, Default)]
pub struct Closer {
    closed: AtomicBool,
    waker: AtomicWaker,
    frame: OnceLock<(u16, &'static str)>,
}

impl Closer {
    /// Ask the connection to close with this code; later calls are ignored.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.frame.set((code, reason));
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once someone asked to close.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            // Register before checking, so a close in between still wakes us.
            self.waker.register(cx.waker());
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
    /// Closes the connection.
    pub closer: Arc<Closer>,
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
                closer: Arc::new(Closer::default()),
            },
            rx,
        )
    }

    /// Queue a message without waiting. Returns false, and closes the connection
    /// as too slow, if its outbox is full.
    pub fn send(&self, message: ServerMessage) -> bool {
        match self.outbox.try_send(Outgoing::Message(message)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer
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
        let closer = Arc::new(Closer::default());
        let waiting = Arc::clone(&closer);
        let reader = tokio::spawn(async move { waiting.closed().await });
        tokio::task::yield_now().await;
        assert!(!closer.is_closed());
        closer.close(4002, "first");
        closer.close(1000, "second");
        reader.await.unwrap();
        assert_eq!(closer.frame(), Some((4002, "first")));
        // Waiting after the close returns at once.
        closer.closed().await;
    }
}
