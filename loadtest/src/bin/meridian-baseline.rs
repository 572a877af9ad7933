//! The `meridian-baseline` binary: the transport baseline server, run on the
//! same runtime as the shard until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use meridian_loadtest::baseline::{self, BaselineOptions};
use tracing_subscriber::EnvFilter;

/// Meridian's transport baseline: the shard's WebSocket stack and protocol
/// with no game logic, as the ceiling to compare the shard with.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    options: BaselineOptions,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    // The same runtime as the shard's binary: one worker per core.
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.options.addr)
            .await
            .with_context(|| format!("cannot listen on {}", cli.options.addr))?;
        tracing::info!(
            addr = %cli.options.addr,
            fanout = cli.options.fanout,
            "meridian-baseline serving: WebSocket ws://{}/ws",
            cli.options.addr
        );
        baseline::serve(listener, cli.options, shutdown_signal())
            .await
            .context("serving failed")
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
