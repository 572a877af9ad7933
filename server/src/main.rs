//! The `meridian` binary: parse the command line, set up logging, and hand over
//! to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_server::config::DbPool;
use meridian_server::config::LogFormat;
use meridian_server::store::database::format_info;
use meridian_server::store::Database;
use meridian_server::{MigrateAction, MigrateArgs, ServeArgs};
use tracing_subscriber::EnvFilter;

/// Meridian: a real-time geospatial MMO game server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a shard. With no settings: embedded SQLite under ./data, one shard,
    /// game port 127.0.0.1:7000, ops port 127.0.0.1:9100. Log filter: RUST_LOG.
    Serve(Box<ServeArgs>),
    /// Apply, revert or list database migrations: PostgreSQL when DATABASE_URL
    /// is set (the `migrations/` folder, as `sqlx migrate` reads it), otherwise
    /// the embedded SQLite store in DATA_DIR. `serve` applies them on start
    /// unless given --no-migrate.
    Migrate(MigrateArgs),
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config().context("invalid configuration")?;
            init_tracing(config.log_format);
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                meridian_server::run(config, shutdown_signal())
                    .await
                    .context("server failed")
            })
        }
        Command::Migrate(args) => {
            init_tracing(LogFormat::Pretty);
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(migrate(args))
        }
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| "./data".into());
    let pool = DbPool {
        max_connections: 1,
        min_connections: 0,
        ..DbPool::default()
    };
    let database = Database::open(args.database_url.as_deref(), &data_dir, pool)
        .await
        .context("cannot open the database")?;
    let result = match args.action {
        MigrateAction::Run => database.run().await.map(|()| {
            println!("{} migrations applied", database.kind());
        }),
        MigrateAction::Revert { target } => database.revert(target).await.map(|reverted| {
            if reverted.is_empty() {
                println!("nothing to revert");
            }
            for version in reverted {
                println!("reverted {version}");
            }
        }),
        MigrateAction::Info => database
            .info()
            .await
            .map(|lines| print!("{}", format_info(database.kind(), &lines))),
    };
    database.close().await;
    result.context("migration failed")
}

/// Keep glibc from holding on to freed Argon2 buffers (19 MiB per hash).
///
/// glibc raises its mmap threshold each time a large mmapped block is freed, so
/// after the first login later buffers come from per-thread arenas and stay
/// resident: a storm of 1,000 logins left a shard at over 600 MiB. A fixed
/// threshold keeps large blocks mmapped, and freeing them returns the memory.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
