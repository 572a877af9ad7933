//! The tick's line to one connection: a bounded outbox for messages only this
//! client gets (corrections, area events, kicks) and a way to close it.
//!
//! The tick never waits on a connection: it `try_send`s, and a client whose
//! outbox is full is closed as too slow instead of being queued for.

use std::sync::{Arc, OnceLock};

use meridian_protocol::ServerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages a connection's outbox holds before its client counts as too slow.
pub const OUTBOX_CAPACITY: usize = 64;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// Send this message.
    Message(ServerMessage),
}

/// Closes one connection, once, with a close code and reason. Whoever closes
/// first (tick, reader, writer) decides the code.
#[derive(Debug, Default)]
pub struct Closer {
    token: CancellationToken,
    frame: OnceLock<(u16, &'static str)>,
}

impl Closer {
    /// Ask the connection to close with this code; later calls are ignored.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.frame.set((code, reason));
        self.token.cancel();
    }

    /// Resolves once someone asked to close.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// Whether someone asked to close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
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
