//! The writing halves of a world's connections, served by a few fan-out
//! tasks (one per core) instead of one task each.
//!
//! On every snapshot each fan-out task walks its share of the connections
//! and, for each whose socket can take more, sends the client's outbox
//! messages and then one `Update` with the difference between what it knows
//! and the newest snapshot. Nothing is queued per tick: a client that reads
//! slowly simply gets fewer, fresher updates, and one still blocked after
//! `WRITE_TIMEOUT` is dropped.
//!
//! Sockets are driven with a no-op waker: a socket that cannot take a frame
//! keeps it in its write buffer and is tried again at the next snapshot, so no
//! connection ever needs a wake-up of its own. Waking and polling thousands of
//! writer tasks every tick cost more than the writing itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};
use meridian_protocol::{close, Encoding};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::connection::close_frame;
use super::{frames, WRITE_TIMEOUT};
use crate::world::interest::{Delta, Interest, View};
use crate::world::{Outgoing, Signals, Snapshot};

/// Connections served between yields to the runtime. A round over thousands
/// of sockets takes tens of milliseconds; without a yield no reader on the
/// same worker runs meanwhile, so a move that arrives during a long round
/// waits for its end and may miss the next tick. Measured at 4,000 bots, the
/// 99th percentile from a move's sending to its reading fell from 25–32 ms
/// to 7–9 ms with a yield every 128 connections (every 32 cost the fan-out
/// more than it saved).
pub const YIELD_EVERY: usize = 128;

/// How long the final messages and close frame may take on a closing socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often closing sockets are retried when no snapshot comes (the world
/// has stopped).
const CLOSE_RETRY: Duration = Duration::from_millis(20);

/// One connection's writing half, handed to the fan-out once it joined.
/// `S` is the socket's sending half (generic so the fan-out can be tested
/// over an in-memory pipe).
pub struct Outlet<S> {
    /// Frames to the client, shared with the reader for its rare direct
    /// replies (`try_send_now`).
    pub sink: Arc<Mutex<S>>,
    /// Messages for this client alone.
    pub outbox: mpsc::Receiver<Outgoing>,
    /// The connection's signals: closing, outbox mail, the client's update rate.
    pub signals: Arc<Signals>,
    /// The player's entity id.
    pub me: u32,
    /// The socket's encoding.
    pub encoding: Encoding,
    /// Told each time a message leaves the outbox (the reader waits on it).
    pub room: Arc<Notify>,
    /// Dropped when the fan-out is done with the connection: its close frame
    /// is sent, or the socket failed or timed out.
    pub done: oneshot::Sender<()>,
}

/// A world's fan-out tasks.
pub struct FanOut<S> {
    joins: Vec<mpsc::UnboundedSender<Outlet<S>>>,
    next: AtomicUsize,
}

impl<S> FanOut<S>
where
    S: Sink<Message, Error = axum::Error> + Unpin + Send + 'static,
{
    /// Start `tasks` (at least one) fan-out tasks on a world's snapshots.
    #[must_use]
    pub fn start(
        snapshots: &watch::Receiver<Arc<Snapshot>>,
        view: View,
        tick_hz: u8,
        tasks: usize,
        tracker: &TaskTracker,
    ) -> Self {
        let joins = (0..tasks.max(1))
            .map(|_| {
                let (join, joining) = mpsc::unbounded_channel();
                // Unconstrained: tokio's cooperative budget would make every
                // socket past the 128th of a round look full. The task yields
                // between snapshots anyway.
                tracker.spawn(tokio::task::unconstrained(serve(
                    snapshots.clone(),
                    joining,
                    view,
                    tick_hz,
                )));
                join
            })
            .collect();
        Self {
            joins,
            next: AtomicUsize::new(0),
        }
    }

    /// Serve a connection from the next snapshot on. Its first `Update` is a
    /// full view.
    pub fn add(&self, outlet: Outlet<S>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.joins.len();
        // A fan-out task outlives its world's connections; should it be gone,
        // the outlet is dropped, which closes nothing but ends the wait on `done`.
        let _ = self.joins[i].send(outlet);
    }
}

/// Send a frame now if the socket can take it without waiting: the reader's
/// way to answer a ping at once. False if it could not (the fan-out is using
/// the socket, or it is full); the caller queues the message instead.
pub fn try_send_now<S>(sink: &Mutex<S>, frame: Message) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let Ok(mut sink) = sink.try_lock() else {
        return false;
    };
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(sink.poll_ready_unpin(&mut cx), Poll::Ready(Ok(()))) {
        return false;
    }
    if sink.start_send_unpin(frame).is_err() {
        return false;
    }
    // Whatever does not fit now goes with the next snapshot's flush.
    let _ = sink.poll_flush_unpin(&mut cx);
    true
}

/// One connection as a fan-out task keeps it.
struct Conn<S> {
    outlet: Outlet<S>,
    /// What the client knows.
    interest: Interest,
    last_ack: u32,
    /// When a client that chose a lower rate is due its next update.
    next_update: Instant,
    /// Since when the socket has not taken everything it was given.
    blocked_since: Option<Instant>,
    /// Closing: the time limit, and whether the close frame was sent.
    closing: Option<(Instant, bool)>,
}

/// What to do with a connection after serving it.
#[derive(PartialEq, Eq)]
enum Next {
    Keep,
    Done,
}

/// Shared scratch space of one fan-out task.
#[derive(Default)]
struct Scratch {
    delta: Delta,
    buffer: bytes::BytesMut,
    /// Bytes of the frames handed to sockets this round, added to
    /// `meridian_bytes_total` once per round rather than once per frame.
    bytes_out: u64,
}

/// The payload bytes of a frame.
fn frame_len(frame: &Message) -> u64 {
    match frame {
        Message::Text(text) => text.len() as u64,
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len() as u64,
        Message::Close(_) => 0,
    }
}

/// One fan-out task: serve each connection on every snapshot until the world
/// stops and every connection is closed.
async fn serve<S>(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut joining: mpsc::UnboundedReceiver<Outlet<S>>,
    view: View,
    tick_hz: u8,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let mut conns: Vec<Conn<S>> = Vec::new();
    let mut scratch = Scratch::default();
    let bytes_out = metrics::counter!("meridian_bytes_total", "direction" => "out");
    let mut world_stopped = false;
    let mut joins_open = true;
    // A round's order of connections (index, acknowledged move), those
    // acknowledged on the way (with when they began waiting) and those not,
    // and those done with at its end.
    let mut order: Vec<(usize, u32)> = Vec::new();
    let mut acked: Vec<(u64, usize, u32)> = Vec::new();
    let mut rest: Vec<(usize, u32)> = Vec::new();
    let mut finished: Vec<usize> = Vec::new();
    loop {
        let closing = conns.iter().any(|c| c.closing.is_some());
        tokio::select! {
            biased;
            changed = snapshots.changed(), if !world_stopped => {
                if changed.is_err() {
                    world_stopped = true;
                    for conn in &conns {
                        conn.outlet.signals.close(close::GOING_AWAY, "world stopped");
                    }
                }
            }
            outlet = joining.recv(), if joins_open => {
                match outlet {
                    Some(outlet) => {
                        if world_stopped {
                            outlet.signals.close(close::GOING_AWAY, "world stopped");
                        }
                        conns.push(Conn {
                            outlet,
                            interest: Interest::default(),
                            last_ack: 0,
                            next_update: Instant::now(),
                            blocked_since: None,
                            closing: None,
                        });
                    }
                    None => joins_open = false,
                }
                // New connections wait for the next snapshot, unless closing.
                if !world_stopped {
                    continue;
                }
            }
            () = tokio::time::sleep(CLOSE_RETRY), if closing || world_stopped => {}
        }
        if world_stopped && conns.is_empty() {
            // Connections that join from now on find no one to serve them:
            // their outlets are dropped, which ends their wait.
            return;
        }
        let snapshot = Arc::clone(&snapshots.borrow_and_update());
        let now = Instant::now();
        // The round's order: first the clients whose moves this snapshot
        // acknowledges, those whose moves arrived first at their head, then
        // everyone else. A round over thousands of sockets takes tens of
        // milliseconds, so where a client stands in it is most of its move's
        // latency after the tick: the clients waiting on an acknowledgement
        // do not wait behind those who are not, and a move that arrived just
        // after the previous tick, which has already waited longest for this
        // one, is not also acknowledged last.
        for (i, conn) in conns.iter().enumerate() {
            let (ack, since) = conn.ack_in(&snapshot);
            if ack == conn.last_ack {
                rest.push((i, ack));
            } else {
                acked.push((since, i, ack));
            }
        }
        acked.sort_unstable_by_key(|&(since, _, _)| since);
        order.clear();
        order.extend(acked.drain(..).map(|(_, i, ack)| (i, ack)));
        order.append(&mut rest);
        for (k, &(i, ack)) in order.iter().enumerate() {
            // What the next clients' views read starts loading now, while
            // this one's socket work runs (see `world::prefetch`): three
            // ahead, where the known set is; two ahead, the known set; one
            // ahead, the entities in it.
            if let Some(&(j, _)) = order.get(k + 3) {
                conns[j].interest.prefetch();
            }
            if let Some(&(j, _)) = order.get(k + 2) {
                conns[j].interest.prefetch_known();
            }
            if let Some(&(j, _)) = order.get(k + 1) {
                conns[j].interest.prefetch_entities(&snapshot);
            }
            if conns[i].serve(&snapshot, ack, now, &view, tick_hz, &mut scratch) == Next::Done {
                finished.push(i);
            }
            if (k + 1) % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Highest first, so that each removal moves only a connection that stays.
        finished.sort_unstable();
        for i in finished.drain(..).rev() {
            conns.swap_remove(i);
        }
        bytes_out.increment(std::mem::take(&mut scratch.bytes_out));
    }
}

/// Whether the socket can take a frame now, without waiting.
fn ready<S>(sink: &mut S) -> Result<bool, axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match sink.poll_ready_unpin(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.map(|()| true),
        Poll::Pending => Ok(false),
    }
}

/// Offer a frame to the socket without waiting: `Ok(false)` if it cannot take
/// one now (the caller keeps what it has for next time), `Err` if the socket
/// failed. The frame is built only if it will be sent.
///
/// # Errors
/// The socket's error, if it failed.
pub fn push<S>(sink: &mut S, frame: impl FnOnce() -> Message) -> Result<bool, axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if !ready(sink)? {
        return Ok(false);
    }
    sink.start_send_unpin(frame())?;
    Ok(true)
}

/// Move an outbox into the socket while it takes frames, telling the reader
/// of each freed slot: `Ok(true)` once the outbox is empty, `Ok(false)` if the
/// socket filled up first. The outbox is looked at only when `signals` says
/// it has mail.
fn drain_outbox<S>(
    sink: &mut S,
    outbox: &mut mpsc::Receiver<Outgoing>,
    signals: &Signals,
    room: &Notify,
    encoding: Encoding,
    sent: &mut u64,
) -> Result<bool, axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if !signals.take_mail() {
        return Ok(true);
    }
    while ready(sink)? {
        let Ok(Outgoing::Message(message)) = outbox.try_recv() else {
            return Ok(true);
        };
        room.notify_one();
        let frame = frames::encode(encoding, &message);
        *sent += frame_len(&frame);
        sink.start_send_unpin(frame)?;
    }
    // The rest waits for the next round.
    signals.post();
    Ok(false)
}

/// Write out what the socket holds without waiting: `Ready(Ok)` once it is
/// all sent, `Pending` while the socket is full, `Ready(Err)` if it failed.
pub fn flush<S>(sink: &mut S) -> Poll<Result<(), axum::Error>>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    sink.poll_flush_unpin(&mut Context::from_waker(Waker::noop()))
}

impl<S> Conn<S>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    /// The newest of the client's moves that the snapshot acknowledges, or,
    /// while its entity is not in the snapshot, the last one it was told of;
    /// and since when the client has waited for it (`EntitySnap::ack_arrival`).
    fn ack_in(&self, snapshot: &Snapshot) -> (u32, u64) {
        snapshot
            .entity(self.outlet.me)
            .map_or((self.last_ack, 0), |e| (e.ack_seq, e.ack_arrival))
    }

    /// Give the socket what it can take now: outbox messages, then one
    /// `Update` acknowledging `ack` (from `ack_in`), or, when closing, the
    /// rest of the outbox and the close frame.
    fn serve(
        &mut self,
        snapshot: &Snapshot,
        ack: u32,
        now: Instant,
        view: &View,
        tick_hz: u8,
        scratch: &mut Scratch,
    ) -> Next {
        let o = &mut self.outlet;
        let Ok(mut sink) = o.sink.try_lock() else {
            // The reader is answering a ping: next time.
            return Next::Keep;
        };
        let sink = &mut *sink;
        if o.signals.is_closed() && self.closing.is_none() {
            self.closing = Some((now + CLOSE_TIMEOUT, false));
        }
        // Whatever an earlier round left in the socket's buffer goes first.
        // A socket that took everything last round is not asked: its next
        // frame simply goes behind anything the reader's `try_send_now` may
        // have left, and the flush after it tells whether the socket is full.
        // That saves a flush per client and snapshot, with its two waker
        // registrations and a lock.
        if self.blocked_since.is_some() || self.closing.is_some() {
            match flush(sink) {
                Poll::Ready(Ok(())) => self.blocked_since = None,
                Poll::Ready(Err(_)) => {
                    o.signals.close(close::NORMAL, "");
                    return Next::Done;
                }
                Poll::Pending => {
                    let since = *self.blocked_since.get_or_insert(now);
                    if let Some((deadline, _)) = self.closing {
                        return if now >= deadline {
                            Next::Done
                        } else {
                            Next::Keep
                        };
                    }
                    if now.duration_since(since) >= WRITE_TIMEOUT {
                        metrics::counter!("meridian_outbound_drops_total", "cause" => "write_timeout")
                            .increment(1);
                        o.signals.close(close::TOO_SLOW, "client too slow");
                        return Next::Done;
                    }
                    return Next::Keep;
                }
            }
        }
        if let Some((deadline, close_sent)) = self.closing {
            if close_sent || now >= deadline {
                return Next::Done;
            }
            // Flush what the tick or reader queued (a Kicked, an Error), then
            // the close frame; a later round sees it flushed.
            let (code, reason) = o.signals.frame().unwrap_or((close::NORMAL, ""));
            let sent = drain_outbox(
                sink,
                &mut o.outbox,
                &o.signals,
                &o.room,
                o.encoding,
                &mut scratch.bytes_out,
            )
            .and_then(|empty| Ok(empty && push(sink, || close_frame(code, reason))?));
            return match sent {
                Ok(true) => {
                    self.closing = Some((deadline, true));
                    match flush(sink) {
                        Poll::Ready(_) => Next::Done,
                        Poll::Pending => Next::Keep,
                    }
                }
                Ok(false) => Next::Keep,
                Err(_) => Next::Done,
            };
        }
        let hz = o
            .signals
            .update_hz()
            .map_or(tick_hz, |hz| hz.clamp(1, tick_hz));
        let due = hz == tick_hz || now >= self.next_update;
        let written = drain_outbox(
            sink,
            &mut o.outbox,
            &o.signals,
            &o.room,
            o.encoding,
            &mut scratch.bytes_out,
        )
        .and_then(|_| {
            // A socket still full gets the newest state next time.
            if due && ready(sink)? {
                if hz < tick_hz {
                    // A client that asked for fewer updates gets the newest
                    // state at its own pace; skipped snapshots cost nothing.
                    self.next_update = now + Duration::from_secs_f64(1.0 / f64::from(hz));
                }
                self.interest.diff(snapshot, o.me, view, &mut scratch.delta);
                if !scratch.delta.is_empty() || ack != self.last_ack {
                    self.last_ack = ack;
                    let frame = frames::update(
                        o.encoding,
                        snapshot,
                        ack,
                        &scratch.delta,
                        &mut scratch.buffer,
                    );
                    scratch.bytes_out += frame_len(&frame);
                    sink.start_send_unpin(frame)?;
                }
            }
            match flush(sink) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    self.blocked_since.get_or_insert(now);
                    Ok(())
                }
            }
        });
        if written.is_err() {
            o.signals.close(close::NORMAL, "");
            return Next::Done;
        }
        Next::Keep
    }
}

#[cfg(test)]
mod tests {
    //! The fan-out over a real WebSocket codec on a small bounded pipe, fed by
    //! a real world tick: what a client that stops reading costs the server.

    use std::time::Instant as StdInstant;

    use futures_util::{future, StreamExt};
    use meridian_protocol::{LonLat, ServerMessage};
    use tokio_tungstenite::tungstenite::{self, protocol::Role};
    use tokio_tungstenite::WebSocketStream;
    use uuid::Uuid;

    use super::*;
    use crate::store::{Bounds, MovementMode, PendingPositions, StoredPosition, WorldDef};
    use crate::world::{Command, ConnLink, Input, JoinRequest, Settings, World};

    /// Bytes the pipe between server and client holds, standing in for the
    /// kernel's socket buffers.
    const PIPE_BYTES: usize = 16 * 1024;
    const NEIGHBOURS: usize = 30;
    const STALLED_TICKS: u64 = 600;

    fn to_tungstenite(message: Message) -> tungstenite::Message {
        match message {
            Message::Binary(b) => tungstenite::Message::Binary(b),
            Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
            Message::Close(frame) => {
                tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                    code: f.code.into(),
                    reason: f.reason.as_str().into(),
                }))
            }
            Message::Ping(p) => tungstenite::Message::Ping(p),
            Message::Pong(p) => tungstenite::Message::Pong(p),
        }
    }

    fn at(i: usize) -> LonLat {
        LonLat {
            lon: 0.0002 * (i % 6) as f64,
            lat: 0.0002 * (i / 6) as f64,
        }
    }

    fn join(world: &mut World, i: usize, link: ConnLink, now: StdInstant) -> u32 {
        let user_id = Uuid::from_u128(i as u128 + 1);
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let stored = StoredPosition {
            user_id,
            world_id: Uuid::nil(),
            position: at(i),
            heading: 0.0,
            epoch: 0,
            seq: 0,
            updated_at_ms: 0,
        };
        let request = JoinRequest {
            user_id,
            session_id: Uuid::now_v7(),
            name: format!("p{i}"),
            epoch: 1,
            stored: Some(stored),
            team: None,
            link,
        };
        world.tick(now, vec![Command::Join { request, reply }]);
        answer.try_recv().unwrap().unwrap().entity
    }

    fn test_world() -> World {
        let def = WorldDef {
            id: Uuid::nil(),
            name: "w".into(),
            bounds: Bounds::WORLD,
            center: at(0),
            movement_mode: MovementMode::Input,
            max_speed_mps: Some(1000.0),
        };
        let settings = Settings {
            shard_id: "s".into(),
            tick_hz: 20,
            view: View::new(150.0, 64),
            default_speed_mps: 1000.0,
            resume_grace: Duration::from_secs(20),
            chat_radius_m: 100.0,
        };
        World::new(def, &[], settings, Arc::new(PendingPositions::default()))
    }

    type TestSink = std::pin::Pin<Box<dyn Sink<Message, Error = axum::Error> + Send>>;

    /// A WebSocket over an in-memory pipe of `bytes`: the server's sending
    /// half and the client.
    async fn socket_pair(bytes: usize) -> (TestSink, WebSocketStream<tokio::io::DuplexStream>) {
        let (server_io, client_io) = tokio::io::duplex(bytes);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let sink = server
            .sink_map_err(axum::Error::new)
            .with(|m: Message| future::ready(Ok::<_, axum::Error>(to_tungstenite(m))));
        let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        (Box::pin(sink), client)
    }

    /// A bincode client's outlet at the full update rate.
    fn outlet(
        sink: TestSink,
        link: &ConnLink,
        outbox: mpsc::Receiver<Outgoing>,
        me: u32,
        done: oneshot::Sender<()>,
    ) -> Outlet<TestSink> {
        Outlet {
            sink: Arc::new(Mutex::new(sink)),
            outbox,
            signals: Arc::clone(&link.signals),
            me,
            encoding: Encoding::Bincode,
            room: Arc::new(Notify::new()),
            done,
        }
    }

    #[tokio::test]
    async fn every_connection_is_served_on_every_snapshot_however_many() {
        // More than tokio's cooperative budget of 128 socket operations per
        // poll, all on one fan-out task.
        const CLIENTS: usize = 300;
        let mut world = test_world();
        let mut now = StdInstant::now();
        let tracker = TaskTracker::new();
        let fanout = FanOut::start(&world.subscribe(), View::new(150.0, 64), 20, 1, &tracker);
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let (link, outbox) = ConnLink::new(i as u64 + 1);
            let me = join(&mut world, i, link.clone(), now);
            let (sink, client) = socket_pair(64 * 1024).await;
            let (done, _) = oneshot::channel();
            fanout.add(outlet(sink, &link, outbox, me, done));
            clients.push((link, client));
        }
        // Let the fan-out take them all in, then one snapshot.
        tokio::task::yield_now().await;
        now += Duration::from_millis(50);
        world.tick(now, Vec::new());
        for (i, (_, client)) in clients.iter_mut().enumerate() {
            let mut got_update = false;
            while !got_update {
                let frame = tokio::time::timeout(Duration::from_secs(2), client.next())
                    .await
                    .unwrap_or_else(|_| panic!("client {i} got no Update"))
                    .unwrap()
                    .unwrap();
                let message = Encoding::Bincode.decode_server(&frame.into_data()).unwrap();
                got_update = matches!(message, ServerMessage::Update(_));
            }
        }
    }

    #[tokio::test]
    async fn clients_whose_moves_a_snapshot_acknowledges_are_served_first_oldest_move_first() {
        const CLIENTS: usize = 12;
        // In the order their moves arrive.
        const MOVERS: [usize; 3] = [9, 2, 5];
        let mut world = test_world();
        let mut now = StdInstant::now();
        let tracker = TaskTracker::new();
        let fanout = FanOut::start(&world.subscribe(), View::new(150.0, 64), 20, 1, &tracker);
        // Each sink notes its client's number as an `Update` goes into it.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut entities = Vec::new();
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let (link, outbox) = ConnLink::new(i as u64 + 1);
            let me = join(&mut world, i, link.clone(), now);
            let (sink, client) = socket_pair(64 * 1024).await;
            let noted = Arc::clone(&order);
            let sink: TestSink = Box::pin(sink.with(move |m: Message| {
                if let Message::Binary(data) = &m {
                    let message = Encoding::Bincode.decode_server(data).unwrap();
                    if matches!(message, ServerMessage::Update(_)) {
                        noted.lock().unwrap().push(i);
                    }
                }
                future::ready(Ok::<_, axum::Error>(m))
            }));
            let (done, _) = oneshot::channel();
            fanout.add(outlet(sink, &link, outbox, me, done));
            entities.push(me);
            clients.push(client);
        }
        tokio::task::yield_now().await;
        // A first snapshot gives everyone a full view.
        let served = || async {
            for _ in 0..100 {
                if order.lock().unwrap().len() >= CLIENTS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::mem::take(&mut *order.lock().unwrap())
        };
        now += Duration::from_millis(50);
        world.tick(now, Vec::new());
        assert_eq!(served().await.len(), CLIENTS);
        // Three of them move: everyone sees them move, but they get their
        // acknowledgements before anyone else is served, in the order their
        // moves arrived.
        now += Duration::from_millis(50);
        let moves = MOVERS
            .iter()
            .map(|&i| Command::Input {
                entity: entities[i],
                conn_id: i as u64 + 1,
                input: Input::Move {
                    seq: 1,
                    lon: at(i).lon,
                    lat: at(i).lat + 1e-6,
                    heading: 0.0,
                    accuracy_m: None,
                },
            })
            .collect();
        world.tick(now, moves);
        let round = served().await;
        assert_eq!(round.len(), CLIENTS, "everyone is told: {round:?}");
        assert_eq!(
            round[..MOVERS.len()],
            MOVERS,
            "served in the order {round:?}"
        );
        drop(clients);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_gets_current_state_not_a_backlog() {
        let mut world = test_world();
        let mut now = StdInstant::now();
        let (link, outbox) = ConnLink::new(1);
        let me = join(&mut world, 0, link.clone(), now);
        let neighbours: Vec<u32> = (1..=NEIGHBOURS)
            .map(|i| join(&mut world, i, ConnLink::new(i as u64 + 1).0, now))
            .collect();

        let (sink, mut client) = socket_pair(PIPE_BYTES).await;
        let tracker = TaskTracker::new();
        let fanout = FanOut::start(&world.subscribe(), View::new(150.0, 64), 20, 1, &tracker);
        let (done, fanned_out) = oneshot::channel();
        fanout.add(outlet(sink, &link, outbox, me, done));

        // The client reads nothing while every neighbour moves every tick.
        for seq in 1..=STALLED_TICKS as u32 {
            now += Duration::from_millis(50);
            let moves = neighbours
                .iter()
                .enumerate()
                .map(|(i, &entity)| Command::Input {
                    entity,
                    conn_id: i as u64 + 2,
                    input: Input::Move {
                        seq,
                        lon: at(i + 1).lon,
                        // 1 cm a tick: every neighbour stays well inside the view.
                        lat: at(i + 1).lat + f64::from(seq) * 1e-7,
                        heading: 0.0,
                        accuracy_m: None,
                    },
                })
                .collect();
            world.tick(now, moves);
            tokio::task::yield_now().await;
        }
        let last = world.subscribe().borrow().tick;

        // Now it reads, while the world ticks on with nobody moving, until the
        // fan-out has nothing more to say.
        let mut frames = 0u64;
        let mut bytes = 0usize;
        let mut newest = std::collections::HashMap::new();
        let mut quiet_ticks = 0;
        while quiet_ticks < 3 {
            let Ok(Some(Ok(frame))) =
                tokio::time::timeout(Duration::from_millis(100), client.next()).await
            else {
                quiet_ticks += 1;
                now += Duration::from_millis(50);
                world.tick(now, Vec::new());
                tokio::task::yield_now().await;
                continue;
            };
            frames += 1;
            let data = frame.into_data();
            bytes += data.len();
            let message = Encoding::Bincode.decode_server(&data).unwrap();
            if let ServerMessage::Update(update) = message {
                for e in &update.entered {
                    newest.insert(e.state.id, (update.tick, e.state));
                }
                for s in &update.moved {
                    newest.insert(s.id, (update.tick, *s));
                }
                assert!(update.left.is_empty(), "every neighbour stays in view");
            }
        }
        // Everything it was sent fitted in the pipe, plus the frame the fan-out
        // was blocked on and one fresh update: what a stalled client costs is
        // bounded by the buffers, not by how long it stalls. (Queueing every
        // tick would have sent ten times as much.)
        assert!(
            bytes <= PIPE_BYTES + 4 * 1024 && frames < STALLED_TICKS / 5,
            "{frames} frames, {bytes} bytes after {STALLED_TICKS} stalled ticks"
        );
        // And the last thing it learnt of every neighbour is its current state.
        assert_eq!(newest.len(), NEIGHBOURS);
        let snapshot = world.subscribe().borrow().clone();
        for &entity in &neighbours {
            let (tick, state) = newest[&entity];
            assert!(
                tick > last,
                "stale update for {entity}: sent at tick {tick}"
            );
            assert_eq!(state, snapshot.entity(entity).unwrap().state);
        }
        link.signals.close(close::NORMAL, "");
        now += Duration::from_millis(50);
        world.tick(now, Vec::new());
        tokio::time::timeout(Duration::from_secs(5), fanned_out)
            .await
            .expect("the fan-out lets go of a closed connection")
            .unwrap_err();
    }
}
