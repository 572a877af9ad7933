//! The shard's configuration: one validated struct, built from defaults, then an
//! optional TOML file, then environment variables, then command-line flags (each
//! later source wins), and passed explicitly to everything that needs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::net::forwarded::{InvalidProxy, TrustedProxies};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `meridian serve` flags. Every flag is also an environment variable and a
/// key of the optional TOML file (lower-case, e.g. `tick_hz = 20`).
///
/// Fields are `Option`s so that "not given" can fall back to the TOML file and
/// then to the default; the defaults live in `Config::default()` and are quoted in
/// each flag's help.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (flags and environment win over it).
    #[arg(long, env = "MERIDIAN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Game port: WebSocket `/ws` and the account API `/api/*` [default: 127.0.0.1:7000].
    #[arg(long, env = "GAME_ADDR")]
    pub game_addr: Option<SocketAddr>,
    /// Ops port: `/healthz`, `/readyz` [default: 127.0.0.1:9100]. Keep it private.
    #[arg(long, env = "OPS_ADDR")]
    pub ops_addr: Option<SocketAddr>,
    /// Directory for the embedded SQLite database and the development JWT secret [default: ./data].
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This shard's name (letters, digits, `.`, `_`, `-`), shown to clients in
    /// `Welcome` [default: shard-1]. Required with REDIS_URL, and different on
    /// every shard: a shard refuses to start while another holds its id.
    #[arg(long, env = "SHARD_ID")]
    pub shard_id: Option<String>,
    /// World ticks per second, 1..=60 [default: 20].
    #[arg(long, env = "TICK_HZ")]
    pub tick_hz: Option<u8>,
    /// How often dirty positions are written to the store, in ms [default: 1000].
    #[arg(long, env = "FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Area-of-interest radius in metres: players see others within it [default: 150].
    #[arg(long, env = "AOI_RADIUS_M")]
    pub aoi_radius_m: Option<f64>,
    /// Most entities a player sees at once, nearest first [default: 64].
    #[arg(long, env = "AOI_MAX")]
    pub aoi_max: Option<usize>,
    /// Open game sockets allowed per client address; 0 is no limit [default: 1024].
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Load balancers to believe about the client's address, as a
    /// comma-separated list of addresses and networks (`10.0.0.0/8,
    /// 192.168.1.7`). A connection from one of them is counted under the
    /// rightmost `X-Forwarded-For` entry that is not one of them, for
    /// MAX_CONNECTIONS_PER_ADDRESS and LOGIN_RATE_PER_MIN [default: none:
    /// the header is ignored].
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// How far `nearby` chat carries, in metres; at most AOI_RADIUS_M [default: 100].
    #[arg(long, env = "CHAT_RADIUS_M")]
    pub chat_radius_m: Option<f64>,
    /// Speed limit in m/s for worlds that do not set their own [default: 10].
    #[arg(long, env = "MAX_SPEED_MPS")]
    pub max_speed_mps: Option<f64>,
    /// HMAC secret for access tokens (at least 32 bytes). Without it a development
    /// secret is generated and kept in DATA_DIR, with a warning.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// How long a dropped client may resume its session, in ms [default: 20000].
    #[arg(long, env = "RESUME_GRACE_MS")]
    pub resume_grace_ms: Option<u64>,
    /// Close sockets that send nothing for this long, in ms [default: 30000].
    #[arg(long, env = "IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Messages per second a connection may send (burst: twice that) [default: 30].
    #[arg(long, env = "CLIENT_MSG_RATE")]
    pub client_msg_rate: Option<u32>,
    /// Login/register/guest/refresh attempts per minute per client address,
    /// and failed logins per minute per account [default: 20].
    #[arg(long, env = "LOGIN_RATE_PER_MIN")]
    pub login_rate_per_min: Option<u32>,
    /// Access-token lifetime in seconds [default: 900].
    #[arg(long, env = "TOKEN_TTL_S")]
    pub token_ttl_s: Option<u64>,
    /// Log format [default: pretty].
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Bearer token for the ops port's admin API and position endpoints (at
    /// least 16 bytes). Without it only admin accounts' access tokens get in.
    #[arg(long, env = "OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<String>,
    /// PostgreSQL + PostGIS store, e.g. `postgres://user:pass@host/db`
    /// [default: none: the embedded SQLite store in DATA_DIR]. Requires JWT_SECRET.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis for the shards sharing it (one world: each other's players,
    /// world chat, control events, which shards are alive) and for caching
    /// sessions and profiles, e.g. `redis://host:6379` [default: none: one
    /// shard alone]. Requires SHARD_ID.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Most PostgreSQL connections in the pool [default: 10].
    #[arg(long, env = "DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// PostgreSQL connections kept open [default: 2].
    #[arg(long, env = "DB_MIN_CONNECTIONS")]
    pub db_min_connections: Option<u32>,
    /// Seconds a call waits for a pooled PostgreSQL connection [default: 30].
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT")]
    pub db_acquire_timeout: Option<u64>,
    /// Do not apply pending migrations on start (run `meridian migrate run` instead).
    #[arg(long, env = "NO_MIGRATE")]
    pub no_migrate: bool,
}

/// The `meridian migrate` arguments: which database, as `serve` would pick it.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: MigrateAction,
    /// PostgreSQL URL; without it, the embedded SQLite store in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Where the embedded database lives [default: ./data].
    #[arg(long, env = "DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// A `meridian migrate` action.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Run,
    /// Revert the latest applied migration, or every one newer than --target.
    Revert {
        /// Keep migrations up to this version (0 reverts everything).
        #[arg(long)]
        target: Option<i64>,
    },
    /// List every migration and whether it is applied, pending or edited.
    Info,
}

/// The validated configuration of one shard.
#[derive(Debug, Clone)]
pub struct Config {
    /// Game port address (WebSocket and account API).
    pub game_addr: SocketAddr,
    /// Ops port address (health and readiness).
    pub ops_addr: SocketAddr,
    /// Where the embedded database and development secret live.
    pub data_dir: PathBuf,
    /// This shard's name.
    pub shard_id: String,
    /// Ticks per second.
    pub tick_hz: u8,
    /// Interval between position flushes.
    pub flush_interval: Duration,
    /// Area-of-interest radius in metres.
    pub aoi_radius_m: f64,
    /// Most entities one player sees.
    pub aoi_max: usize,
    /// How far `nearby` chat carries, in metres.
    pub chat_radius_m: f64,
    /// Open game sockets allowed per client address (0: no limit).
    pub max_connections_per_address: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Default speed limit in m/s.
    pub max_speed_mps: f64,
    /// The JWT secret, if configured; `None` means "generate a development one".
    pub jwt_secret: Option<String>,
    /// Grace period for resuming a dropped session.
    pub resume_grace: Duration,
    /// Idle timeout for sockets.
    pub idle_timeout: Duration,
    /// Messages per second per connection.
    pub client_msg_rate: u32,
    /// Account API attempts per minute per address, and failed logins per account.
    pub login_rate_per_min: u32,
    /// Access-token lifetime.
    pub token_ttl: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// The admin API's bearer token; `None` leaves it to admin accounts.
    pub ops_token: Option<String>,
    /// PostgreSQL URL; `None` selects the embedded SQLite store.
    pub database_url: Option<String>,
    /// Redis URL for sessions and caches; `None` keeps them in the database only.
    pub redis_url: Option<String>,
    /// PostgreSQL pool size limits and acquire timeout.
    pub db_pool: DbPool,
    /// Apply pending migrations on start.
    pub migrate_on_start: bool,
}

/// PostgreSQL connection pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbPool {
    /// Most open connections.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a call waits for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for DbPool {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 2,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            game_addr: ([127, 0, 0, 1], 7000).into(),
            ops_addr: ([127, 0, 0, 1], 9100).into(),
            data_dir: PathBuf::from("./data"),
            shard_id: "shard-1".into(),
            tick_hz: 20,
            flush_interval: Duration::from_millis(1000),
            aoi_radius_m: 150.0,
            aoi_max: 64,
            chat_radius_m: 100.0,
            max_connections_per_address: 1024,
            trusted_proxies: TrustedProxies::default(),
            max_speed_mps: 10.0,
            jwt_secret: None,
            resume_grace: Duration::from_millis(20_000),
            idle_timeout: Duration::from_millis(30_000),
            client_msg_rate: 30,
            login_rate_per_min: 20,
            token_ttl: Duration::from_secs(900),
            log_format: LogFormat::Pretty,
            ops_token: None,
            database_url: None,
            redis_url: None,
            db_pool: DbPool::default(),
            migrate_on_start: true,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServeArgs {
    /// Layer these arguments over the TOML file (if any) and the defaults, and
    /// validate the result.
    ///
    /// # Errors
    /// `ConfigError` if the file cannot be read or parsed, or a value is out of range.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let d = Config::default();
        // Flags and environment (`self`) win over the file, which wins over defaults.
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or(file.$field.clone())
            };
        }
        // An empty value (`OPS_TOKEN=` in a compose file) means "not set".
        macro_rules! pick_text {
            ($field:ident) => {
                pick!($field).filter(|value: &String| !value.is_empty())
            };
        }
        let config = Config {
            game_addr: pick!(game_addr).unwrap_or(d.game_addr),
            ops_addr: pick!(ops_addr).unwrap_or(d.ops_addr),
            data_dir: pick!(data_dir).unwrap_or(d.data_dir),
            shard_id: pick_text!(shard_id).unwrap_or(d.shard_id),
            tick_hz: pick!(tick_hz).unwrap_or(d.tick_hz),
            flush_interval: pick!(flush_interval_ms)
                .map_or(d.flush_interval, Duration::from_millis),
            aoi_radius_m: pick!(aoi_radius_m).unwrap_or(d.aoi_radius_m),
            aoi_max: pick!(aoi_max).unwrap_or(d.aoi_max),
            chat_radius_m: pick!(chat_radius_m).unwrap_or(d.chat_radius_m),
            max_connections_per_address: pick!(max_connections_per_address)
                .unwrap_or(d.max_connections_per_address),
            trusted_proxies: match pick!(trusted_proxies) {
                Some(list) => list
                    .parse()
                    .map_err(|e: InvalidProxy| ConfigError::Invalid {
                        name: "TRUSTED_PROXIES",
                        reason: e.to_string(),
                    })?,
                None => d.trusted_proxies,
            },
            max_speed_mps: pick!(max_speed_mps).unwrap_or(d.max_speed_mps),
            jwt_secret: pick_text!(jwt_secret),
            resume_grace: pick!(resume_grace_ms).map_or(d.resume_grace, Duration::from_millis),
            idle_timeout: pick!(idle_timeout_ms).map_or(d.idle_timeout, Duration::from_millis),
            client_msg_rate: pick!(client_msg_rate).unwrap_or(d.client_msg_rate),
            login_rate_per_min: pick!(login_rate_per_min).unwrap_or(d.login_rate_per_min),
            token_ttl: pick!(token_ttl_s).map_or(d.token_ttl, Duration::from_secs),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            ops_token: pick_text!(ops_token),
            database_url: pick_text!(database_url),
            redis_url: pick_text!(redis_url),
            db_pool: DbPool {
                max_connections: pick!(db_max_connections).unwrap_or(d.db_pool.max_connections),
                min_connections: pick!(db_min_connections).unwrap_or(d.db_pool.min_connections),
                acquire_timeout: pick!(db_acquire_timeout)
                    .map_or(d.db_pool.acquire_timeout, Duration::from_secs),
            },
            migrate_on_start: !(self.no_migrate || file.no_migrate),
        };
        config.validate()?;
        if config.redis_url.is_some() && pick_text!(shard_id).is_none() {
            // Shards sharing a Redis are told apart by their ids, and the
            // default one would be the same on every shard.
            return Err(ConfigError::Invalid {
                name: "SHARD_ID",
                reason: "is required when REDIS_URL is set (a different one for every shard)"
                    .into(),
            });
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

impl Config {
    /// Check ranges that the types do not express.
    ///
    /// # Errors
    /// `ConfigError::Invalid` naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(name: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                name,
                reason: reason.into(),
            })
        }
        if !(1..=60).contains(&self.tick_hz) {
            return invalid("TICK_HZ", "must be in 1..=60");
        }
        if self.flush_interval < Duration::from_millis(10) {
            return invalid("FLUSH_INTERVAL_MS", "must be at least 10");
        }
        if !(self.aoi_radius_m.is_finite()
            && self.aoi_radius_m >= 1.0
            && self.aoi_radius_m <= 10_000.0)
        {
            return invalid("AOI_RADIUS_M", "must be between 1 and 10000 metres");
        }
        // Nearby chat is found through the same grid and cell channels as
        // the area of interest, which reach no farther.
        if !(self.chat_radius_m.is_finite()
            && self.chat_radius_m >= 1.0
            && self.chat_radius_m <= self.aoi_radius_m)
        {
            return invalid("CHAT_RADIUS_M", "must be between 1 metre and AOI_RADIUS_M");
        }
        if !(1..=1024).contains(&self.aoi_max) {
            return invalid("AOI_MAX", "must be in 1..=1024");
        }
        if !(self.max_speed_mps.is_finite() && self.max_speed_mps > 0.0) {
            return invalid("MAX_SPEED_MPS", "must be a positive number");
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return invalid("JWT_SECRET", "must be at least 32 bytes");
            }
        }
        if let Some(token) = &self.ops_token {
            if token.len() < 16 {
                return invalid("OPS_TOKEN", "must be at least 16 bytes");
            }
        }
        if self.client_msg_rate == 0 {
            return invalid("CLIENT_MSG_RATE", "must be positive");
        }
        if self.login_rate_per_min == 0 {
            return invalid("LOGIN_RATE_PER_MIN", "must be positive");
        }
        if self.database_url.is_some() && self.jwt_secret.is_none() {
            // Shards sharing a database must sign with one secret, and a
            // development secret kept in one shard's DATA_DIR is not that.
            return invalid(
                "JWT_SECRET",
                "is required when DATABASE_URL is set (at least 32 bytes, the same on every shard)",
            );
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid("DATABASE_URL", "must be a postgres:// URL");
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return invalid("REDIS_URL", "must be a redis:// or rediss:// URL");
            }
        }
        let pool = self.db_pool;
        if pool.max_connections == 0 || pool.min_connections > pool.max_connections {
            return invalid(
                "DB_MAX_CONNECTIONS",
                "must be positive and at least DB_MIN_CONNECTIONS",
            );
        }
        if pool.acquire_timeout.is_zero() {
            return invalid("DB_ACQUIRE_TIMEOUT", "must be at least 1 second");
        }
        if self.shard_id.is_empty() || self.shard_id.len() > 64 {
            return invalid("SHARD_ID", "must be 1 to 64 characters");
        }
        // The id is part of Redis keys (`meridian:shard:{id}:owner`): a colon
        // could make one shard's key another's.
        if !self
            .shard_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid(
                "SHARD_ID",
                "may hold only letters, digits, '.', '_' and '-'",
            );
        }
        Ok(())
    }

    /// The tick period.
    #[must_use]
    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_hz))
    }

    /// A configuration for tests: ephemeral ports on loopback, everything else default.
    #[must_use]
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            game_addr: ([127, 0, 0, 1], 0).into(),
            ops_addr: ([127, 0, 0, 1], 0).into(),
            data_dir,
            jwt_secret: Some("test-secret-test-secret-test-secret-0123".into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meridian.toml");
        std::fs::write(&path, "tick_hz = 10\naoi_max = 32\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            tick_hz: Some(30),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.tick_hz, 30);
        assert_eq!(config.aoi_max, 32);
        assert_eq!(config.aoi_radius_m, 150.0);
    }

    #[test]
    fn empty_secrets_and_urls_are_unset() {
        let args = ServeArgs {
            ops_token: Some(String::new()),
            jwt_secret: Some(String::new()),
            redis_url: Some(String::new()),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.ops_token, None);
        assert_eq!(config.jwt_secret, None);
        assert_eq!(config.redis_url, None);
    }

    #[test]
    fn a_database_url_without_a_jwt_secret_is_refused() {
        let args = ServeArgs {
            database_url: Some("postgres://meridian@localhost/meridian".into()),
            ..ServeArgs::default()
        };
        let error = args.into_config().unwrap_err().to_string();
        assert!(error.contains("JWT_SECRET"), "{error}");
        assert!(error.contains("DATABASE_URL"), "{error}");
        let args = ServeArgs {
            database_url: Some("postgres://meridian@localhost/meridian".into()),
            jwt_secret: Some("x".repeat(32)),
            db_max_connections: Some(4),
            db_min_connections: Some(1),
            db_acquire_timeout: Some(5),
            no_migrate: true,
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.db_pool.max_connections, 4);
        assert_eq!(config.db_pool.min_connections, 1);
        assert_eq!(config.db_pool.acquire_timeout, Duration::from_secs(5));
        assert!(!config.migrate_on_start);
    }

    #[test]
    fn a_redis_url_needs_an_explicit_shard_id() {
        let args = ServeArgs {
            redis_url: Some("redis://localhost:6379".into()),
            ..ServeArgs::default()
        };
        let error = args.into_config().unwrap_err().to_string();
        assert!(error.contains("SHARD_ID"), "{error}");
        assert!(error.contains("REDIS_URL"), "{error}");
        let args = ServeArgs {
            redis_url: Some("redis://localhost:6379".into()),
            shard_id: Some("shard-a".into()),
            ..ServeArgs::default()
        };
        assert_eq!(args.into_config().unwrap().shard_id, "shard-a");
        let args = ServeArgs {
            shard_id: Some("a:owner".into()),
            ..ServeArgs::default()
        };
        let error = args.into_config().unwrap_err().to_string();
        assert!(error.contains("SHARD_ID"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let args = ServeArgs {
            tick_hz: Some(0),
            ..ServeArgs::default()
        };
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("TICK_HZ"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(matches!(args.into_config(), Err(ConfigError::Parse { .. })));
        let args = ServeArgs {
            ops_token: Some("too-short".into()),
            ..ServeArgs::default()
        };
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("OPS_TOKEN"), "{err}");
        let args = ServeArgs {
            trusted_proxies: Some("10.0.0.0/8, lb.internal".into()),
            ..ServeArgs::default()
        };
        let err = args.into_config().unwrap_err().to_string();
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("lb.internal"),
            "{err}"
        );
    }

    #[test]
    fn trusted_proxies_come_from_a_list() {
        let args = ServeArgs {
            trusted_proxies: Some("10.0.0.0/8,127.0.0.1".into()),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(
            config.trusted_proxies,
            "10.0.0.0/8, 127.0.0.1/32".parse().unwrap()
        );
        assert!(Config::default().trusted_proxies.is_empty());
    }
}
