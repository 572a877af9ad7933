//! Startup and shutdown of one shard: open the store, start the worlds, bind
//! the game and ops ports, and on shutdown stop in an order that loses nothing.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Auth, AuthError};
use crate::bus::cells::{CellSync, CHANGES_CAPACITY};
use crate::bus::{Bus, BusError, ControlEvent, LocalBus, RedisBus};
use crate::config::Config;
use crate::net::deadline::{HeaderDeadline, HEADER_TIMEOUT};
use crate::net::{self, Gateway, NetSettings, OtherShards};
use crate::ops::{self, OpsState};
use crate::store::postgres::CAPTURE_PARTITIONS_AHEAD;
use crate::store::RedisCache;
use crate::store::{
    CacheError, CachedStore, CaptureWriter, Database, Flusher, PendingPositions, PgStore, Store,
    StoreError,
};
use crate::world::{Command, Settings, World, WorldHandle};

/// How long shutdown waits for connections to finish their goodbyes.
const CONNECTION_DRAIN: Duration = Duration::from_secs(3);

/// Why the shard could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed to open, migrate or load.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The Redis URL is unusable (Redis being down is not an error).
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
    /// The player sync could not be set up (an invalid `REDIS_URL`).
    #[error("player sync: {0}")]
    Sync(redis::RedisError),
    /// The shard sync could not start (another shard holds this SHARD_ID).
    #[error("shard sync: {0}")]
    Bus(#[from] BusError),
    /// The account service could not start.
    #[error("accounts: {0}")]
    Auth(#[from] AuthError),
    /// The store has no world to serve.
    #[error("the store has no world")]
    NoWorld,
    /// Serving a port failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

/// A bound shard, ready to serve.
pub struct Server {
    config: Config,
    game: TcpListener,
    ops: TcpListener,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// The same bus when it is Redis's, for its presence and shutdown.
    redis_bus: Option<Arc<RedisBus>>,
    auth: Arc<Auth>,
    pending: Arc<PendingPositions>,
    worlds: HashMap<String, WorldHandle>,
    world_tasks: Vec<JoinHandle<()>>,
    /// Players shared with the other shards, with Redis.
    cell_sync: Option<CellSync>,
    /// Where joins look up a player's newest state on another shard.
    handover: Option<RedisCache>,
    default_world: String,
    /// The database, whose migrations `/readyz` checks.
    database: Arc<Database>,
    /// Renders `/metrics`: the process's recorder, installed before the
    /// worlds register their instruments.
    metrics: PrometheusHandle,
    /// Cancelled to stop accepting, kick everyone and stop the ticks.
    stop: CancellationToken,
}

impl Server {
    /// Open the store, seed the demo world on first start, start the worlds and
    /// bind both ports.
    ///
    /// # Errors
    /// `ServerError` if the data directory, store, accounts or a port fail.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        // First, so that a second shard with this id stops before it touches
        // the store.
        let redis_bus = match config.redis_url.as_deref() {
            Some(url) => Some(Arc::new(RedisBus::start(url, &config.shard_id).await?)),
            None => None,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let database = Database::open(
            config.database_url.as_deref(),
            &config.data_dir,
            config.db_pool,
        )
        .await?;
        if config.migrate_on_start {
            database.run().await?;
        }
        let store = database.store();
        crate::demo::seed_if_empty(store.as_ref()).await?;
        let store = CachedStore::wrap(store, config.redis_url.as_deref())?;
        let bus: Arc<dyn Bus> = match &redis_bus {
            Some(bus) => Arc::clone(bus) as Arc<dyn Bus>,
            None => Arc::new(LocalBus::default()),
        };
        let auth = Arc::new(Auth::new(&config, Arc::clone(&store), Arc::clone(&bus)).await?);

        let stop = CancellationToken::new();
        if let Database::Postgres(pg) = &database {
            tokio::spawn(create_partitions_ahead(pg.clone(), stop.clone()));
        }
        let metrics = ops::metrics::recorder();
        tokio::spawn(ops::metrics::upkeep(metrics.clone(), stop.clone()));
        let pending = Arc::new(PendingPositions::default());
        let settings = Settings::from_config(&config);
        let mut worlds = HashMap::new();
        let mut world_tasks = Vec::new();
        let mut defs = store.worlds().await?;
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        let default_world = defs
            .iter()
            .find(|w| w.name == crate::demo::DEMO_WORLD_NAME)
            .or(defs.first())
            .ok_or(ServerError::NoWorld)?
            .name
            .clone();
        // With Redis, every world shares its players with the other shards.
        let (share, changes) = tokio::sync::mpsc::channel(CHANGES_CAPACITY);
        let (captures, capture_queue) = CaptureWriter::queue();
        let teams = store.teams().await?;
        for def in defs {
            let areas = store.areas(def.id).await?;
            let scores = store.team_scores(def.id).await?;
            let objects = store.world_objects(def.id).await?;
            let mut world = World::new(def, &areas, settings.clone(), Arc::clone(&pending));
            world.set_flags(teams.clone(), &scores, &objects);
            world.capture_with(captures.clone());
            if config.redis_url.is_some() {
                world.share_with(share.clone());
            }
            let (handle, task) = world.spawn(stop.clone());
            worlds.insert(handle.name.clone(), handle);
            world_tasks.push(task);
        }
        drop(share);
        let capture_writer = CaptureWriter::spawn(
            capture_queue,
            Arc::clone(&store),
            Arc::clone(&bus),
            worlds
                .values()
                .map(|w| (w.id, w.commands.clone()))
                .collect(),
            stop.clone(),
        );
        world_tasks.push(capture_writer);
        let handover = match &config.redis_url {
            Some(url) => Some(RedisCache::open(url)?),
            None => None,
        };
        let cell_sync = match &config.redis_url {
            Some(url) => Some(
                CellSync::spawn(
                    url,
                    &config.shard_id,
                    settings.view.leave_radius_m,
                    worlds.values().cloned().collect(),
                    changes,
                    stop.clone(),
                )
                .map_err(ServerError::Sync)?,
            ),
            None => None,
        };

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let game = bind(config.game_addr).await?;
        let ops = bind(config.ops_addr).await?;
        if let Some(bus) = &redis_bus {
            let snapshots: Vec<_> = worlds.values().map(|w| w.snapshots.clone()).collect();
            bus.announce(
                game.local_addr().map_err(ServerError::Serve)?,
                ops.local_addr().map_err(ServerError::Serve)?,
                move || {
                    snapshots
                        .iter()
                        .map(|s| s.borrow().population() as u64)
                        .sum()
                },
            );
        }
        Ok(Self {
            config,
            game,
            ops,
            store,
            bus,
            redis_bus,
            auth,
            pending,
            worlds,
            world_tasks,
            cell_sync,
            handover,
            default_world,
            database: Arc::new(database),
            metrics,
            stop,
        })
    }

    /// The bound game address (useful with port 0).
    #[must_use]
    pub fn game_addr(&self) -> SocketAddr {
        self.game
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound ops address.
    #[must_use]
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown` resolves, then stop accepting, kick every client
    /// with `Kicked { reason: Shutdown }`, flush every position and return.
    ///
    /// # Errors
    /// `ServerError::Serve` if a listener fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let game_addr = self.game_addr();
        let ops_addr = self.ops_addr();
        let flush_stop = CancellationToken::new();
        let flusher = Flusher::spawn(
            Arc::clone(&self.store),
            Arc::clone(&self.pending),
            self.config.flush_interval,
            flush_stop.clone(),
        );
        let control = tokio::spawn(forward_control(
            self.bus.subscribe_control(),
            self.worlds.clone(),
            Arc::clone(&self.store),
        ));
        let gateway = Arc::new(Gateway::new(
            self.worlds.clone(),
            self.default_world.clone(),
            Arc::clone(&self.auth),
            Arc::clone(&self.store),
            OtherShards {
                bus: Arc::clone(&self.bus),
                handover: self.handover.clone(),
            },
            NetSettings::from_config(&self.config),
            self.stop.clone(),
        ));
        let app = net::router(Arc::clone(&gateway))
            .merge(auth::router(Arc::clone(&self.auth)))
            // Which connections' `X-Forwarded-For` names the client (`ClientIp`).
            .layer(axum::Extension(Arc::new(
                self.config.trusted_proxies.clone(),
            )));
        let game = axum::serve(
            HeaderDeadline::new(self.game, HEADER_TIMEOUT)
                .tap_io(|io| net::tune_socket(io.get_ref())),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(self.stop.clone().cancelled_owned());
        let ops = axum::serve(
            HeaderDeadline::new(self.ops, HEADER_TIMEOUT),
            ops::router(OpsState {
                store: Arc::clone(&self.store),
                pending: Arc::clone(&self.pending),
                auth: Arc::clone(&self.auth),
                ops_token: self.config.ops_token.as_deref().map(Arc::from),
                default_world: self.default_world.clone(),
                worlds: self.worlds.values().cloned().collect(),
                shard: ops::ShardInfo {
                    game_addr: game_addr.to_string(),
                    ops_addr: ops_addr.to_string(),
                    ..ops::ShardInfo::new(&self.config)
                },
                bus: self.redis_bus.clone(),
                sync: self.cell_sync.as_ref().map(|sync| Arc::clone(&sync.stats)),
                control: Arc::clone(&self.bus),
                metrics: self.metrics.clone(),
                database: Arc::clone(&self.database),
            }),
        )
        .with_graceful_shutdown(self.stop.clone().cancelled_owned());
        let game = tokio::spawn(game.into_future());
        let ops = tokio::spawn(ops.into_future());
        tracing::info!(
            game = %game_addr,
            ops = %ops_addr,
            shard = %self.config.shard_id,
            worlds = self.worlds.len(),
            "meridian serving: WebSocket ws://{game_addr}/ws, ops http://{ops_addr}/healthz"
        );

        let stop = self.stop.clone();
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        tracing::info!("shutting down: closing connections and flushing positions");
        // 1. Stop accepting and tell every world to kick its players; each tick
        //    hands its final positions to the flusher before it ends.
        self.stop.cancel();
        for task in self.world_tasks {
            let _ = task.await;
        }
        control.abort();
        if let Some(sync) = self.cell_sync {
            let _ = sync.task.await;
        }
        // 2. Let connections deliver their Kicked and close frames.
        gateway.tracker.close();
        let _ = tokio::time::timeout(CONNECTION_DRAIN, gateway.tracker.wait()).await;
        // 3. The final flush.
        flush_stop.cancel();
        let _ = flusher.await;
        let served = game.await;
        let _ = ops.await;
        // 4. Last: control events sent during shutdown get out, and the shard
        //    id is released for a successor.
        if let Some(bus) = &self.redis_bus {
            bus.shutdown().await;
        }
        tracing::info!("shutdown complete");
        match served {
            Ok(Err(err)) => Err(ServerError::Serve(err)),
            _ => Ok(()),
        }
    }
}

/// Apply control events from the bus to every world. Area and flag changes
/// are loaded from the store here, so the tick never does I/O.
async fn forward_control(
    mut events: tokio::sync::broadcast::Receiver<ControlEvent>,
    worlds: HashMap<String, WorldHandle>,
    store: Arc<dyn Store>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "control events lagged");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if let ControlEvent::AreasChanged { world_id } = event {
            let Some(world) = worlds.values().find(|w| w.id == world_id) else {
                continue;
            };
            match store.areas(world_id).await {
                Ok(areas) => {
                    let _ = world.commands.send(Command::ReplaceAreas(areas)).await;
                }
                Err(err) => tracing::warn!(error = %err, "cannot reload areas"),
            }
            continue;
        }
        if let ControlEvent::FlagsChanged { world_id } = event {
            let Some(world) = worlds.values().find(|w| w.id == world_id) else {
                continue;
            };
            match store.world_objects(world_id).await {
                Ok(objects) => {
                    let _ = world.commands.send(Command::ReplaceFlags(objects)).await;
                }
                Err(err) => tracing::warn!(error = %err, "cannot reload flags"),
            }
            continue;
        }
        for world in worlds.values() {
            let _ = world.commands.send(Command::Control(event.clone())).await;
        }
    }
}

/// Keep the coming months' `flag_captures` partitions in place while the shard
/// runs (migration creates them at start; a shard may run for months).
async fn create_partitions_ahead(store: PgStore, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(6 * 3600);
    let mut every = tokio::time::interval(EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        match store
            .create_capture_partitions(CAPTURE_PARTITIONS_AHEAD)
            .await
        {
            Ok(0) => {}
            Ok(created) => tracing::info!(created, "flag_captures partitions created"),
            Err(err) => tracing::warn!(error = %err, "cannot create flag_captures partitions"),
        }
    }
}

/// Bind and serve until `shutdown` resolves.
///
/// # Errors
/// `ServerError` if the shard cannot start or a listener fails.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}
