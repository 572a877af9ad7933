//! What a load test does: where the bots connect, how many, how long, where
//! they walk, and how they get their tokens. Flags of `meridian-loadtest`.

use std::str::FromStr;

use clap::{Args, ValueEnum};
use meridian_protocol::{Encoding, LonLat};
use serde::Serialize;

/// The demo world's centre (Dam Square), where bots walk by default.
pub const DEMO_CENTER: LonLat = LonLat {
    lon: 4.8932,
    lat: 52.3731,
};

/// How many neighbours within `AOI_RADIUS` a bot should have with the default area.
pub const DEFAULT_NEIGHBOURS: f64 = 35.0;

/// The server's default area-of-interest radius, used to size the default area.
pub const AOI_RADIUS_M: f64 = 150.0;

/// Metres per degree of latitude on the game's sphere (mean Earth radius).
pub const M_PER_DEG: f64 = 111_194.93;

/// A longitude/latitude box, `min_lon,min_lat,max_lon,max_lat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BBox {
    /// West edge.
    pub min_lon: f64,
    /// South edge.
    pub min_lat: f64,
    /// East edge.
    pub max_lon: f64,
    /// North edge.
    pub max_lat: f64,
}

impl BBox {
    /// The square of `side_m` metres centred on `center`.
    #[must_use]
    pub fn square(center: LonLat, side_m: f64) -> Self {
        let half_lat = side_m / 2.0 / M_PER_DEG;
        let half_lon = side_m / 2.0 / (M_PER_DEG * center.lat.to_radians().cos());
        Self {
            min_lon: center.lon - half_lon,
            min_lat: center.lat - half_lat,
            max_lon: center.lon + half_lon,
            max_lat: center.lat + half_lat,
        }
    }

    /// The middle of the box.
    #[must_use]
    pub fn center(&self) -> LonLat {
        LonLat {
            lon: (self.min_lon + self.max_lon) / 2.0,
            lat: (self.min_lat + self.max_lat) / 2.0,
        }
    }

    /// The shorter side, in metres.
    #[must_use]
    pub fn side_m(&self) -> f64 {
        let lat = self.center().lat.to_radians().cos();
        let width = (self.max_lon - self.min_lon) * M_PER_DEG * lat;
        let height = (self.max_lat - self.min_lat) * M_PER_DEG;
        width.min(height)
    }

    /// Whether a point lies inside.
    #[must_use]
    pub fn contains(&self, p: LonLat) -> bool {
        p.lon >= self.min_lon
            && p.lon <= self.max_lon
            && p.lat >= self.min_lat
            && p.lat <= self.max_lat
    }

    /// As `[min_lon, min_lat, max_lon, max_lat]`.
    #[must_use]
    pub fn to_array(&self) -> [f64; 4] {
        [self.min_lon, self.min_lat, self.max_lon, self.max_lat]
    }

    /// From `[min_lon, min_lat, max_lon, max_lat]`.
    #[must_use]
    pub fn from_array(a: [f64; 4]) -> Self {
        Self {
            min_lon: a[0],
            min_lat: a[1],
            max_lon: a[2],
            max_lat: a[3],
        }
    }
}

impl FromStr for BBox {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = numbers(s, 4)?;
        let b = Self::from_array([v[0], v[1], v[2], v[3]]);
        if b.min_lon < b.max_lon && b.min_lat < b.max_lat {
            Ok(b)
        } else {
            Err("expected min_lon,min_lat,max_lon,max_lat with min < max".into())
        }
    }
}

/// Parse `lon,lat`.
fn parse_lonlat(s: &str) -> Result<LonLat, String> {
    let v = numbers(s, 2)?;
    Ok(LonLat {
        lon: v[0],
        lat: v[1],
    })
}

fn numbers(s: &str, n: usize) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if v.len() != n || v.iter().any(|x| !x.is_finite()) {
        return Err(format!("expected {n} comma-separated numbers"));
    }
    Ok(v)
}

/// The wire encoding the bots speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingArg {
    /// `meridian.v1.bincode`, binary frames.
    #[default]
    Bincode,
    /// `meridian.v1.json`, text frames.
    Json,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::Bincode => Encoding::Bincode,
            EncodingArg::Json => Encoding::Json,
        }
    }
}

/// One load test.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Game WebSocket URL, e.g. ws://127.0.0.1:7000/ws. Repeat to spread the
    /// bots over several shards, round-robin.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Number of bots.
    #[arg(long, default_value_t = 100)]
    pub bots: usize,
    /// Seconds over which all bots connect, evenly spaced.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Seconds of steady state measured after the ramp.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Moves per second per bot.
    #[arg(long, default_value_t = 10.0)]
    pub move_hz: f64,
    /// Where bots walk: min_lon,min_lat,max_lon,max_lat.
    #[arg(long, conflicts_with_all = ["center", "radius_m"])]
    pub bbox: Option<BBox>,
    /// Centre of the walking area, lon,lat [default: the demo world's centre].
    #[arg(long, value_parser = parse_lonlat)]
    pub center: Option<LonLat>,
    /// Radius of the walking area in metres; bots walk in the square of the
    /// same area. [default: the radius giving about 35 bots within 150 m of each]
    #[arg(long)]
    pub radius_m: Option<f64>,
    /// World to join [default: the server's default world].
    #[arg(long)]
    pub world: Option<String>,
    /// Wire encoding.
    #[arg(long, value_enum, default_value = "bincode")]
    pub encoding: EncodingArg,
    /// How many bots decode every frame and measure latency; the others only
    /// count frames and bytes [default: min(bots, 200)].
    #[arg(long)]
    pub probes: Option<usize>,
    /// The ops port's base URL, e.g. http://127.0.0.1:9100, for minting bot tokens.
    #[arg(long)]
    pub ops_url: Option<String>,
    /// The ops port's admin token.
    #[arg(long, env = "OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<String>,
    /// Log in through POST /api/register and /api/login instead of minting
    /// (mind the server's LOGIN_RATE_PER_MIN).
    #[arg(long, conflicts_with = "token_free")]
    pub login: bool,
    /// Only get the tokens (with --login, through the real account API) and
    /// stop: no bot connects. The report gives the token calls' latency, the
    /// bots left without one, and the server's CPU while the calls ran.
    #[arg(long, conflicts_with = "token_free")]
    pub logins_only: bool,
    /// Authenticate with a dummy token in Hello (for the transport baseline).
    #[arg(long)]
    pub token_free: bool,
    /// Bot usernames are <prefix>-<i>.
    #[arg(long, default_value = "bot")]
    pub prefix: String,
    /// Slowest walking speed, m/s.
    #[arg(long, default_value_t = 1.4)]
    pub min_speed: f64,
    /// Fastest walking speed, m/s (keep it below the server's limit).
    #[arg(long, default_value_t = 5.0)]
    pub max_speed: f64,
    /// Fail when (failed connections + errors + disconnects) / bots exceeds this.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// The server's process id for CPU and RSS [default: the process named by --server-name].
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Executable name of the server process to sample.
    #[arg(long, default_value = "meridian")]
    pub server_name: String,
    /// Do not sample the server process.
    #[arg(long)]
    pub no_server_stats: bool,
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// Flag rush: place this many flags on a ring around the area's centre
    /// and send the teams' bots from flag to flag, checking every capture
    /// against the stored history (needs --ops-url and a token; 0: off).
    #[arg(long, default_value_t = 0)]
    pub flag_rush: usize,
    /// Flag rush: seconds a group of bots holds a flag before moving on.
    #[arg(long, default_value_t = 20.0)]
    pub rush_round_s: f64,
    /// Flag rush: the ring's radius in metres.
    #[arg(long, default_value_t = 60.0)]
    pub rush_ring_m: f64,
    /// Flood: this many extra clients send moves at --flood-hz through the
    /// steady state, reconnecting whenever they are kicked; each must be
    /// throttled and kicked (needs minted bots; 0: off).
    #[arg(long, default_value_t = 0)]
    pub flooders: usize,
    /// Flood: moves per second each flooder sends (ten times the shard's
    /// default CLIENT_MSG_RATE).
    #[arg(long, default_value_t = 300.0)]
    pub flood_hz: f64,
}

impl Options {
    /// Defaults for `urls`, as the command line would give them.
    #[must_use]
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            bots: 100,
            ramp: 10.0,
            duration: 30.0,
            move_hz: 10.0,
            bbox: None,
            center: None,
            radius_m: None,
            world: None,
            encoding: EncodingArg::Bincode,
            probes: None,
            ops_url: None,
            ops_token: None,
            login: false,
            logins_only: false,
            token_free: false,
            prefix: "bot".into(),
            min_speed: 1.4,
            max_speed: 5.0,
            max_error_rate: 0.01,
            server_pid: None,
            server_name: "meridian".into(),
            no_server_stats: false,
            quiet: false,
            flag_rush: 0,
            rush_round_s: 20.0,
            rush_ring_m: 60.0,
            flooders: 0,
            flood_hz: 300.0,
        }
    }

    /// The area bots walk in.
    #[must_use]
    pub fn area(&self) -> BBox {
        if let Some(bbox) = self.bbox {
            return bbox;
        }
        let center = self.center.unwrap_or(DEMO_CENTER);
        // Equal area: a circle of radius r and a square of side r·√π. With
        // n bots spread evenly, k neighbours within the AOI radius a need an
        // area of n·π·a²/k.
        let side = match self.radius_m {
            Some(r) => r * std::f64::consts::PI.sqrt(),
            None => {
                AOI_RADIUS_M * (self.bots as f64 * std::f64::consts::PI / DEFAULT_NEIGHBOURS).sqrt()
            }
        };
        BBox::square(center, side.max(10.0))
    }

    /// How many bots are probes.
    #[must_use]
    pub fn probe_count(&self) -> usize {
        self.probes.unwrap_or(200).min(self.bots)
    }

    /// Check the options make a runnable test.
    ///
    /// # Errors
    /// `LoadtestError::Options` naming the problem.
    pub fn validate(&self) -> Result<(), crate::LoadtestError> {
        let bad = |m: &str| Err(crate::LoadtestError::Options(m.into()));
        if self.urls.is_empty() {
            return bad("at least one --url is needed");
        }
        if self.bots == 0 {
            return bad("--bots must be positive");
        }
        if !(self.ramp >= 0.0
            && self.duration > 0.0
            && self.ramp.is_finite()
            && self.duration.is_finite())
        {
            return bad("--ramp must be >= 0 and --duration > 0");
        }
        if !(self.move_hz > 0.0 && self.move_hz <= 30.0) {
            return bad("--move-hz must be in (0, 30]");
        }
        if !(self.min_speed > 0.0 && self.min_speed <= self.max_speed) {
            return bad("--min-speed must be positive and at most --max-speed");
        }
        if self.flag_rush > 0 {
            if self.ops_url.is_none() || self.ops_token.is_none() || self.login || self.token_free {
                return bad("--flag-rush needs minted bots: --ops-url and --ops-token, without --login or --token-free");
            }
            if !(self.rush_round_s.is_finite() && self.rush_round_s >= 1.0) {
                return bad("--rush-round-s must be at least 1");
            }
            let half = self.area().side_m() / 2.0;
            if !(self.rush_ring_m > 0.0 && self.rush_ring_m + 25.0 < half) {
                return bad(
                    "--rush-ring-m must be positive and the ring (and its zones) inside the area",
                );
            }
        }
        if self.flooders > 0 {
            if self.ops_url.is_none() || self.ops_token.is_none() || self.token_free {
                return bad("--flooders needs minted tokens: --ops-url and --ops-token, without --token-free");
            }
            if !(self.flood_hz > 0.0 && self.flood_hz <= 10_000.0) {
                return bad("--flood-hz must be in (0, 10000]");
            }
        }
        if !self.login && !self.token_free && (self.ops_url.is_none() || self.ops_token.is_none()) {
            return bad("bots need tokens: give --ops-url and --ops-token (or OPS_TOKEN), or --login, or --token-free");
        }
        Ok(())
    }
}
