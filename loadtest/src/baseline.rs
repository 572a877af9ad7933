//! The transport baseline: a WebSocket server on the shard's own stack (axum
//! 0.8, the same socket limits, read buffer and `TCP_NODELAY`, the same
//! subprotocols and encodings) with no game logic, to show how far the shard
//! is from what the transport alone allows.
//!
//! Clients are put in groups of `fanout + 1` in the order they join. Every
//! tick, each group's moved members are encoded once and published through a
//! latest-value slot; fan-out tasks (one per core, as in the shard) send each
//! client one `Update` with the others' states and its own last `Move.seq` as
//! `ack_seq`, so bots measure move→ack exactly as against the shard.

mod connection;
mod fanout;
mod hub;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Args;
use meridian_protocol::LonLat;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use hub::Hub;

/// The baseline server's settings (flags of `meridian-baseline`).
#[derive(Debug, Clone, Args)]
pub struct BaselineOptions {
    /// Address of the WebSocket endpoint `/ws`.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub addr: SocketAddr,
    /// Others each client sees: clients are grouped by fanout + 1 in join order.
    #[arg(long, default_value_t = 30)]
    pub fanout: usize,
    /// Ticks per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=60))]
    pub tick_hz: u8,
    /// Send `Welcome` at once instead of waiting for a `Hello` (whose token is never checked).
    #[arg(long)]
    pub no_auth: bool,
}

/// Where `Welcome` puts every client: the demo world's centre, so bots walk
/// the same area as against the shard.
pub const WELCOME_POSITION: LonLat = crate::options::DEMO_CENTER;

/// Serve the baseline on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve(
    listener: TcpListener,
    options: BaselineOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = Arc::new(Hub::new(&options));
    // Ticks on a thread of their own, paced like the shard's (see
    // `meridian_server::world::pacer`), so that the ceiling keeps time the
    // same way. The runtime waits for this thread when it is dropped, so the
    // ticks stop (through the drop guard) whenever this function ends, even
    // by a panic.
    let stop = CancellationToken::new();
    let ticks = {
        let (hub, stop) = (Arc::clone(&hub), stop.clone());
        tokio::task::spawn_blocking(move || hub.run_ticks(&stop))
    };
    let stop = stop.drop_guard();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let fanout = fanout::FanOut::start(&hub, cores);
    let app = connection::router(Arc::new(connection::Baseline { hub, fanout }));
    let served = axum::serve(
        // The shard's socket settings, so that the two transports are one.
        listener.tap_io(|tcp| meridian_server::net::tune_socket(tcp)),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .into_future()
    .await;
    drop(stop);
    let _ = ticks.await;
    served
}
