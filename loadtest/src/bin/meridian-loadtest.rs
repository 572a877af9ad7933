//! The `meridian-loadtest` binary: parse the flags, run the swarm on a small
//! runtime, print the table, write the JSON report, and exit non-zero when the
//! error rate is over the threshold.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use meridian_loadtest::Options;
use tracing_subscriber::EnvFilter;

/// Load-test a Meridian shard (or the transport baseline) with WebSocket bots.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Runtime worker threads (the bots share the machine with the server).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2))]
    workers: u16,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cli.workers))
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime
        .block_on(meridian_loadtest::run(cli.options))
        .context("load test failed")?;
    print!("{}", report.table());
    if let Some(path) = &cli.report {
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
