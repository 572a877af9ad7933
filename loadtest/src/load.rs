//! Load bots: the bots that are not probes, driven in batches by a few plain
//! threads over non-blocking sockets instead of one async task each.
//!
//! A load bot has nothing to time, so it need not hear about a frame the
//! moment it arrives. Each driver thread wakes every `BATCH` or so, and every
//! bot whose move is due drains what its socket received since its last turn
//! (counting `Update`s by their first bytes, decoding the rare other messages)
//! and sends its next move. Its socket is never registered with an event
//! loop, so an arriving frame wakes no thread: on loopback, where the kernel
//! delivers each frame in the sender's context, that wake-up would otherwise
//! be charged to the server under test. The server's work is the same either
//! way; its frames simply wait in the socket buffer until the bot's turn.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_protocol::{ClientMessage, Encoding, LonLat, ServerMessage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::bot::{
    frame, hello, is_update, request, welcome, Plan, Shared, CONNECT_TIMEOUT, READ_BUFFER_BYTES,
};
use crate::stats::{Counters, Stats};
use crate::walk::Walker;

/// How long a driver sleeps at least between turns: bots due within it move
/// together, a little late, instead of waking the thread once per bot.
const BATCH: Duration = Duration::from_millis(2);

/// How long stopped bots wait for the server's close frames.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A non-blocking socket that reads at most until its first short read per
/// turn: a read that returned less than asked for emptied the receive queue,
/// so the next one would only say so (`EAGAIN`) at the cost of a system call.
/// Whatever arrives in between waits for the bot's next turn.
struct Stream {
    tcp: TcpStream,
    /// Set once the socket is non-blocking (the handshake blocks).
    batched: bool,
    drained: bool,
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.drained {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.tcp.read(buf)?;
        self.drained = self.batched && n < buf.len();
        Ok(n)
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// One connected load bot.
pub struct LoadBot {
    index: usize,
    socket: WebSocket<Stream>,
    encoding: Encoding,
    walker: Walker,
    seq: u32,
    /// When its next move is due.
    due: Instant,
}

/// What one turn of a driver counted, added to the shared counters once per turn.
#[derive(Default)]
struct Tally {
    frames_in: usize,
    updates_in: usize,
    bytes_in: usize,
    bytes_out: usize,
    moves_out: usize,
    corrections: usize,
    errors: usize,
    kicks: usize,
    disconnects: usize,
}

impl Tally {
    fn flush(&mut self, counters: &Counters) {
        let add = |counter, n: &mut usize| {
            if *n > 0 {
                Counters::add(counter, *n);
                *n = 0;
            }
        };
        add(&counters.frames_in, &mut self.frames_in);
        add(&counters.updates_in, &mut self.updates_in);
        add(&counters.bytes_in, &mut self.bytes_in);
        add(&counters.bytes_out, &mut self.bytes_out);
        add(&counters.moves_out, &mut self.moves_out);
        add(&counters.corrections, &mut self.corrections);
        add(&counters.errors, &mut self.errors);
        add(&counters.kicks, &mut self.kicks);
        add(&counters.disconnects, &mut self.disconnects);
    }
}

/// Connect, authenticate and wait for `Welcome`, blocking (run it off the
/// async threads). The socket is non-blocking when this returns.
///
/// # Errors
/// Why the bot could not join, for the debug log.
pub fn connect(plan: &Plan, counters: &Counters) -> Result<LoadBot, String> {
    let request = request(plan)?;
    let host = request.uri().host().unwrap_or("127.0.0.1").to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let address = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let stream =
        TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    // TCP_NODELAY: moves are tiny and latency is what is measured.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let stream = Stream {
        tcp: stream,
        batched: false,
        drained: false,
    };
    let (mut socket, _) = tungstenite::client::client_with_config(request, stream, Some(config))
        .map_err(|e| e.to_string())?;
    if let Some(hello) = hello(plan, counters) {
        socket.send(hello).map_err(|e| e.to_string())?;
    }
    let position = loop {
        let bytes = match socket.read().map_err(|e| e.to_string())? {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::from(t),
            Message::Close(frame) => return Err(format!("closed before Welcome: {frame:?}")),
            _ => continue,
        };
        if let Some(position) = welcome(plan, counters, &bytes)? {
            break position;
        }
    };
    socket
        .get_mut()
        .tcp
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    socket.get_mut().batched = true;
    let mut rng = SmallRng::seed_from_u64(plan.index as u64 ^ 0x5eed_cafe);
    // A random phase, so that bots that joined together do not move together.
    let phase = plan.move_period.mul_f64(rng.random_range(0.0..1.0));
    Ok(LoadBot {
        index: plan.index,
        socket,
        encoding: plan.encoding,
        walker: Walker::new(position, plan.speeds, plan.duty, rng),
        seq: 0,
        due: Instant::now() + phase,
    })
}

fn would_block(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e) if e.kind() == ErrorKind::WouldBlock)
}

impl LoadBot {
    /// Move, then drain the socket; false once the socket has ended.
    ///
    /// The move goes first so that it carries the TCP acknowledgement of
    /// every frame received since the last turn. Reading first made the
    /// kernel acknowledge those frames on its own (a read that empties a
    /// socket holding unacknowledged small segments sends an ACK at once),
    /// which on loopback cost a packet through both stacks per turn: measured
    /// at 4,000 bots, moving first sent 14 % fewer segments and took 18 % less
    /// of the bots' CPU and 7 % less of the server's, at the same traffic.
    fn turn(&mut self, shared: &Shared, period: Duration, tally: &mut Tally) -> bool {
        self.step(shared, period, tally) && self.drain(tally)
    }

    /// Read every frame already received; false if the socket ended.
    fn drain(&mut self, tally: &mut Tally) -> bool {
        self.socket.get_mut().drained = false;
        loop {
            let bytes = match self.socket.read() {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::from(t),
                Ok(Message::Close(frame)) => {
                    tracing::debug!(bot = self.index, ?frame, "server closed the socket");
                    return false;
                }
                Ok(_) => continue,
                Err(e) if would_block(&e) => return true,
                Err(e) => {
                    tracing::debug!(bot = self.index, error = %e, "socket failed");
                    return false;
                }
            };
            tally.frames_in += 1;
            tally.bytes_in += bytes.len();
            if is_update(self.encoding, &bytes) {
                tally.updates_in += 1;
            } else if !self.handle(&bytes, tally) {
                return false;
            }
        }
    }

    /// Act on a frame that is not an `Update`; false if the socket failed.
    fn handle(&mut self, bytes: &[u8], tally: &mut Tally) -> bool {
        match self.encoding.decode_server(bytes) {
            Ok(ServerMessage::Correction {
                id,
                lon,
                lat,
                reason,
                ..
            }) => {
                tracing::debug!(bot = self.index, reason = reason.as_str(), "corrected");
                tally.corrections += 1;
                self.walker.position = LonLat { lon, lat };
                // Moves are ignored until the correction is acknowledged.
                let ack = frame(self.encoding, &ClientMessage::AckCorrection { id });
                tally.bytes_out += ack.len();
                self.send(ack)
            }
            Ok(ServerMessage::Error { code, message }) => {
                tracing::debug!(bot = self.index, ?code, %message, "server error");
                tally.errors += 1;
                true
            }
            Ok(ServerMessage::Kicked { reason, .. }) => {
                tracing::debug!(bot = self.index, reason = reason.as_str(), "kicked");
                tally.kicks += 1;
                true
            }
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(bot = self.index, error = %e, "undecodable server frame");
                tally.errors += 1;
                true
            }
        }
    }

    /// Take one step and send it; false if the socket failed.
    fn step(&mut self, shared: &Shared, period: Duration, tally: &mut Tally) -> bool {
        self.seq += 1;
        let step = self
            .walker
            .next_move(period.as_secs_f64(), &shared.walk, self.seq);
        let message = frame(self.encoding, &step);
        tally.bytes_out += message.len();
        tally.moves_out += 1;
        self.send(message)
    }

    /// Send a frame. A full socket keeps it buffered in tungstenite, which
    /// writes it out on the next send or read: a slow server gets fewer,
    /// later moves, never a lost one mid-frame.
    fn send(&mut self, message: Message) -> bool {
        match self.socket.send(message) {
            Ok(()) => true,
            Err(e) if would_block(&e) => true,
            Err(e) => {
                tracing::debug!(bot = self.index, error = %e, "send failed");
                false
            }
        }
    }
}

/// The driver threads and the way to hand them bots.
pub struct Drivers {
    senders: Vec<Sender<LoadBot>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drivers {
    /// Start `threads` (at least one) drivers moving every bot once per `period`.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    #[must_use]
    pub fn start(threads: usize, shared: &Arc<Shared>, period: Duration) -> Self {
        let (senders, threads) = (0..threads.max(1))
            .map(|i| {
                let (sender, receiver) = mpsc::channel();
                let shared = Arc::clone(shared);
                let thread = std::thread::Builder::new()
                    .name(format!("load-bots-{i}"))
                    .spawn(move || drive(&receiver, &shared, period))
                    .expect("start a load bot driver");
                (sender, thread)
            })
            .unzip();
        Self {
            senders,
            threads: Mutex::new(threads),
        }
    }

    /// Hand a connected bot to a driver.
    pub fn add(&self, bot: LoadBot) {
        let driver = &self.senders[bot.index % self.senders.len()];
        // A driver only ends after the stop, when no bot joins any more.
        let _ = driver.send(bot);
    }

    /// Wait for the drivers to close their bots and end (call it after the
    /// stop, off the async threads).
    pub fn join(&self) {
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// One driver: turn each bot when its move is due, until the stop.
fn drive(joining: &Receiver<LoadBot>, shared: &Shared, period: Duration) {
    let counters = &shared.stats.counters;
    let mut bots: Vec<LoadBot> = Vec::new();
    let mut tally = Tally::default();
    while !shared.stop.is_cancelled() {
        bots.extend(joining.try_iter());
        let now = Instant::now();
        let mut next = now + period;
        let mut i = 0;
        while i < bots.len() {
            let bot = &mut bots[i];
            if bot.due <= now {
                if !bot.turn(shared, period, &mut tally) {
                    tally.disconnects += 1;
                    bots.swap_remove(i);
                    continue;
                }
                // A bot that fell behind moves less rather than in a burst.
                bot.due = (bot.due + period).max(now);
            }
            next = next.min(bot.due);
            i += 1;
        }
        tally.flush(counters);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).max(BATCH));
    }
    close(bots);
}

/// Leave cleanly: a close with code 1000 removes the player at once. Wait a
/// little for the server's close frames, so that no socket is reset with the
/// close still unread.
fn close(mut bots: Vec<LoadBot>) {
    for bot in &mut bots {
        let _ = bot.socket.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
    }
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    while !bots.is_empty() && Instant::now() < deadline {
        bots.retain_mut(|bot| loop {
            bot.socket.get_mut().drained = false;
            match bot.socket.read() {
                Ok(Message::Close(_)) => break false,
                Ok(_) => {}
                Err(e) => break would_block(&e),
            }
        });
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connect a load bot at its start time (off the async threads) and hand it to
/// a driver; failures are counted.
pub async fn join(plan: Plan, shared: Arc<Shared>, drivers: Arc<Drivers>) {
    let counters = &shared.stats.counters;
    tokio::select! {
        () = tokio::time::sleep_until(plan.start_at) => {}
        () = shared.stop.cancelled() => return,
    }
    let started = Instant::now();
    let connecting = Arc::clone(&shared);
    let joined = tokio::task::spawn_blocking(move || {
        connect(&plan, &connecting.stats.counters).map_err(|e| (plan.index, e))
    })
    .await;
    match joined {
        Ok(Ok(bot)) => {
            Stats::record(&shared.stats.connect, started.elapsed().as_micros() as u64);
            Counters::inc(&counters.connected);
            drivers.add(bot);
        }
        Ok(Err((index, reason))) => {
            tracing::debug!(bot = index, %reason, "bot failed to join");
            Counters::inc(&counters.failed);
        }
        Err(_) => Counters::inc(&counters.failed),
    }
}
