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

/// Which half of a connection waits on its `Closer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The reading half (and its replies).
    Reader = 0,
    /// The writing half.
    Writer = 1,
}

/// Closes one connection, once, with a close code and reason, and wakes its
/// halves. Whoever closes first (tick, reader, writer) decides the code.
///
/// A connection has exactly two waiters, its reader and its writer, which
/// register on every wake-up; a flag and one lock-free waker slot per half
/// make that two atomic operations (a cancellation token's took a lock,
/// measurably, at thousands of connections). The writer's slot is also its
/// only wake-up source: the tick wakes it for each new snapshot and
/// `ConnLink::send` for each queued message, so a writer registers one waker
/// per wake-up instead of one with each of the channels it reads.
#[derive(Debug, Default)]
pub struct Closer {
    closed: AtomicBool,
    wakers: [AtomicWaker; 2],
    frame: OnceLock<(u16, &'static str)>,
}

impl Closer {
    /// Ask the connection to close with this code; later calls are ignored.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.frame.set((code, reason));
        self.closed.store(true, Ordering::Release);
        for waker in &self.wakers {
            waker.wake();
        }
    }

    /// Register `waker` to be woken for `half`. Register before checking what
    /// there is to do, so that a wake in between is not lost.
    pub fn register(&self, half: Half, waker: &std::task::Waker) {
        self.wakers[half as usize].register(waker);
    }

    /// Wake whichever task waits on `half`.
    pub fn wake(&self, half: Half) {
        self.wakers[half as usize].wake();
    }

    /// Resolves once someone asked to close. Each half waits with its own slot.
    pub fn closed(&self, half: Half) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            // Register before checking, so a close in between still wakes us.
            self.register(half, cx.waker());
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
            Ok(()) => {
                self.closer.wake(Half::Writer);
                true
            }
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
    async fn both_halves_wake_on_close_and_the_first_code_wins() {
        let closer = Arc::new(Closer::default());
        let (a, b) = (Arc::clone(&closer), Arc::clone(&closer));
        let reader = tokio::spawn(async move { a.closed(Half::Reader).await });
        let writer = tokio::spawn(async move { b.closed(Half::Writer).await });
        tokio::task::yield_now().await;
        assert!(!closer.is_closed());
        closer.close(4002, "first");
        closer.close(1000, "second");
        reader.await.unwrap();
        writer.await.unwrap();
        assert_eq!(closer.frame(), Some((4002, "first")));
        // Waiting after the close returns at once.
        closer.closed(Half::Reader).await;
    }
}
