//! The baseline's writing halves, served as the shard serves its own: one
//! task per core walks its connections on every tick and gives each socket
//! that can take more one `Update`, polling sockets without a waker
//! (`meridian_server::net::fanout`). A ceiling must use the shard's leanest
//! transport, not a costlier one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message};
use bytes::{BufMut, BytesMut};
use meridian_protocol::codec::write_bincode_update;
use meridian_protocol::{Encoding, EntityState, ServerMessage, Update, WireState};
use meridian_server::net::fanout::{flush, push, YIELD_EVERY};
use meridian_server::net::socket::Writer;
use tokio::sync::{mpsc, oneshot, watch};

use super::connection::frame;
use super::hub::{Group, Hub};

/// As the shard: a socket unable to take its frames this long drops the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection's writing half, handed over after its `Welcome`.
pub struct Outlet {
    /// Frames to the client.
    pub sink: Writer,
    /// The client's group.
    pub group: Arc<Group>,
    /// The client's entity id.
    pub me: u32,
    /// The socket's encoding.
    pub encoding: Encoding,
    /// The client's last `Move.seq`, set by its reader.
    pub ack: Arc<AtomicU32>,
    /// Set by the reader when the client is gone.
    pub closed: Arc<AtomicBool>,
    /// Dropped when the fan-out lets go of the connection.
    pub done: oneshot::Sender<()>,
}

/// The fan-out tasks.
pub struct FanOut {
    joins: Vec<mpsc::UnboundedSender<Outlet>>,
    next: AtomicUsize,
}

impl FanOut {
    /// Start `tasks` (at least one) fan-out tasks on the hub's ticks.
    #[must_use]
    pub fn start(hub: &Hub, tasks: usize) -> Self {
        let joins = (0..tasks.max(1))
            .map(|_| {
                let (join, joining) = mpsc::unbounded_channel();
                // Unconstrained, as the shard's: tokio's cooperative budget
                // would make every socket past the 128th of a round look full.
                tokio::spawn(tokio::task::unconstrained(serve(hub.subscribe(), joining)));
                join
            })
            .collect();
        Self {
            joins,
            next: AtomicUsize::new(0),
        }
    }

    /// Serve a connection from the next tick on.
    pub fn add(&self, outlet: Outlet) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.joins.len();
        let _ = self.joins[i].send(outlet);
    }
}

/// One connection as a fan-out task keeps it.
struct Conn {
    outlet: Outlet,
    last_ack: u32,
    blocked_since: Option<Instant>,
}

/// One fan-out task: serve each connection on every tick.
async fn serve(mut ticks: watch::Receiver<u64>, mut joining: mpsc::UnboundedReceiver<Outlet>) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut moved: Vec<WireState> = Vec::new();
    let mut states: Vec<EntityState> = Vec::new();
    let mut buffer = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            changed = ticks.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            outlet = joining.recv() => {
                match outlet {
                    Some(outlet) => conns.push(Conn { outlet, last_ack: 0, blocked_since: None }),
                    None => return,
                }
                continue;
            }
        }
        let now = Instant::now();
        let mut i = 0;
        let mut served = 0;
        while i < conns.len() {
            if conns[i].serve(now, &mut moved, &mut states, &mut buffer) {
                i += 1;
            } else {
                let _ = conns.swap_remove(i).outlet.done.send(());
            }
            // As the shard's fan-out does, so that readers run during a round.
            served += 1;
            if served % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}

impl Conn {
    /// Give the socket one `Update` if it can take it; false when done.
    fn serve(
        &mut self,
        now: Instant,
        moved: &mut Vec<WireState>,
        states: &mut Vec<EntityState>,
        buffer: &mut BytesMut,
    ) -> bool {
        let o = &mut self.outlet;
        if o.closed.load(Ordering::Relaxed) {
            let _ = push(&mut o.sink, || {
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                }))
            });
            let _ = flush(&mut o.sink);
            return false;
        }
        // As the shard's fan-out does: only a socket left full is flushed first.
        if self.blocked_since.is_some() {
            match flush(&mut o.sink) {
                Poll::Ready(Ok(())) => self.blocked_since = None,
                Poll::Ready(Err(_)) => return false,
                Poll::Pending => {
                    let since = *self.blocked_since.get_or_insert(now);
                    return now.duration_since(since) < WRITE_TIMEOUT;
                }
            }
        }
        let tick = o.group.latest();
        let ack_seq = o.ack.load(Ordering::Relaxed);
        moved.clear();
        states.clear();
        for (id, state, wire) in &tick.moved {
            if *id != o.me {
                moved.push(*wire);
                states.push(*state);
            }
        }
        if moved.is_empty() && ack_seq == self.last_ack {
            return true;
        }
        let encoding = o.encoding;
        let pushed = push(&mut o.sink, || {
            let mut header = Update {
                tick: tick.tick,
                server_time_ms: tick.server_time_ms,
                ack_seq,
                entered: Vec::new(),
                moved: Vec::new(),
                left: Vec::new(),
            };
            match encoding {
                Encoding::Bincode => {
                    buffer.reserve(32 + moved.len() * 16);
                    write_bincode_update(&mut (&mut *buffer).writer(), &header, moved.iter())
                        .expect("writing to memory cannot fail");
                    Message::Binary(buffer.split().freeze())
                }
                Encoding::Json => {
                    header.moved = std::mem::take(states);
                    frame(encoding, encoding.encode(&ServerMessage::Update(header)))
                }
            }
        });
        match pushed {
            Ok(true) => self.last_ack = ack_seq,
            Ok(false) => return true,
            Err(_) => return false,
        }
        match flush(&mut o.sink) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => false,
            Poll::Pending => {
                self.blocked_since.get_or_insert(now);
                true
            }
        }
    }
}
