//! One load test from start to report: get tokens, start the bots over the
//! ramp, measure the steady state (counters, latency, CPU and memory), stop
//! the bots cleanly and summarise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meridian_protocol::Encoding;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bot::{self, Plan, Shared};
use crate::flood::Flood;
use crate::load::{self, Drivers};
use crate::procstat::{self, Process, Sampler};
use crate::report::{Latency, ProcessStats, Report};
use crate::rush::Rush;
use crate::stats::{unix_ms, CounterValues, Presence, Stats};
use crate::walk::Walk;
use crate::{tokens, LoadtestError, Options};

/// Time between token acquisition and the first bot's connect, so that the
/// bots' own setup does not land in the ramp.
const LEAD_IN: Duration = Duration::from_millis(200);

/// How often progress and memory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// How long stopped bots may take to close their sockets.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run a load test and report on it.
///
/// # Errors
/// `LoadtestError` if the options are invalid or no tokens can be had.
/// Everything that goes wrong for single bots is counted in the report instead.
pub async fn run(options: Options) -> Result<Report, LoadtestError> {
    options.validate()?;
    let server_pid = if options.no_server_stats {
        None
    } else {
        options
            .server_pid
            .or_else(|| procstat::find(&options.server_name))
    };
    if server_pid.is_none() && !options.no_server_stats {
        tracing::warn!(name = %options.server_name, "no server process found: its CPU and RSS are not reported");
    }
    if options.logins_only {
        return logins_only(&options, server_pid).await;
    }
    let credentials = tokens::acquire(&options).await?;
    let tokens = tokens_held(&options, &credentials);
    let area = options.area();
    let encoding = Encoding::from(options.encoding);
    let probes = options.probe_count();
    let t0 = Instant::now() + LEAD_IN;
    let ramp = Duration::from_secs_f64(options.ramp);
    let window = (
        t0 + ramp,
        t0 + ramp + Duration::from_secs_f64(options.duration),
    );
    let http = reqwest::Client::new();
    let ops = options.ops_url.as_deref().zip(options.ops_token.as_deref());
    let rush = match ops.filter(|_| options.flag_rush > 0) {
        Some(ops) => {
            let mut teams: Vec<String> = credentials.teams.iter().flatten().cloned().collect();
            teams.sort();
            teams.dedup();
            let plan = (
                options.flag_rush,
                options.rush_ring_m,
                Duration::from_secs_f64(options.rush_round_s),
            );
            let world = options.world.as_deref();
            let rush =
                Rush::place(&http, ops, world, area, &credentials.obstacles, plan, teams).await?;
            Some(Arc::new(rush))
        }
        None => None,
    };
    let mut walk = Walk::new(area, &credentials.obstacles);
    walk.rush = rush.clone();
    let shared = Arc::new(Shared {
        stats: Stats::default(),
        walk,
        window,
        stop: CancellationToken::new(),
    });
    let window_ms = {
        let now_ms = unix_ms() as i64;
        let at =
            |t: Instant| now_ms + t.saturating_duration_since(Instant::now()).as_millis() as i64;
        (at(window.0), at(window.1))
    };

    let flood = if options.flooders > 0 {
        let tokens = tokens::flooders(&options).await?;
        Some(Flood::start(
            tokens,
            &options.urls,
            options.world.clone(),
            encoding,
            options.flood_hz,
            window,
            &shared.stop,
        ))
    } else {
        None
    };

    let mut bots = JoinSet::new();
    let move_period = Duration::from_secs_f64(1.0 / options.move_hz);
    let drivers = Arc::new(Drivers::start(
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        &shared,
        move_period,
    ));
    // A bot's place in its team, to spread each team over its groups.
    let mut per_team: std::collections::HashMap<Option<String>, usize> = Default::default();
    for (index, token) in credentials.tokens.into_iter().enumerate() {
        let team = credentials.teams.get(index).cloned().flatten();
        let nth = per_team.entry(team.clone()).or_default();
        let duty = rush.as_ref().and_then(|r| r.duty(team.as_deref(), *nth));
        *nth += 1;
        let plan = Plan {
            index,
            url: options.urls[index % options.urls.len()].clone(),
            token,
            world: options.world.clone(),
            encoding,
            // Spread evenly: exactly `probes` of the bots, over every shard
            // and the whole ramp.
            probe: (index * probes) % options.bots < probes,
            start_at: t0 + ramp.mul_f64(index as f64 / options.bots as f64),
            move_period,
            // Rushing bots walk at the top speed, to reach each round's flag.
            speeds: if duty.is_some() {
                (options.max_speed, options.max_speed)
            } else {
                (options.min_speed, options.max_speed)
            },
            duty,
        };
        if plan.token.is_none() && !options.token_free {
            // Its login failed: it cannot join.
            shared
                .stats
                .counters
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        if plan.probe {
            bots.spawn(bot::run(plan, Arc::clone(&shared)));
        } else {
            bots.spawn(load::join(plan, Arc::clone(&shared), Arc::clone(&drivers)));
        }
    }

    let progress = progress_bar(&options);
    let mut samplers: Option<(Sampler, Sampler, CounterValues, Presence)> = None;
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        every.tick().await;
        let now = Instant::now();
        let c = shared.stats.counters.read();
        progress.set_position(now.saturating_duration_since(t0).as_secs());
        progress.set_message(format!(
            "connected {}/{}  failed {}  corrections {}  errors {}  disconnects {}",
            c.connected, options.bots, c.failed, c.corrections, c.errors, c.disconnects
        ));
        let since = now.saturating_duration_since(window.0).as_secs_f64();
        if let Some((_, _, _, presence)) = &mut samplers {
            presence.sample(since, c.present());
        }
        if now >= window.1 {
            break;
        }
        match &mut samplers {
            None if now >= window.0 => {
                let server = Sampler::start(server_pid.map_or(Process::Myself, Process::Pid));
                let presence = Presence::start(since, c.present());
                samplers = Some((server, Sampler::start(Process::Myself), c, presence));
            }
            Some((server, me, _, _)) => {
                server.sample_memory();
                me.sample_memory();
            }
            None => {}
        }
    }
    let end = shared.stats.counters.read();
    let seconds = options.duration;
    let (server, me, start, bot_seconds) = match samplers {
        Some((server, me, start, presence)) => (
            server_pid
                .and(server.finish())
                .map(|s| stats(server_pid, s)),
            me.finish().map(|s| stats(None, s)),
            start,
            presence.bot_seconds(),
        ),
        None => (None, None, CounterValues::default(), 0.0),
    };
    progress.finish_and_clear();

    shared.stop.cancel();
    let _ = tokio::time::timeout(STOP_TIMEOUT, async {
        while bots.join_next().await.is_some() {}
    })
    .await;
    bots.abort_all();
    let flood = match flood {
        Some(flood) => Some(flood.finish().await),
        None => None,
    };
    let _ = tokio::time::timeout(
        STOP_TIMEOUT,
        tokio::task::spawn_blocking(move || drivers.join()),
    )
    .await;

    let flag_rush = match (&rush, ops) {
        (Some(rush), Some(ops)) => {
            // Let the last announcements and commits land before comparing.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let checked = rush
                .check(&http, ops, options.world.as_deref(), window_ms)
                .await;
            rush.remove(&http, ops).await;
            Some(checked?)
        }
        _ => None,
    };
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
    let bad = end.failed + end.errors + end.disconnects;
    let error_rate = bad as f64 / options.bots as f64;
    let lock = |h: &std::sync::Mutex<_>| {
        Latency::from_us(&h.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    Ok(Report {
        urls: options.urls.clone(),
        bots: options.bots,
        probes,
        encoding: options.encoding,
        auth: credentials.mode,
        ramp_s: options.ramp,
        duration_s: options.duration,
        move_hz: options.move_hz,
        area,
        connected: end.connected,
        failed: end.failed,
        tokens,
        connect_ms: lock(&shared.stats.connect),
        login_ms: Latency::from_us(&credentials.latency),
        move_ack_ms: lock(&shared.stats.move_ack),
        staleness_ms: lock(&shared.stats.staleness),
        // Per bot present, for the time each was (see `Presence`): a bot
        // that joined late in the steady state must not lift the average
        // above the tick rate.
        updates_per_bot_per_s: end.updates_in.saturating_sub(start.updates_in) as f64
            / bot_seconds.max(1.0),
        frames_in_per_s: rate(end.frames_in, start.frames_in),
        bytes_in_per_s: rate(end.bytes_in, start.bytes_in),
        bytes_out_per_s: rate(end.bytes_out, start.bytes_out),
        moves_per_s: rate(end.moves_out, start.moves_out),
        corrections: end.corrections,
        errors: end.errors,
        kicks: end.kicks,
        disconnects: end.disconnects,
        error_rate,
        max_error_rate: options.max_error_rate,
        passed: error_rate <= options.max_error_rate
            && flag_rush.as_ref().is_none_or(|r| r.passed)
            && flood.as_ref().is_none_or(|f| f.passed),
        server,
        bots_process: me,
        flag_rush,
        flood,
    })
}

/// `--logins-only`: get the tokens, timing the calls and the server's CPU
/// while they run, and connect no bot.
async fn logins_only(options: &Options, server_pid: Option<u32>) -> Result<Report, LoadtestError> {
    let sampler = server_pid.map(|pid| Sampler::start(Process::Pid(pid)));
    let credentials = tokens::acquire(options).await?;
    let server = sampler
        .and_then(Sampler::finish)
        .map(|s| stats(server_pid, s));
    let tokens = tokens_held(options, &credentials);
    let failed = options.bots as u64 - tokens;
    let error_rate = failed as f64 / options.bots as f64;
    Ok(Report {
        urls: options.urls.clone(),
        bots: options.bots,
        encoding: options.encoding,
        auth: credentials.mode,
        area: options.area(),
        failed,
        tokens,
        login_ms: Latency::from_us(&credentials.latency),
        error_rate,
        max_error_rate: options.max_error_rate,
        passed: error_rate <= options.max_error_rate,
        server,
        ..Report::default()
    })
}

/// Bots with a token, or every bot when none needs one.
fn tokens_held(options: &Options, credentials: &tokens::Credentials) -> u64 {
    if options.token_free {
        options.bots as u64
    } else {
        credentials.tokens.iter().filter(|t| t.is_some()).count() as u64
    }
}

fn stats(pid: Option<u32>, (cpu, rss_max, rss_last): (f64, u64, u64)) -> ProcessStats {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    ProcessStats {
        pid,
        cpu_percent: cpu,
        rss_mib_max: mib(rss_max),
        rss_mib_last: mib(rss_last),
    }
}

/// A progress bar over the whole run, hidden when stdout is not a terminal.
fn progress_bar(options: &Options) -> ProgressBar {
    let total = (options.ramp + options.duration).ceil() as u64;
    let target = if options.quiet || !std::io::stdout().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stdout()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos:>4}/{len}s  {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
