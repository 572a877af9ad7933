//! CPU time and resident memory of a process, from Linux's /proc, to report
//! what the server and the bots themselves cost during the steady state.

use std::path::PathBuf;
use std::time::Instant;

/// A process to sample: another one by pid, or this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `/proc/self`.
    Myself,
    /// `/proc/<pid>`.
    Pid(u32),
}

impl Process {
    fn dir(self) -> PathBuf {
        match self {
            Self::Myself => PathBuf::from("/proc/self"),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// User plus system CPU time so far, in seconds; `None` if unreadable.
    #[must_use]
    pub fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.dir().join("stat")).ok()?;
        // The command name may hold spaces and parentheses: fields are
        // counted after its closing parenthesis (state is field 3, utime 14, stime 15).
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / clock_ticks_per_second())
    }

    /// Resident set size in bytes; `None` if unreadable.
    #[must_use]
    pub fn rss_bytes(self) -> Option<u64> {
        let status = std::fs::read_to_string(self.dir().join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The newest process whose executable name (argv[0]'s file name) is `name`,
/// other than this one.
#[must_use]
pub fn find(name: &str) -> Option<u32> {
    let me = std::process::id();
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let exe = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if exe == name.as_bytes() {
            // Newer processes have higher pids, barring wrap-around.
            found = found.max(Some(pid));
        }
    }
    found
}

/// CPU and memory of one process over a window.
#[derive(Debug)]
pub struct Sampler {
    process: Process,
    start: Option<(f64, Instant)>,
    rss_max: u64,
    rss_last: u64,
}

impl Sampler {
    /// Start the window now.
    #[must_use]
    pub fn start(process: Process) -> Self {
        let mut sampler = Self {
            process,
            start: process.cpu_seconds().map(|cpu| (cpu, Instant::now())),
            rss_max: 0,
            rss_last: 0,
        };
        sampler.sample_memory();
        sampler
    }

    /// Take a memory sample.
    pub fn sample_memory(&mut self) {
        if let Some(rss) = self.process.rss_bytes() {
            self.rss_last = rss;
            self.rss_max = self.rss_max.max(rss);
        }
    }

    /// End the window: (CPU % of one core, RSS max, RSS last), if readable.
    #[must_use]
    pub fn finish(mut self) -> Option<(f64, u64, u64)> {
        self.sample_memory();
        let (cpu0, t0) = self.start?;
        let cpu1 = self.process.cpu_seconds()?;
        let wall = t0.elapsed().as_secs_f64().max(1e-9);
        Some(((cpu1 - cpu0) / wall * 100.0, self.rss_max, self.rss_last))
    }
}
