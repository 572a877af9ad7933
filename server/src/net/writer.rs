//! The writing half of a joined connection: whenever the socket can take more,
//! send the client's outbox messages, then one `Update` with the difference
//! between what it knows and the newest snapshot.
//!
//! Nothing is queued per tick: a client that reads slowly simply gets fewer,
//! fresher updates. A send blocked for `WRITE_TIMEOUT` drops the client.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::SinkExt;
use meridian_protocol::{close, Encoding, ServerMessage};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::connection::close_frame;
use super::{frames, WRITE_TIMEOUT};
use crate::world::interest::{Delta, Interest, View};
use crate::world::{Closer, Half, Outgoing, Snapshot};

/// How long the final messages and close frame may take on a closing socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the writer needs. `S` is the socket's sending half (generic so the
/// writer can be tested over an in-memory pipe).
pub struct Writer<S> {
    /// Frames to the client.
    pub sink: S,
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

/// What woke the writer.
enum Wake {
    /// Someone asked to close.
    Closed,
    /// A message for this client alone.
    Message(ServerMessage),
    /// A new snapshot.
    Snapshot,
    /// The world stopped publishing.
    WorldStopped,
}

/// Wait for something to do. The writer's one waker slot (see `Closer`) is
/// registered first; then the flag, the outbox and the snapshot version are
/// checked without registering with either channel.
async fn next(w: &mut Writer<impl Sized>) -> Wake {
    std::future::poll_fn(|cx| {
        w.closer.register(Half::Writer, cx.waker());
        if w.closer.is_closed() {
            return Poll::Ready(Wake::Closed);
        }
        match w.outbox.try_recv() {
            Ok(Outgoing::Message(message)) => return Poll::Ready(Wake::Message(message)),
            // Every sender is gone: the tick and the reader both let go.
            Err(TryRecvError::Disconnected) => return Poll::Ready(Wake::Closed),
            Err(TryRecvError::Empty) => {}
        }
        match w.snapshots.has_changed() {
            Ok(true) => Poll::Ready(Wake::Snapshot),
            Ok(false) => Poll::Pending,
            Err(_) => Poll::Ready(Wake::WorldStopped),
        }
    })
    .await
}

/// Write until the connection closes or the client stops reading.
pub async fn run<S>(mut w: Writer<S>)
where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin,
{
    let mut interest = Interest::default();
    let mut delta = Delta::default();
    let mut last_ack = 0u32;
    let mut buffer = bytes::BytesMut::new();
    let mut next_update = Instant::now();
    // The first snapshot is a full view for a client that knows nothing.
    w.snapshots.mark_changed();
    let stuck = loop {
        match next(&mut w).await {
            Wake::Closed => break false,
            Wake::Message(message) => {
                w.room.notify_one();
                if !send(&mut w.sink, &w.closer, frames::encode(w.encoding, &message)).await {
                    break true;
                }
            }
            Wake::WorldStopped => {
                w.closer.close(close::GOING_AWAY, "world stopped");
                break false;
            }
            Wake::Snapshot => {
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
                let frame = frames::update(w.encoding, &snapshot, ack, &delta, &mut buffer);
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
async fn send<S>(sink: &mut S, closer: &Closer, frame: Message) -> bool
where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin,
{
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

#[cfg(test)]
mod tests {
    //! The writer over a real WebSocket codec on a small bounded pipe, fed by
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
            link,
        };
        world.tick(now, vec![Command::Join { request, reply }]);
        answer.try_recv().unwrap().unwrap().entity
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_gets_current_state_not_a_backlog() {
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
        };
        let mut world = World::new(def, &[], settings, Arc::new(PendingPositions::default()));
        let mut now = StdInstant::now();
        let (link, outbox) = ConnLink::new(1);
        let me = join(&mut world, 0, link.clone(), now);
        let neighbours: Vec<u32> = (1..=NEIGHBOURS)
            .map(|i| join(&mut world, i, ConnLink::new(i as u64 + 1).0, now))
            .collect();

        let (server_io, client_io) = tokio::io::duplex(PIPE_BYTES);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let sink = server
            .sink_map_err(axum::Error::new)
            .with(|m: Message| future::ready(Ok::<_, axum::Error>(to_tungstenite(m))));
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let writer = tokio::spawn(run(Writer {
            sink: Box::pin(sink),
            outbox,
            closer: Arc::clone(&link.closer),
            snapshots: world.subscribe(),
            me,
            encoding: Encoding::Bincode,
            view: View::new(150.0, 64),
            tick_hz: 20,
            update_hz: Arc::new(AtomicU8::new(20)),
            room: Arc::new(Notify::new()),
        }));

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

        // Now it reads until the writer has nothing more to say.
        let mut frames = 0u64;
        let mut bytes = 0usize;
        let mut newest = std::collections::HashMap::new();
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(300), client.next()).await
        {
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
        // Everything it was sent fitted in the pipe, plus the frame the writer
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
            assert_eq!(tick, last, "stale update for {entity}");
            assert_eq!(state, snapshot.entity(entity).unwrap().state);
        }
        link.closer.close(close::NORMAL, "");
        writer.await.unwrap();
    }
}
