//! Helpers shared by the integration tests: a real shard on port 0 with test
//! worlds, account calls over HTTP, a WebSocket game client, and private
//! PostgreSQL and Redis servers.
#![allow(dead_code)]

pub mod cluster;
pub mod movers;
pub mod pg;
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use geo::{polygon, MultiPolygon};
use meridian_protocol::{AreaKind, ClientMessage, Encoding, LonLat, ServerMessage};
use meridian_server::config::DbPool;
use meridian_server::store::{
    Area, Bounds, Database, MovementMode, PgStore, SqliteStore, Store, StoredPosition, WorldDef,
};
use meridian_server::{Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);

/// The centre of the test worlds (Amsterdam).
pub const CENTER: LonLat = LonLat {
    lon: 4.9,
    lat: 52.37,
};

/// Metres per degree of latitude on the game's sphere.
pub const M_PER_DEG: f64 = 111_194.93;

/// A point `east_m` east and `north_m` north of `from`.
#[must_use]
pub fn offset(from: LonLat, east_m: f64, north_m: f64) -> LonLat {
    LonLat {
        lon: from.lon + east_m / (M_PER_DEG * from.lat.to_radians().cos()),
        lat: from.lat + north_m / M_PER_DEG,
    }
}

fn square(
    world_id: Uuid,
    name: &str,
    kind: AreaKind,
    centre: LonLat,
    half_m: f64,
    props: serde_json::Value,
) -> Area {
    let sw = offset(centre, -half_m, -half_m);
    let ne = offset(centre, half_m, half_m);
    Area {
        id: Uuid::now_v7(),
        world_id,
        name: name.into(),
        kind,
        geometry: MultiPolygon(vec![polygon![
            (x: sw.lon, y: sw.lat), (x: ne.lon, y: sw.lat), (x: ne.lon, y: ne.lat), (x: sw.lon, y: ne.lat),
        ]]),
        properties: props,
    }
}

/// Where the blocked square of the test worlds is (100 m across).
pub fn blocked_centre() -> LonLat {
    offset(CENTER, 300.0, 0.0)
}

/// Where the zone square of the test worlds is (100 m across).
pub fn zone_centre() -> LonLat {
    offset(CENTER, -300.0, 0.0)
}

fn world(name: &str, bounds: Bounds, center: LonLat, mode: MovementMode, speed: f64) -> WorldDef {
    WorldDef {
        id: Uuid::now_v7(),
        name: name.into(),
        bounds,
        center,
        movement_mode: mode,
        max_speed_mps: Some(speed),
    }
}

/// Seed the test worlds:
/// * `arena` (the default: first by name): 10 m/s, a spawn square around
///   `CENTER`, a blocked square 300 m east, a zone 300 m west, bounds ±0.05°.
/// * `fast`: the same map at 200 m/s, for tests that walk far.
/// * `globe`: the whole Earth at 200 m/s, no areas (antimeridian, poles).
/// * `gps`: the arena map in GPS mode.
pub async fn seed_test_worlds(store: &dyn Store) {
    let bounds = Bounds {
        min_lon: CENTER.lon - 0.05,
        min_lat: CENTER.lat - 0.05,
        max_lon: CENTER.lon + 0.05,
        max_lat: CENTER.lat + 0.05,
    };
    for def in [
        world("arena", bounds, CENTER, MovementMode::Input, 10.0),
        world("fast", bounds, CENTER, MovementMode::Input, 200.0),
        world("gps", bounds, CENTER, MovementMode::Gps, 10.0),
    ] {
        store.put_world(&def).await.unwrap();
        for area in [
            square(
                def.id,
                "Spawn",
                AreaKind::Spawn,
                CENTER,
                20.0,
                serde_json::json!({}),
            ),
            square(
                def.id,
                "Wall",
                AreaKind::Blocked,
                blocked_centre(),
                50.0,
                serde_json::json!({}),
            ),
            square(
                def.id,
                "Market",
                AreaKind::Zone,
                zone_centre(),
                50.0,
                serde_json::json!({}),
            ),
        ] {
            store.put_area(&area).await.unwrap();
        }
    }
    let globe = world(
        "globe",
        Bounds::WORLD,
        LonLat { lon: 0.0, lat: 0.0 },
        MovementMode::Input,
        200.0,
    );
    store.put_world(&globe).await.unwrap();
}

/// A shard running in this process on ephemeral ports.
pub struct TestServer {
    pub game: SocketAddr,
    pub ops: SocketAddr,
    pub dir: PathBuf,
    /// The PostgreSQL database it uses, if not the SQLite file in `dir`.
    pub database_url: Option<String>,
    /// Keeps the temporary directory alive when this server created it.
    _tempdir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), meridian_server::ServerError>>>,
    http: reqwest::Client,
}

impl TestServer {
    /// Start a shard with the test worlds and default test settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start a shard, adjusting the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_path_buf();
        let store = open_store(&dir).await;
        seed_test_worlds(&store).await;
        drop(store);
        let mut server = Self::start_in(&dir, adjust).await;
        server._tempdir = Some(tempdir);
        server
    }

    /// Start a shard on PostgreSQL database `url` (migrated and seeded with
    /// the test worlds first), adjusting the configuration first.
    pub async fn start_pg(url: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let store = PgStore::connect(url, DbPool::default()).await.unwrap();
        store.migrate().await.unwrap();
        seed_test_worlds(&store).await;
        store.close().await;
        let tempdir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(tempdir.path(), |config| {
            config.database_url = Some(url.to_owned());
            adjust(config);
        })
        .await;
        server._tempdir = Some(tempdir);
        server
    }

    /// Start a shard on an existing data directory.
    pub async fn start_in(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests(dir.to_path_buf());
        adjust(&mut config);
        let database_url = config.database_url.clone();
        let server = Server::bind(config).await.expect("server binds");
        let (game, ops) = (server.game_addr(), server.ops_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            game,
            ops,
            dir: dir.to_path_buf(),
            database_url,
            _tempdir: None,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Shut down gracefully and wait until the shard has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("shutdown finishes")
                .unwrap()
                .expect("server stops cleanly");
        }
    }

    /// Take the temporary directory, so it outlives this server (for restarts).
    pub fn keep_dir(&mut self) -> tempfile::TempDir {
        self._tempdir
            .take()
            .expect("this server owns its directory")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.game)
    }

    /// POST JSON to the game port; returns (status, body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Register and log in an account; returns (user id, access token).
    pub async fn login(&self, username: &str) -> (Uuid, String) {
        login_at(&self.http, self.game, username).await
    }

    /// Put a player somewhere before they connect (as if they had logged out there).
    pub async fn place(&self, user_id: Uuid, world: &str, at: LonLat) {
        place_in(self.store().await.as_ref(), user_id, world, at).await;
    }

    /// The store this server uses (a second pool on the same database).
    pub async fn store(&self) -> Arc<dyn Store> {
        let pool = DbPool {
            max_connections: 2,
            min_connections: 0,
            ..DbPool::default()
        };
        Database::open(self.database_url.as_deref(), &self.dir, pool)
            .await
            .unwrap()
            .store()
    }

    /// Log in a new account placed at `at` in `world` and connect it.
    pub async fn player(&self, name: &str, world: &str, at: LonLat, encoding: Encoding) -> Client {
        let (user_id, token) = self.login(name).await;
        self.place(user_id, world, at).await;
        let mut client = Client::connect(self.game, encoding, Some(&token), Some(world))
            .await
            .unwrap();
        client.welcome().await;
        client
    }

    /// GET a path on the ops port; returns (status, body).
    pub async fn ops_get(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(&self.http, &format!("http://{}{path}", self.ops)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Store a position for a player in the world named `world`, as if they had
/// logged out there.
pub async fn place_in(store: &dyn Store, user_id: Uuid, world: &str, at: LonLat) {
    let world = store
        .worlds()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == world)
        .unwrap();
    store
        .save_positions(&[StoredPosition {
            user_id,
            world_id: world.id,
            position: at,
            heading: 0.0,
            epoch: 0,
            seq: 0,
            updated_at_ms: 0,
        }])
        .await
        .unwrap();
}

/// Register (or find registered) and log in an account on a shard's game
/// port; returns (user id, access token).
pub async fn login_at(http: &reqwest::Client, game: SocketAddr, username: &str) -> (Uuid, String) {
    let credentials = serde_json::json!({ "username": username, "password": "a-good-password" });
    let url = |path: &str| format!("http://{game}{path}");
    let response = http
        .post(url("/api/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        status == 201 || status == 409,
        "register {username}: {status}"
    );
    let response = http
        .post(url("/api/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "login {username}");
    let body: serde_json::Value = response.json().await.unwrap();
    let user_id = body["user_id"].as_str().unwrap().parse().unwrap();
    (user_id, body["token"].as_str().unwrap().to_owned())
}

/// GET a URL; returns (status, JSON body or null).
pub async fn get_json(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Open the data directory's SQLite store.
pub async fn open_store(dir: &Path) -> SqliteStore {
    let store = SqliteStore::open(&dir.join("meridian.db")).await.unwrap();
    store.migrate().await.unwrap();
    store
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection dropped without a close frame.
    Dropped,
}

/// A game client over a real WebSocket.
pub struct Client {
    pub socket: Socket,
    pub encoding: Encoding,
    /// Set by `welcome()`.
    pub player_id: Uuid,
    pub entity_id: u32,
    pub position: LonLat,
    pub resume_token: String,
    next_seq: u32,
    /// Events `until` skipped, oldest first.
    skipped: Vec<ServerMessage>,
}

impl Client {
    /// Open a socket with a subprotocol, optionally authenticating by header.
    pub async fn connect(
        addr: SocketAddr,
        encoding: Encoding,
        bearer: Option<&str>,
        world: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        Self::connect_raw(addr, Some(encoding.subprotocol()), bearer, world)
            .await
            .map(|socket| Self::wrap(socket, encoding))
    }

    /// Open a socket offering exactly this subprotocol (or none).
    pub async fn connect_raw(
        addr: SocketAddr,
        subprotocol: Option<&str>,
        bearer: Option<&str>,
        world: Option<&str>,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let request = ws_request(addr, subprotocol, bearer, world);
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(socket)
    }

    /// Connect by header over a TCP socket the test set up itself (bound to
    /// another source address, or with a small buffer), and take the
    /// `Welcome`.
    pub async fn connect_over(
        tcp: tokio::net::TcpSocket,
        addr: SocketAddr,
        encoding: Encoding,
        token: &str,
        world: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let stream = tcp.connect(addr).await?;
        let request = ws_request(addr, Some(encoding.subprotocol()), Some(token), Some(world));
        let (socket, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        let mut client = Self::wrap(socket, encoding);
        client.welcome().await;
        Ok(client)
    }

    pub fn wrap(socket: Socket, encoding: Encoding) -> Self {
        Self {
            socket,
            encoding,
            player_id: Uuid::nil(),
            entity_id: 0,
            position: LonLat { lon: 0.0, lat: 0.0 },
            resume_token: String::new(),
            next_seq: 1,
            skipped: Vec::new(),
        }
    }

    /// Connect and authenticate with a `Hello` (no header).
    pub async fn hello(
        addr: SocketAddr,
        encoding: Encoding,
        token: &str,
        world: Option<&str>,
        resume: Option<&str>,
    ) -> Self {
        let mut client = Self::connect(addr, encoding, None, None).await.unwrap();
        client
            .send(&ClientMessage::Hello {
                token: token.into(),
                world: world.map(Into::into),
                resume: resume.map(Into::into),
            })
            .await;
        client
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        let frame = self.encoding.encode(message);
        self.send_frame(frame).await;
    }

    /// Send raw bytes in this socket's frame type.
    pub async fn send_frame(&mut self, bytes: Vec<u8>) {
        let message = if self.encoding.is_text() {
            Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
        } else {
            Message::Binary(bytes.into())
        };
        self.socket.send(message).await.unwrap();
    }

    /// The next server message, or how the socket closed.
    pub async fn next(&mut self) -> Result<ServerMessage, Closed> {
        self.next_within(WAIT).await
    }

    /// Skip messages until one matches; panics on close or timeout.
    ///
    /// Events skipped on the way (anything but `Update`s, which are state and
    /// superseded by later ones) are kept, and later calls look at them first.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        if let Some(i) = self.skipped.iter().position(|m| pick(m).is_some()) {
            let message = self.skipped.remove(i);
            return pick(&message).expect("matched above");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.next())
                .await
                .expect("the awaited message never came")
                .unwrap_or_else(|closed| panic!("socket closed while waiting: {closed:?}"));
            if let Some(found) = pick(&message) {
                return found;
            }
            if !matches!(message, ServerMessage::Update(_)) {
                self.skipped.push(message);
            }
        }
    }

    /// Wait for `Welcome` and record what it says, and for the `Flags` that
    /// follow it (kept for `until`), so tests read on from a clean slate.
    pub async fn welcome(&mut self) {
        let (player_id, entity_id, position, resume_token) = self
            .until(|m| match m {
                ServerMessage::Welcome {
                    player_id,
                    entity_id,
                    position,
                    resume_token,
                    ..
                } => Some((*player_id, *entity_id, *position, resume_token.clone())),
                _ => None,
            })
            .await;
        self.player_id = player_id;
        self.entity_id = entity_id;
        self.position = position;
        self.resume_token = resume_token;
        let flags = self
            .until(|m| matches!(m, ServerMessage::Flags { .. }).then(|| m.clone()))
            .await;
        self.skipped.push(flags);
    }

    /// Send a move; returns its seq.
    pub async fn move_to(&mut self, at: LonLat) -> u32 {
        self.move_raw(at.lon, at.lat, None).await
    }

    pub async fn move_raw(&mut self, lon: f64, lat: f64, accuracy_m: Option<f32>) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send(&ClientMessage::Move {
            seq,
            lon,
            lat,
            heading: 90.0,
            accuracy_m,
            fix_time_ms: None,
        })
        .await;
        seq
    }

    /// Wait until an `Update` acknowledges `seq`.
    /// Wait until `player` (an account) comes into view; returns the entity
    /// id this client sees it under.
    pub async fn entered_as(&mut self, player: Uuid) -> u32 {
        self.until(|m| match m {
            ServerMessage::Update(u) => u
                .entered
                .iter()
                .find(|e| e.player_id == player)
                .map(|e| e.state.id),
            _ => None,
        })
        .await
    }

    pub async fn acked(&mut self, seq: u32) {
        self.until(|m| match m {
            ServerMessage::Update(u) if u.ack_seq >= seq => Some(()),
            _ => None,
        })
        .await;
    }

    /// Walk to `to` in steps of `step_m` metres at `hz` moves per second, and
    /// wait for the last move's ack.
    pub async fn walk(&mut self, to: LonLat, step_m: f64, hz: f64) {
        let from = self.position;
        let total = meridian_server::world::geodesy::distance_m(from, to);
        let steps = (total / step_m).ceil().max(1.0) as usize;
        // Go the short way round: across ±180 the client sends longitudes
        // past 180, which the server wraps.
        let dlon = match to.lon - from.lon {
            d if d > 180.0 => d - 360.0,
            d if d < -180.0 => d + 360.0,
            d => d,
        };
        let mut seq = 0;
        for i in 1..=steps {
            let t = i as f64 / steps as f64;
            let p = LonLat {
                lon: from.lon + dlon * t,
                lat: from.lat + (to.lat - from.lat) * t,
            };
            seq = self.move_to(p).await;
            tokio::time::sleep(Duration::from_secs_f64(1.0 / hz)).await;
        }
        self.acked(seq).await;
        self.position = to;
    }

    /// Wait for the socket to close; returns the close code (skipping messages).
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next().await {
                Ok(_) => continue,
                Err(closed) => return closed,
            }
        }
    }
}

/// The close code as a number.
pub fn code(code: CloseCode) -> u16 {
    u16::from(code)
}

impl Client {
    /// Number this client's moves on from `last_seq`, as a client that resumes
    /// its session does with the seqs it sent on the old socket.
    pub fn continue_seq(&mut self, last_seq: u32) {
        self.next_seq = last_seq + 1;
    }

    /// The seq of the last move this client sent (0 before any).
    pub fn last_seq(&self) -> u32 {
        self.next_seq - 1
    }
}

/// The upgrade request for `/ws` on `addr`, with a subprotocol, a bearer
/// token and a world when given.
fn ws_request(
    addr: SocketAddr,
    subprotocol: Option<&str>,
    bearer: Option<&str>,
    world: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = match world {
        Some(world) => format!("ws://{addr}/ws?world={world}"),
        None => format!("ws://{addr}/ws"),
    };
    let mut request = url.into_client_request().unwrap();
    if let Some(protocol) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    request
}

/// A free loopback port (bound and released, so a child process can take it).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The real `meridian serve` binary running as a child process, so tests can
/// signal it (SIGTERM, SIGKILL) like an orchestrator would.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub game: SocketAddr,
    pub ops: SocketAddr,
    http: reqwest::Client,
}

impl ServerProcess {
    /// Start `meridian serve` on `dir` (which must already hold the worlds) on
    /// free loopback ports, and wait until `/healthz` answers.
    pub async fn start(dir: &Path, flush_interval: Duration) -> Self {
        Self::start_with_env(dir, flush_interval, &[]).await
    }

    /// `meridian serve` on `dir` on free loopback ports, with no setting
    /// from this process's environment but `vars`.
    pub fn command(
        dir: &Path,
        vars: &[(&str, &str)],
    ) -> (std::process::Command, SocketAddr, SocketAddr) {
        let (game, ops) = (free_addr(), free_addr());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
        command
            .arg("serve")
            .env_remove("MERIDIAN_CONFIG")
            .env_remove("SHARD_ID")
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", dir)
            .env("GAME_ADDR", game.to_string())
            .env("OPS_ADDR", ops.to_string())
            .env("JWT_SECRET", "process-test-secret-0123456789abcdef")
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::null());
        (command, game, ops)
    }

    /// Like `start`, with more environment variables.
    pub async fn start_with_env(
        dir: &Path,
        flush_interval: Duration,
        vars: &[(&str, &str)],
    ) -> Self {
        Self::start_with_output(dir, flush_interval, vars, None).await
    }

    /// Like `start_with_env`, with stdout and stderr written to `log` if given.
    pub async fn start_with_output(
        dir: &Path,
        flush_interval: Duration,
        vars: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let flush = flush_interval.as_millis().to_string();
        let (mut command, game, ops) = Self::command(dir, vars);
        if let Some(log) = log {
            let file = std::fs::File::create(log).unwrap();
            command.stdout(file.try_clone().unwrap()).stderr(file);
        }
        let child = command
            .env("FLUSH_INTERVAL_MS", flush)
            .spawn()
            .expect("the meridian binary starts");
        let mut server = Self {
            child,
            game,
            ops,
            http: reqwest::Client::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("meridian serve exited during startup: {status}");
            }
            let healthy = server
                .http
                .get(format!("http://{ops}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "meridian serve never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Register (if needed) and log in an account; returns (user id, access token).
    pub async fn login(&self, username: &str) -> (Uuid, String) {
        login_at(&self.http, self.game, username).await
    }

    /// GET a path on the ops port; returns (status, body).
    pub async fn ops_get(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(&self.http, &format!("http://{}{path}", self.ops)).await
    }

    /// SIGKILL the process (no chance to flush) and reap it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Send SIGTERM, as an orchestrator does before stopping a container.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Wait for the process to exit on its own; panics after `within`.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "meridian serve did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl TestServer {
    /// Log in as a guest: no password hashing, so it is fast enough for tests
    /// that need many accounts. The same `device_id` logs into the same account
    /// again with a new session. Returns (user id, access token).
    pub async fn guest(&self, device_id: Option<&str>) -> (Uuid, String) {
        let body = match device_id {
            Some(device_id) => serde_json::json!({ "device_id": device_id }),
            None => serde_json::json!({}),
        };
        let (status, body) = self.post("/api/guest", body).await;
        assert_eq!(status, 200, "guest login: {body}");
        let user_id = body["user_id"].as_str().unwrap().parse().unwrap();
        (user_id, body["token"].as_str().unwrap().to_owned())
    }

    /// A new guest placed at `at` in `world`, connected by header and welcomed.
    pub async fn guest_player(&self, world: &str, at: LonLat, encoding: Encoding) -> Client {
        let (user_id, token) = self.guest(None).await;
        self.place(user_id, world, at).await;
        let mut client = Client::connect(self.game, encoding, Some(&token), Some(world))
            .await
            .unwrap();
        client.welcome().await;
        client
    }

    /// POST to the game port with `Authorization: Bearer <token>` and no body;
    /// returns the status.
    pub async fn post_bearer(&self, path: &str, token: &str) -> u16 {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Client {
    /// Like `next`, but waiting up to `within` (for timeouts longer than `WAIT`).
    pub async fn next_within(&mut self, within: Duration) -> Result<ServerMessage, Closed> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("no message from the server in time");
            let bytes = match frame {
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(Message::Close(frame))) => {
                    return Err(Closed::Code(frame.map_or(1005, |f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Closed::Dropped),
            };
            return Ok(self
                .encoding
                .decode_server(&bytes)
                .expect("server frames decode"));
        }
    }
}

impl TestServer {
    /// POST JSON to the ops port, with `Authorization: Bearer <token>` if given;
    /// returns (status, body).
    pub async fn ops_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.ops_request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Any request to the ops port, with a JSON body and `Authorization:
    /// Bearer <token>` if given; returns (status, body, `Null` if not JSON).
    pub async fn ops_request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.ops));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }
}

impl TestServer {
    /// A new guest of `team` placed at `at` in `world`, connected and welcomed.
    pub async fn team_player(&self, team: &str, world: &str, at: LonLat) -> Client {
        let (status, body) = self
            .post("/api/guest", serde_json::json!({ "team": team }))
            .await;
        assert_eq!(status, 200, "guest login: {body}");
        assert_eq!(body["team"], team, "{body}");
        let user_id = body["user_id"].as_str().unwrap().parse().unwrap();
        self.place(user_id, world, at).await;
        let token = body["token"].as_str().unwrap();
        let mut client = Client::connect(self.game, Encoding::Json, Some(token), Some(world))
            .await
            .unwrap();
        client.welcome().await;
        client
    }
}

impl Client {
    /// Wait for a `FlagEvent` about `flag` whose change `pick` accepts.
    pub async fn flag_event<T>(
        &mut self,
        flag: Uuid,
        mut pick: impl FnMut(&meridian_protocol::FlagChange) -> Option<T>,
    ) -> T {
        self.until(|m| match m {
            ServerMessage::FlagEvent {
                flag_id, change, ..
            } if *flag_id == flag => pick(change),
            _ => None,
        })
        .await
    }

    /// Read messages for `within`, panicking if `bad` matches one.
    pub async fn never(
        &mut self,
        within: Duration,
        what: &str,
        mut bad: impl FnMut(&ServerMessage) -> bool,
    ) {
        assert!(
            !self.skipped.iter().any(&mut bad),
            "{what} (already received)"
        );
        let deadline = tokio::time::Instant::now() + within;
        // The inner wait is longer, so the outer deadline is what ends it.
        let inner = within + Duration::from_secs(1);
        while let Ok(message) = tokio::time::timeout_at(deadline, self.next_within(inner)).await {
            let Ok(message) = message else {
                return;
            };
            assert!(!bad(&message), "{what}: {message:?}");
            if !matches!(message, ServerMessage::Update(_)) {
                self.skipped.push(message);
            }
        }
    }
}

/// The id of the world named `name`.
pub async fn world_id(store: &dyn Store, name: &str) -> Uuid {
    store
        .worlds()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no world named {name}"))
        .id
}

impl TestServer {
    /// Create a flag through the admin API (with `token`); returns its id.
    pub async fn create_flag(
        &self,
        token: &str,
        properties: serde_json::Value,
        at: LonLat,
    ) -> Uuid {
        create_flag_at(&self.http, self.ops, token, properties, at).await
    }
}

/// Create a flag through the admin API of the ops port `ops`; returns its id.
pub async fn create_flag_at(
    http: &reqwest::Client,
    ops: SocketAddr,
    token: &str,
    properties: serde_json::Value,
    at: LonLat,
) -> Uuid {
    let response = http
        .post(format!("http://{ops}/admin/flags"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "type": "Feature",
            "geometry": { "type": "Point", "coordinates": [at.lon, at.lat] },
            "properties": properties,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

impl TestServer {
    /// `/api/status`'s entry for the world named `name`.
    pub async fn world_status(&self, name: &str) -> serde_json::Value {
        let (_, status) = self.ops_get("/api/status").await;
        status["worlds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no world {name} in {status}"))
            .clone()
    }

    /// The value of the `/metrics` sample written exactly `series` (a name
    /// and its labels, e.g. `meridian_connections`); 0 if there is none.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.ops))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}
