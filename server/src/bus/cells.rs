//! Cross-shard player sync over Redis pub/sub, by geographic cell.
//!
//! The world is cut into H3 cells larger than the area of interest. Each tick,
//! for every cell in which this shard's players changed, one bincode batch of
//! them goes to `meridian:{world}:cell:{cell}`, all of a tick's publishes in one
//! pipelined round trip, and the cell's snapshot key (a hash, one field per
//! shard holding all its players in the cell) is refreshed. The shard
//! subscribes to exactly the cells its players' areas of interest touch (a
//! player's cell and its neighbours), keeps a cell for a while after the last
//! player needing it left (hysteresis), fills a newly subscribed cell from its
//! snapshot key, ignores its own messages, and hands what it hears to the
//! worlds as ghosts.
//!
//! World chat rides along: each world has a channel `meridian:{world}:chat`
//! that every shard subscribes to while connected. `nearby` chat goes on the
//! channel of the cell it was said in (`CellMessage::Chat`), so it reaches
//! exactly the shards with players near it. Chat is not kept: a line said
//! while Redis is away reaches this shard's players only.
//!
//! Redis going away ends the subscription stream (it does not reconnect by
//! itself): the task then reconnects with backoff, resubscribes and refills
//! every cell, and republishes everything it holds. Messages published during
//! the gap are lost and counted as such by the others' ghost TTLs, which heal.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use h3o::{CellIndex, LatLng, Resolution};
use meridian_protocol::LonLat;
use redis::aio::{MultiplexedConnection, PubSubSink};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::redis::Backoff;
use crate::store::now_ms;
use crate::world::{ChatLine, Command, LocalChanges, RemotePlayer, Shared, WorldHandle, GHOST_TTL};

/// How long a cell stays subscribed after the last player needing it left, so
/// a player walking along a cell border does not churn subscriptions.
const KEEP_CELL: Duration = Duration::from_secs(5);

/// How often subscriptions are brought up to date and stale players dropped.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// How long one Redis command may take before the connection counts as broken.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often every local player's `meridian:player:{id}` key is renewed, and
/// how long it lives unrenewed.
const PLAYER_KEY_EVERY: Duration = Duration::from_secs(10);
const PLAYER_KEY_TTL: Duration = Duration::from_secs(30);

/// Local changes queued from all worlds before the ticks drop them.
pub const CHANGES_CAPACITY: usize = 256;

/// One shard's players in one cell, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellBatch {
    /// The publishing shard.
    pub shard: String,
    /// The world.
    pub world_id: Uuid,
    /// When it was sent, Unix milliseconds (stale snapshots are ignored).
    pub sent_ms: i64,
    /// The players.
    pub players: Vec<RemotePlayer>,
}

impl CellBatch {
    fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a cell batch always encodes")
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        bincode::serde::decode_from_slice(
            bytes,
            bincode::config::standard().with_limit::<{ 4 << 20 }>(),
        )
        .ok()
        .map(|(batch, _)| batch)
    }
}

/// What travels on a cell channel: a shard's players in the cell, or a line
/// of `nearby` chat said in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CellMessage {
    /// A shard's players in the cell.
    Players(CellBatch),
    /// `nearby` chat said in the cell.
    Chat(ChatLine),
}

impl CellMessage {
    /// `CellMessage::Players` of an already encoded batch. bincode writes an
    /// enum as its variant index (a varint, one byte here) and then the
    /// payload, so the batch encoded once for the snapshot key is reused.
    fn players(encoded_batch: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(encoded_batch.len() + 1);
        bytes.push(0);
        bytes.extend_from_slice(encoded_batch);
        bytes
    }

    fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a cell message always encodes")
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        bincode::serde::decode_from_slice(
            bytes,
            bincode::config::standard().with_limit::<{ 4 << 20 }>(),
        )
        .ok()
        .map(|(message, _)| message)
    }
}

/// Counters of the sync, for status and metrics.
#[derive(Debug, Default)]
pub struct CellStats {
    /// Batches published.
    pub published: AtomicU64,
    /// Batches received from other shards (snapshots included).
    pub received: AtomicU64,
    /// Batches that could not be decoded or were for an unknown world.
    pub rejected: AtomicU64,
    /// Batches of ghosts dropped because a world's queue was full.
    pub dropped: AtomicU64,
    /// Times the connection to Redis was (re)established.
    pub connects: AtomicU64,
    /// Cells currently subscribed.
    pub cells: AtomicU64,
    /// Age of the last batch received from another shard when it arrived,
    /// in milliseconds (clocks of different machines included): the bus lag.
    pub lag_ms: AtomicU64,
    /// The largest such age since start.
    pub max_lag_ms: AtomicU64,
}

impl CellStats {
    /// The counters as JSON, for `/api/status`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "batches_published": get(&self.published),
            "batches_received": get(&self.received),
            "batches_rejected": get(&self.rejected),
            "batches_dropped": get(&self.dropped),
            "connects": get(&self.connects),
            "cells_subscribed": get(&self.cells),
            "lag_ms": get(&self.lag_ms),
            "max_lag_ms": get(&self.max_lag_ms),
        })
    }
}

/// The smallest H3 cells whose inner radius still covers `aoi_m`, so that a
/// player's area of interest always lies within its cell and the neighbours.
#[must_use]
pub fn resolution_for(aoi_m: f64) -> Resolution {
    Resolution::range(Resolution::Zero, Resolution::Fifteen)
        .rev()
        .find(|r| r.edge_length_m() * 3f64.sqrt() / 2.0 >= aoi_m)
        .unwrap_or(Resolution::Zero)
}

/// The cell a position is in.
fn cell_of(at: LonLat, resolution: Resolution) -> Option<CellIndex> {
    LatLng::new(at.lat, at.lon)
        .ok()
        .map(|ll| ll.to_cell(resolution))
}

fn channel(world: Uuid, cell: CellIndex) -> String {
    format!("meridian:{world}:cell:{cell}")
}

fn chat_channel(world: Uuid) -> String {
    format!("meridian:{world}:chat")
}

fn snapshot_key(world: Uuid, cell: CellIndex) -> String {
    format!("meridian:{world}:cellsnap:{cell}")
}

/// Parse a cell channel back into its world and cell.
fn parse_channel(name: &str) -> Option<(Uuid, CellIndex)> {
    let rest = name.strip_prefix("meridian:")?;
    let (world, cell) = rest.split_once(":cell:")?;
    Some((world.parse().ok()?, cell.parse().ok()?))
}

/// The sync task's handle.
pub struct CellSync {
    /// Counters.
    pub stats: Arc<CellStats>,
    /// The task.
    pub task: JoinHandle<()>,
}

impl CellSync {
    /// Start syncing `worlds` through the Redis at `url`. Each world must have
    /// been given `changes`' sender with `World::share_with`. Stops when `stop`
    /// is cancelled.
    ///
    /// # Errors
    /// `redis::RedisError` if the URL is invalid (not if Redis is down: the
    /// task connects, and reconnects, by itself).
    pub fn spawn(
        url: &str,
        shard: &str,
        aoi_m: f64,
        worlds: Vec<WorldHandle>,
        changes: mpsc::Receiver<Shared>,
        stop: CancellationToken,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let stats = Arc::new(CellStats::default());
        let state = Sync {
            client,
            shard: shard.to_owned(),
            resolution: resolution_for(aoi_m),
            worlds: worlds.into_iter().map(|w| (w.id, w)).collect(),
            locals: HashMap::new(),
            wanted: HashMap::new(),
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(state.run(changes, stop));
        Ok(Self { stats, task })
    }
}

/// What `meridian:player:{id}` holds: where an account plays, and the cell
/// whose snapshot hash has its newest state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerKey {
    /// The shard it is on.
    pub shard: String,
    /// The epoch of its login there.
    pub epoch: u64,
    /// The world.
    pub world: Uuid,
    /// Its H3 cell.
    pub cell: String,
}

fn player_key(user: Uuid) -> String {
    format!("meridian:player:{user}")
}

/// The newest state of `user` in `world` that another shard published, found
/// through its player key and its cell's snapshot hash: how a shard taking a
/// player over learns where it stands now, fresher than the last flush.
/// `None` when Redis does not know (or does not answer).
pub async fn last_published(
    cache: &crate::store::RedisCache,
    world: Uuid,
    user: Uuid,
) -> Option<RemotePlayer> {
    let key: PlayerKey = serde_json::from_str(&cache.get(&player_key(user)).await.ok()??).ok()?;
    if key.world != world {
        return None;
    }
    let cell: CellIndex = key.cell.parse().ok()?;
    let bytes = cache
        .hget_bytes(&snapshot_key(world, cell), &key.shard)
        .await
        .ok()??;
    CellBatch::decode(&bytes)?
        .players
        .into_iter()
        .find(|p| p.user_id == user)
}

/// What one batch of local changes did to the held players.
#[derive(Default)]
struct Remembered {
    /// Cells whose players changed (where they are, and where they left).
    touched: HashSet<CellIndex>,
    /// Players new here or in a new cell: their player key must be rewritten.
    relocated: Vec<(Uuid, Uuid)>,
}

/// How often the cells around a player who stays in its cell are marked
/// needed again.
const NEEDED_EVERY: Duration = Duration::from_secs(1);

/// A local player as last published.
struct Local {
    world: Uuid,
    cell: CellIndex,
    player: RemotePlayer,
    seen: Instant,
    /// When the cells around it were last marked needed.
    needed_at: Instant,
}

struct Sync {
    client: redis::Client,
    shard: String,
    resolution: Resolution,
    worlds: HashMap<Uuid, WorldHandle>,
    /// This shard's players by (world, account).
    locals: HashMap<(Uuid, Uuid), Local>,
    /// Cells the players need, with when they last needed each.
    wanted: HashMap<(Uuid, CellIndex), Instant>,
    stats: Arc<CellStats>,
}

/// Why a connection round ended.
enum End {
    Stop,
    Broken(String),
}

impl Sync {
    async fn run(mut self, mut changes: mpsc::Receiver<Shared>, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let connects = self.stats.connects.load(Ordering::Relaxed);
            let reason = match self.connected(&mut changes, &stop).await {
                End::Stop => return,
                End::Broken(reason) => reason,
            };
            // A connection that was up starts the waits over.
            if self.stats.connects.load(Ordering::Relaxed) > connects {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "shard sync lost Redis");
            // Keep taking changes while waiting, so the ticks never fill the
            // queue, and what is published on return is current.
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(until) => break,
                    Some(shared) = changes.recv() => {
                        // Chat said meanwhile stays on this shard.
                        if let Shared::Players(batch) = shared {
                            self.remember(batch);
                        }
                    }
                }
            }
        }
    }

    /// One connection's life: connect, subscribe and fill every wanted cell,
    /// then publish and listen until Redis fails or the shard stops.
    async fn connected(
        &mut self,
        changes: &mut mpsc::Receiver<Shared>,
        stop: &CancellationToken,
    ) -> End {
        let connect = async {
            let publisher = self.client.get_multiplexed_async_connection().await?;
            let (sink, stream) = self.client.get_async_pubsub().await?.split();
            Ok::<_, redis::RedisError>((publisher, sink, stream))
        };
        let (mut publisher, mut sink, mut stream) =
            match tokio::time::timeout(CALL_TIMEOUT, connect).await {
                Ok(Ok(parts)) => parts,
                Ok(Err(e)) => return End::Broken(e.to_string()),
                Err(_) => return End::Broken("connect timed out".into()),
            };
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        for &world in self.worlds.keys() {
            if let Err(e) = timed(sink.subscribe(chat_channel(world))).await {
                return End::Broken(e);
            }
        }
        let mut subscribed: HashSet<(Uuid, CellIndex)> = HashSet::new();
        // Everything held is republished, so the others' ghosts come back at
        // once after an outage.
        let all: Vec<(Uuid, CellIndex)> = self.locals.iter().map(|(k, l)| (k.0, l.cell)).collect();
        if let Err(e) = self
            .publish(&mut publisher, all.into_iter().collect())
            .await
        {
            return End::Broken(e);
        }
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut player_keys = tokio::time::interval(PLAYER_KEY_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return End::Stop,
                _ = player_keys.tick() => {
                    if let Err(e) = self.renew_player_keys(&mut publisher, None).await {
                        return End::Broken(e);
                    }
                }
                _ = housekeeping.tick() => {
                    if let Err(e) = self.resubscribe(&mut sink, &mut publisher, &mut subscribed).await {
                        return End::Broken(e);
                    }
                }
                shared = changes.recv() => {
                    let batch = match shared {
                        None => return End::Stop,
                        Some(Shared::Chat(line)) => {
                            if let Err(e) = self.publish_chat(&mut publisher, &line).await {
                                return End::Broken(e);
                            }
                            continue;
                        }
                        Some(Shared::Players(batch)) => batch,
                    };
                    let world = batch.world_id;
                    let remembered = self.remember(batch);
                    let touched = remembered.touched.into_iter().map(|c| (world, c)).collect();
                    if let Err(e) = self.publish(&mut publisher, touched).await {
                        return End::Broken(e);
                    }
                    if !remembered.relocated.is_empty() {
                        if let Err(e) = self
                            .renew_player_keys(&mut publisher, Some(&remembered.relocated))
                            .await
                        {
                            return End::Broken(e);
                        }
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        return End::Broken("subscription closed".into());
                    };
                    let name = message.get_channel_name();
                    if parse_channel(name).is_some() {
                        self.deliver(message.get_payload_bytes());
                    } else if name.ends_with(":chat") {
                        self.deliver_chat(message.get_payload_bytes());
                    }
                }
            }
        }
    }

    /// Take a world's changes in; returns the cells they touched (where
    /// players are now, and where they left from).
    fn remember(&mut self, changes: LocalChanges) -> Remembered {
        let now = Instant::now();
        let world = changes.world_id;
        let mut remembered = Remembered::default();
        for player in changes.players {
            let Some(cell) = cell_of(player.position, self.resolution) else {
                continue;
            };
            remembered.touched.insert(cell);
            let key = (world, player.user_id);
            let (moved_cell, needed_at) = match self.locals.get(&key) {
                Some(old) if old.cell == cell => (false, old.needed_at),
                Some(old) => {
                    remembered.touched.insert(old.cell);
                    (true, now)
                }
                None => (true, now),
            };
            // The cells around a player are marked needed when it arrives in a
            // cell and then once a second, well within `KEEP_CELL`, rather
            // than seven map writes per moving player per tick.
            let renew = moved_cell || now.duration_since(needed_at) >= NEEDED_EVERY;
            if renew {
                for near in cell.grid_disk::<Vec<_>>(1) {
                    self.wanted.insert((world, near), now);
                }
            }
            if moved_cell {
                remembered.relocated.push(key);
            }
            self.locals.insert(
                key,
                Local {
                    world,
                    cell,
                    player,
                    seen: now,
                    needed_at: if renew { now } else { needed_at },
                },
            );
        }
        remembered
    }

    /// Publish the local players of each touched cell and refresh the cells'
    /// snapshot keys, in one pipelined round trip.
    async fn publish(
        &mut self,
        publisher: &mut MultiplexedConnection,
        touched: HashSet<(Uuid, CellIndex)>,
    ) -> Result<(), String> {
        if touched.is_empty() {
            return Ok(());
        }
        let mut by_cell: HashMap<(Uuid, CellIndex), Vec<RemotePlayer>> =
            touched.iter().map(|&k| (k, Vec::new())).collect();
        for ((world, _), local) in &self.locals {
            if let Some(players) = by_cell.get_mut(&(*world, local.cell)) {
                players.push(local.player.clone());
            }
        }
        let mut pipe = redis::pipe();
        let ttl_ms = GHOST_TTL.as_millis() as i64;
        for ((world, cell), players) in by_cell {
            let key = snapshot_key(world, cell);
            if players.is_empty() {
                // Everyone left this cell: the others' ghosts leave by TTL, and
                // a newcomer must not be shown them.
                pipe.hdel(&key, &self.shard).ignore();
                continue;
            }
            let batch = CellBatch {
                shard: self.shard.clone(),
                world_id: world,
                sent_ms: now_ms(),
                players,
            }
            .encode();
            pipe.publish(channel(world, cell), CellMessage::players(&batch))
                .ignore();
            pipe.hset(&key, &self.shard, &batch).ignore();
            pipe.pexpire(&key, ttl_ms).ignore();
            self.stats.published.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(publisher)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("publish timed out".into()),
        }
    }

    /// Bring subscriptions in line with the wanted cells: subscribe and fill
    /// new ones, drop those unwanted for `KEEP_CELL`; forget players unheard
    /// of for the ghost TTL (they left the shard).
    async fn resubscribe(
        &mut self,
        sink: &mut PubSubSink,
        publisher: &mut MultiplexedConnection,
        subscribed: &mut HashSet<(Uuid, CellIndex)>,
    ) -> Result<(), String> {
        let now = Instant::now();
        let mut left = HashSet::new();
        self.locals.retain(|&(world, _), local| {
            let keep = now.duration_since(local.seen) <= GHOST_TTL;
            if !keep {
                left.insert((world, local.cell));
            }
            keep
        });
        self.publish(publisher, left).await?;
        self.wanted
            .retain(|_, needed| now.duration_since(*needed) <= KEEP_CELL);
        let new: Vec<(Uuid, CellIndex)> = self
            .wanted
            .keys()
            .filter(|k| !subscribed.contains(k))
            .copied()
            .collect();
        let gone: Vec<(Uuid, CellIndex)> = subscribed
            .iter()
            .filter(|k| !self.wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            timed(sink.unsubscribe(channel(key.0, key.1))).await?;
            subscribed.remove(&key);
        }
        if !new.is_empty() {
            for &(world, cell) in &new {
                timed(sink.subscribe(channel(world, cell))).await?;
                subscribed.insert((world, cell));
            }
            // Fill the new cells from their snapshots instead of waiting for
            // the next republish.
            let mut pipe = redis::pipe();
            for &(world, cell) in &new {
                pipe.hvals(snapshot_key(world, cell));
            }
            let snapshots: Vec<Vec<Vec<u8>>> = timed(pipe.query_async(publisher)).await?;
            let oldest = now_ms() - GHOST_TTL.as_millis() as i64;
            for batch in snapshots.iter().flatten() {
                if let Some(decoded) = CellBatch::decode(batch) {
                    if decoded.sent_ms >= oldest {
                        self.hand_over(decoded);
                    }
                }
            }
        }
        self.stats
            .cells
            .store(subscribed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Say which shard local players are on, and with which epoch, in
    /// `meridian:player:{id}` (for operators and placement), in one pipelined
    /// round trip; a key lives `PLAYER_KEY_TTL` unrenewed. Only `keys`, or
    /// every local player when `None`.
    async fn renew_player_keys(
        &self,
        publisher: &mut MultiplexedConnection,
        keys: Option<&[(Uuid, Uuid)]>,
    ) -> Result<(), String> {
        let locals: Vec<&Local> = match keys {
            Some(keys) => keys.iter().filter_map(|k| self.locals.get(k)).collect(),
            None => self.locals.values().collect(),
        };
        if locals.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let ttl_ms = PLAYER_KEY_TTL.as_millis() as u64;
        for local in locals {
            let value = serde_json::to_string(&PlayerKey {
                shard: self.shard.clone(),
                epoch: local.player.epoch,
                world: local.world,
                cell: local.cell.to_string(),
            })
            .expect("a player key always encodes");
            pipe.pset_ex(
                format!("meridian:player:{}", local.player.user_id),
                value,
                ttl_ms,
            )
            .ignore();
        }
        timed(pipe.query_async::<()>(publisher)).await
    }

    /// Publish a line of chat: world chat on the world's chat channel,
    /// `nearby` chat on the channel of the cell it was said in, which every
    /// shard with a player within the area of interest of it listens to.
    async fn publish_chat(
        &self,
        publisher: &mut MultiplexedConnection,
        line: &ChatLine,
    ) -> Result<(), String> {
        let cell = line.position.and_then(|at| cell_of(at, self.resolution));
        let (name, bytes) = match cell {
            Some(cell) => (
                channel(line.world_id, cell),
                CellMessage::Chat(line.clone()).encode(),
            ),
            None => (
                chat_channel(line.world_id),
                bincode::serde::encode_to_vec(line, bincode::config::standard())
                    .expect("a chat line always encodes"),
            ),
        };
        timed(
            redis::cmd("PUBLISH")
                .arg(name)
                .arg(bytes)
                .query_async::<()>(publisher),
        )
        .await
    }

    fn deliver_chat(&self, bytes: &[u8]) {
        let decoded = bincode::serde::decode_from_slice::<ChatLine, _>(
            bytes,
            bincode::config::standard().with_limit::<{ 64 << 10 }>(),
        );
        let Ok((line, _)) = decoded else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.hand_over_chat(line);
    }

    /// Give another shard's line of chat to its world.
    fn hand_over_chat(&self, line: ChatLine) {
        if line.shard == self.shard {
            return;
        }
        match self.worlds.get(&line.world_id) {
            Some(world) => {
                if world.commands.try_send(Command::RemoteChat(line)).is_err() {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn deliver(&self, bytes: &[u8]) {
        match CellMessage::decode(bytes) {
            Some(CellMessage::Players(batch)) => self.hand_over(batch),
            Some(CellMessage::Chat(line)) => self.hand_over_chat(line),
            None => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Give another shard's players to their world as ghosts.
    fn hand_over(&self, batch: CellBatch) {
        if batch.shard == self.shard {
            return;
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let lag = u64::try_from(now_ms() - batch.sent_ms).unwrap_or(0);
        self.stats.lag_ms.store(lag, Ordering::Relaxed);
        self.stats.max_lag_ms.fetch_max(lag, Ordering::Relaxed);
        let Some(world) = self.worlds.get(&batch.world_id) else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let command = Command::Ghosts {
            shard: batch.shard.into(),
            players: batch.players,
        };
        // Never wait on a busy tick: the next republish heals a drop.
        if world.commands.try_send(command).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("Redis call timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_protocol::LonLat;

    #[test]
    fn cells_are_the_smallest_that_hold_the_area_of_interest() {
        let r = resolution_for(150.0);
        assert!(r.edge_length_m() * 3f64.sqrt() / 2.0 >= 150.0);
        let finer = Resolution::try_from(u8::from(r) + 1).unwrap();
        assert!(finer.edge_length_m() * 3f64.sqrt() / 2.0 < 150.0);
    }

    #[test]
    fn batches_and_channels_round_trip() {
        let batch = CellBatch {
            shard: "a".into(),
            world_id: Uuid::now_v7(),
            sent_ms: 7,
            players: vec![RemotePlayer {
                user_id: Uuid::now_v7(),
                name: "n".into(),
                epoch: 2,
                seq: 3,
                position: LonLat {
                    lon: 4.9,
                    lat: 52.37,
                },
                heading: 1.0,
                speed_mps: 2.0,
                team: Some("red".into()),
            }],
        };
        assert_eq!(CellBatch::decode(&batch.encode()), Some(batch.clone()));
        // A batch encoded once serves the snapshot key and the channel.
        assert_eq!(
            CellMessage::decode(&CellMessage::players(&batch.encode())),
            Some(CellMessage::Players(batch.clone()))
        );
        let line = ChatLine {
            world_id: batch.world_id,
            shard: "a".into(),
            channel: meridian_protocol::ChatChannel::Nearby,
            from: Uuid::now_v7(),
            name: "n".into(),
            text: "hi".into(),
            sent_ms: 7,
            position: Some(batch.players[0].position),
        };
        let chat = CellMessage::Chat(line);
        assert_eq!(CellMessage::decode(&chat.encode()), Some(chat));
        assert_eq!(CellBatch::decode(b"\xff\xff garbage"), None);
        let cell = cell_of(batch.players[0].position, resolution_for(150.0)).unwrap();
        assert_eq!(
            parse_channel(&channel(batch.world_id, cell)),
            Some((batch.world_id, cell))
        );
    }
}
