//! The `World` and its tick: the one task that owns a world's players, applies
//! their inputs in order and publishes what changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_protocol::{
    close, AreaKind, ChatChannel, CorrectionReason, EntityState, FlagChange, KickReason, LonLat,
    ServerMessage, Transition, WireState,
};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::areas::AreaIndex;
use super::chat::ChatLine;
use super::command::{CaptureResult, Command, Input, JoinError, JoinRequest, Joined};
use super::flags::{Effect, Flags, Presence};
use super::geodesy::{chord2, chord_for_arc, distance_m, to_ecef};
use super::ghost::{Ghost, LocalChanges, RemotePlayer, Shared};
use super::grid::Grid;
use super::interest::View;
use super::link::ConnLink;
use super::meters::TickMeters;
use super::movement::{self, Budget, Proposal, Rules};
use super::pacer::Pacer;
use super::player::{Player, MAX_QUEUED_INPUTS, MOVES_PER_TICK};
use super::snapshot::{
    Board, EntitySnap, Hot, Identity, Snapshot, TickStats, TickTimings, SLOT_BITS, SLOT_MASK,
};
use super::spawn;
use crate::bus::ControlEvent;
use crate::store::{
    now_ms, Area, Capture, PendingPositions, StoredPosition, Team, TeamScore, WorldDef, WorldObject,
};

/// Commands queued for the tick before senders are refused (`ServerBusy`).
pub const COMMAND_CAPACITY: usize = 65_536;

/// After this long without moving, a player's speed reads zero.
const STOPPED_AFTER: Duration = Duration::from_millis(300);

/// How long clients are asked to wait before reconnecting after a shutdown.
const SHUTDOWN_RETRY_MS: u32 = 5_000;

/// The shard settings a world needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shard name, sent in `Welcome`.
    pub shard_id: String,
    /// Ticks per second.
    pub tick_hz: u8,
    /// Area-of-interest radius and size.
    pub view: View,
    /// Speed limit for worlds that set none.
    pub default_speed_mps: f64,
    /// How long a dropped player stays, resumable.
    pub resume_grace: Duration,
    /// How far `nearby` chat carries, metres (at most the view radius).
    pub chat_radius_m: f64,
}

impl Settings {
    /// The world settings of a shard configuration.
    #[must_use]
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            shard_id: config.shard_id.clone(),
            tick_hz: config.tick_hz,
            view: View::new(config.aoi_radius_m, config.aoi_max),
            default_speed_mps: config.max_speed_mps,
            resume_grace: config.resume_grace,
            chat_radius_m: config.chat_radius_m,
        }
    }

    fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_hz))
    }
}

/// How the rest of the shard reaches a running world.
#[derive(Debug, Clone)]
pub struct WorldHandle {
    /// The world's id.
    pub id: Uuid,
    /// The world's name.
    pub name: String,
    /// Requests to the tick.
    pub commands: mpsc::Sender<Command>,
    /// The newest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// One world: its map, its players and its tick.
pub struct World {
    def: WorldDef,
    rules: Rules,
    areas: AreaIndex,
    settings: Settings,
    /// Players by slot.
    slots: Vec<Option<Player>>,
    /// Reuse count per slot, the high bits of entity ids.
    generations: Vec<u32>,
    /// Free slots, reused last-in first-out.
    free: Vec<u32>,
    /// Who is in each slot, as published: shared by every snapshot until
    /// someone joins or leaves, so a steady world clones no names per tick.
    roster: Arc<Vec<Option<Identity>>>,
    /// Whether a join or leave since the last publish changed the roster.
    roster_changed: bool,
    /// Slot of each account in the world.
    by_user: HashMap<Uuid, u32>,
    /// Slot of each live resume token.
    by_resume: HashMap<String, u32>,
    /// Inputs received so far: numbers them in the order they arrived.
    arrivals: u64,
    tick: u64,
    overruns: u64,
    timings: TickTimings,
    /// Every tick's duration since start, in microseconds.
    durations: hdrhistogram::Histogram<u64>,
    /// The same over the current 10 s window.
    recent: hdrhistogram::Histogram<u64>,
    stats: TickStats,
    pending: Arc<PendingPositions>,
    publisher: watch::Sender<Arc<Snapshot>>,
    /// Where local players' changes go for the other shards, if there are any.
    share: Option<mpsc::Sender<Shared>>,
    /// Batches of local changes dropped because the sharing task was behind.
    share_drops: u64,
    /// Ghosts among the players.
    ghosts: usize,
    /// Prometheus instruments (tick durations, moves by outcome).
    meters: TickMeters,
    /// Flags, teams and scores.
    flags: Flags,
    /// Whether flags or scores changed since the last publish.
    flags_changed: bool,
    /// Where proposed captures go to be committed (the capture writer).
    captures: Option<mpsc::Sender<Capture>>,
    /// Teams, scores and flags as last published.
    board: Arc<Board>,
    rng: SmallRng,
}

impl World {
    /// A world with no players.
    #[must_use]
    pub fn new(
        def: WorldDef,
        areas: &[Area],
        settings: Settings,
        pending: Arc<PendingPositions>,
    ) -> Self {
        let def_name = def.name.clone();
        let rules = Rules {
            speed_mps: def.max_speed_mps.unwrap_or(settings.default_speed_mps),
            mode: def.movement_mode,
            bounds: def.bounds,
        };
        Self {
            rules,
            areas: AreaIndex::new(areas),
            def,
            settings,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            roster: Arc::default(),
            roster_changed: false,
            by_user: HashMap::new(),
            by_resume: HashMap::new(),
            arrivals: 0,
            tick: 0,
            overruns: 0,
            timings: TickTimings::default(),
            durations: duration_histogram(),
            recent: duration_histogram(),
            stats: TickStats::default(),
            pending,
            publisher: watch::channel(Arc::new(Snapshot::default())).0,
            share: None,
            share_drops: 0,
            ghosts: 0,
            meters: TickMeters::new(&def_name),
            flags: Flags::default(),
            flags_changed: true,
            captures: None,
            board: Arc::default(),
            rng: SmallRng::from_os_rng(),
        }
    }

    /// Play with these teams (and their scores) and the flags among `objects`.
    pub fn set_flags(&mut self, teams: Vec<Team>, scores: &[TeamScore], objects: &[WorldObject]) {
        self.flags = Flags::new(teams, scores);
        self.replace_flags(objects);
    }

    /// Hand proposed captures to `sender` (the capture writer, shared by every
    /// world), which answers with `Command::CaptureDone`. Without one, every
    /// capture is refused: nothing is announced that was not committed.
    pub fn capture_with(&mut self, sender: mpsc::Sender<Capture>) {
        self.captures = Some(sender);
    }

    /// Publish local players' changes for the other shards through `sender`
    /// (the shard-sync task's queue, shared by every world): every tick, the
    /// players that changed, and each of the others at least once a second.
    pub fn share_with(&mut self, sender: mpsc::Sender<Shared>) {
        self.share = Some(sender);
    }

    /// Start the tick task, on a thread of its own (see `pacer`). It runs
    /// until `shutdown` is cancelled or every sender of its commands is gone, then kicks
    /// every player with `Kicked { reason: Shutdown }` and hands their positions
    /// to the flusher before returning.
    #[must_use]
    pub fn spawn(self, shutdown: CancellationToken) -> (WorldHandle, JoinHandle<()>) {
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let handle = WorldHandle {
            id: self.def.id,
            name: self.def.name.clone(),
            commands,
            snapshots: self.subscribe(),
        };
        // A thread of its own (the blocking pool's, so the runtime's context
        // is there for what the tick hands to tasks): see `pacer`.
        (
            handle,
            tokio::task::spawn_blocking(move || self.run(rx, &shutdown)),
        )
    }

    /// A receiver of this world's snapshots.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publisher.subscribe()
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: &CancellationToken) {
        let mut pacer = Pacer::new(self.settings.tick_period());
        while let Some((now, late)) = pacer.wait(shutdown) {
            // Every handle is gone: the server was dropped without stopping
            // (a failed start, a test that panicked). The runtime waits for
            // this thread when it is dropped, so it must end on its own.
            if commands.is_closed() {
                break;
            }
            self.meters.late(late);
            // Only what is queued now: a flood of commands cannot stall the tick forever.
            let queued = commands.len();
            let mut drained = Vec::with_capacity(queued);
            for _ in 0..queued {
                match commands.try_recv() {
                    Ok(command) => drained.push(command),
                    Err(_) => break,
                }
            }
            self.tick(now, drained);
        }
        self.shutdown();
    }

    /// Run one tick at `now` with the commands received since the last one.
    ///
    /// Steps, in order, each timed (`TickTimings`):
    /// 1. commands: joins, resumes, disconnects, control events; inputs queued per player.
    /// 2. movement: each player's queued moves validated in order (at most
    ///    `MOVES_PER_TICK`), corrections and area events sent, speed updated.
    /// 3. sessions: dropped players past the resume grace period, and ghosts
    ///    past their TTL, removed.
    /// 4. publish: the snapshot (entities, grid, timings) built and published;
    ///    local players' changes handed to the shard-sync task, if any.
    /// 5. persist: moved players' positions handed to the flusher.
    /// 6. flags: who stands at each flag (from the snapshot's grid), zone
    ///    events, captures started, contested, reset or proposed to the writer.
    pub fn tick(&mut self, now: Instant, commands: Vec<Command>) {
        self.tick += 1;
        let start = Instant::now();
        for command in commands {
            self.apply(command, now);
        }
        let t1 = Instant::now();
        self.movement(now);
        let t2 = Instant::now();
        self.expire_sessions(now);
        let t3 = Instant::now();
        self.publish();
        self.share_changes();
        let t4 = Instant::now();
        self.persist();
        let t5 = Instant::now();
        self.gameplay(now);
        let t6 = Instant::now();
        let us = |a: Instant, b: Instant| {
            b.duration_since(a).as_micros().min(u128::from(u32::MAX)) as u32
        };
        self.timings = TickTimings {
            commands_us: us(start, t1),
            movement_us: us(t1, t2),
            sessions_us: us(t2, t3),
            publish_us: us(t3, t4),
            persist_us: us(t4, t5),
            flags_us: us(t5, t6),
            total_us: us(start, t6),
        };
        let overran = t6.duration_since(start) > self.settings.tick_period();
        if overran {
            self.overruns += 1;
        }
        self.meters.record(&self.timings, overran);
        self.record_duration(u64::from(self.timings.total_us));
    }

    /// Add a tick's duration to the histograms; once a second, refresh the
    /// published percentiles (cheap, but not free, so not every tick).
    fn record_duration(&mut self, us: u64) {
        self.durations.saturating_record(us);
        self.recent.saturating_record(us);
        let hz = u64::from(self.settings.tick_hz);
        if self.tick % hz == 0 {
            self.stats.ticks = self.tick;
            self.stats.p50_us = self.durations.value_at_quantile(0.5);
            self.stats.p99_us = self.durations.value_at_quantile(0.99);
            self.stats.max_us = self.durations.max();
        }
        if self.tick % (10 * hz) == 0 {
            self.stats.recent_p99_us = self.recent.value_at_quantile(0.99);
            self.recent.reset();
        }
    }

    fn apply(&mut self, command: Command, now: Instant) {
        match command {
            Command::Join { request, reply } => {
                let _ = reply.send(self.join(request, now));
            }
            Command::Resume { token, link, reply } => {
                let _ = reply.send(self.resume(&token, link));
            }
            Command::Input {
                entity,
                conn_id,
                input,
            } => {
                let arrival = self.arrivals;
                self.arrivals += 1;
                if let Some(player) = self.player_mut(entity) {
                    if player.link.as_ref().is_some_and(|l| l.conn_id == conn_id) {
                        if player.inputs.len() >= MAX_QUEUED_INPUTS {
                            player.inputs.pop_front();
                        }
                        if player.inputs.is_empty() {
                            player.queued_since = arrival;
                        }
                        player.inputs.push_back(input);
                    }
                }
            }
            Command::Disconnected {
                entity,
                conn_id,
                leave,
            } => {
                if let Some(player) = self.player_mut(entity) {
                    if player.link.as_ref().is_some_and(|l| l.conn_id == conn_id) {
                        player.link = None;
                        player.detached_at = Some(now);
                        player.inputs.clear();
                        if leave {
                            self.remove(entity & SLOT_MASK, None);
                        }
                    }
                }
            }
            Command::Control(event) => self.control(event),
            Command::ReplaceAreas(areas) => self.replace_areas(&areas),
            Command::Chat {
                entity,
                conn_id,
                channel,
                text,
            } => {
                let Some((from, name, at)) = self
                    .player_mut(entity)
                    .filter(|p| p.link.as_ref().is_some_and(|l| l.conn_id == conn_id))
                    .map(|p| (p.user_id, p.name.to_string(), p.position))
                else {
                    return;
                };
                let line = ChatLine {
                    world_id: self.def.id,
                    shard: self.settings.shard_id.clone(),
                    channel,
                    from,
                    name,
                    text,
                    sent_ms: now_ms() as u64,
                    position: (channel == ChatChannel::Nearby).then_some(at),
                };
                self.say(&line);
                if let Some(share) = &self.share {
                    if share.try_send(Shared::Chat(line)).is_err() {
                        self.share_drops += 1;
                    }
                }
            }
            Command::RemoteChat(line) => self.say(&line),
            Command::ReplaceFlags(objects) => {
                self.replace_flags(&objects);
                self.tell_flags();
            }
            Command::CaptureDone {
                flag_id,
                capture_id,
                result,
            } => {
                let mut effects = Vec::new();
                match result {
                    CaptureResult::Committed(committed) => {
                        self.flags.apply(&committed, &mut effects);
                    }
                    CaptureResult::Stale => {
                        self.flags
                            .not_committed(flag_id, capture_id, true, &mut effects);
                    }
                    CaptureResult::Unsaved => {
                        self.flags
                            .not_committed(flag_id, capture_id, false, &mut effects);
                    }
                }
                self.flags_changed = true;
                self.carry_out(effects);
            }
            Command::Ghosts { shard, players } => {
                for remote in players {
                    self.ghost(&shard, remote, now);
                }
            }
        }
    }

    /// Deliver a chat line to every connected local player of the world, or
    /// for `nearby` chat, to those within the chat radius of the speaker.
    fn say(&self, line: &ChatLine) {
        let message = line.message();
        match line.position {
            None => {
                for player in self.slots.iter().flatten() {
                    if let Some(link) = &player.link {
                        link.send(message.clone());
                    }
                }
            }
            Some(at) => self.for_each_near(at, self.settings.chat_radius_m, |player| {
                if let Some(link) = &player.link {
                    link.send(message.clone());
                }
            }),
        }
    }

    /// Call `f` with every player within `radius_m` of `at` (at most the
    /// view's leave radius, the cell size of the snapshot's grid), as of the
    /// last published snapshot.
    fn for_each_near(&self, at: LonLat, radius_m: f64, mut f: impl FnMut(&Player)) {
        let snapshot = Arc::clone(&self.publisher.borrow());
        let centre = to_ecef(at);
        let r2 = chord_for_arc(radius_m.min(snapshot.grid.cell_m())).powi(2);
        snapshot.grid.for_each_near(centre, |slot, pos| {
            if chord2(*pos, centre) <= r2 {
                if let Some(player) = self.slots.get(slot as usize).and_then(Option::as_ref) {
                    f(player);
                }
            }
        });
    }

    /// Show (or move) a player of another shard. News older than what is held
    /// is ignored, and so is news of a player who is local here.
    fn ghost(&mut self, shard: &Arc<str>, remote: RemotePlayer, now: Instant) {
        if let Some(&slot) = self.by_user.get(&remote.user_id) {
            let tick = self.tick;
            let player = self.slots[slot as usize]
                .as_mut()
                .expect("indexed slot is occupied");
            let Some(ghost) = player.ghost.as_mut() else {
                return;
            };
            if (remote.epoch, remote.seq) < (player.epoch, player.position_seq) {
                return;
            }
            ghost.last_seen = now;
            ghost.shard = Arc::clone(shard);
            player.epoch = remote.epoch;
            player.position_seq = remote.seq;
            player.position = remote.position;
            player.ecef = to_ecef(remote.position);
            player.heading = remote.heading;
            player.speed_mps = remote.speed_mps;
            player.team = remote.team.as_deref().and_then(|t| self.flags.team(t));
            player.refresh_state(tick);
            return;
        }
        let Some(slot) = self.free_slot() else {
            return;
        };
        let player = self.new_player(
            slot,
            remote.user_id,
            Uuid::nil(),
            remote.name,
            remote.epoch,
            remote.position,
            now,
        );
        self.slots[slot as usize] = Some(Player {
            position_seq: remote.seq,
            heading: remote.heading,
            speed_mps: remote.speed_mps,
            team: remote.team.as_deref().and_then(|t| self.flags.team(t)),
            dirty: false,
            ghost: Some(Ghost {
                shard: Arc::clone(shard),
                last_seen: now,
            }),
            ..player
        });
        let player = self.slots[slot as usize].as_mut().expect("just placed");
        player.refresh_state(self.tick);
        self.by_user.insert(remote.user_id, slot);
        self.ghosts += 1;
    }

    fn join(&mut self, request: JoinRequest, now: Instant) -> Result<Joined, JoinError> {
        let JoinRequest {
            user_id,
            session_id,
            name,
            epoch,
            stored,
            team,
            link,
        } = request;
        let team = team.as_deref().and_then(|t| self.flags.team(t));
        if let Some(&slot) = self.by_user.get(&user_id) {
            // The account is already here: the newest login takes the entity
            // over where it stands, and others never see it leave.
            let player = self.slots[slot as usize]
                .as_mut()
                .expect("indexed slot is occupied");
            if let Some(old) = player.link.take() {
                kick(&old, KickReason::LoggedInElsewhere);
            }
            if player.ghost.take().is_some() {
                // The player moved here from another shard: it goes on from
                // where that shard last showed it (fresher than the store), and
                // nobody here sees it leave and come back.
                self.ghosts -= 1;
                player.budget = Budget::full(self.rules.speed_mps, now);
                player.position_seq = 0;
                player.dirty = true;
            }
            player.session_id = session_id;
            player.team = team;
            player.epoch = player.epoch.max(epoch);
            player.last_seq = 0;
            player.ack_seq = 0;
            player.awaiting_ack = None;
            player.inputs.clear();
            return Ok(self.attach(slot, link));
        }
        let position = stored
            .as_ref()
            .and_then(|s| spawn::restore(s, &self.def, &self.areas))
            .unwrap_or_else(|| spawn::spawn_point(&self.def, &self.areas, &mut self.rng));
        let slot = self.free_slot().ok_or(JoinError::Full)?;
        let player = self.new_player(slot, user_id, session_id, name.into(), epoch, position, now);
        self.slots[slot as usize] = Some(Player {
            // Continue the stored sequence within the same epoch (never the
            // case after a fresh login, which takes a new epoch, but harmless).
            position_seq: stored.filter(|s| s.epoch == epoch).map_or(0, |s| s.seq),
            team,
            ..player
        });
        self.by_user.insert(user_id, slot);
        let joined = self.attach(slot, link);
        self.update_areas(slot);
        Ok(joined)
    }

    /// A free slot, reusing freed ones first; `None` when the world is full.
    fn free_slot(&mut self) -> Option<u32> {
        match self.free.pop() {
            Some(slot) => Some(slot),
            None if self.slots.len() < SLOT_MASK as usize => {
                self.slots.push(None);
                self.generations.push(0);
                Some((self.slots.len() - 1) as u32)
            }
            None => None,
        }
    }

    /// A player standing still at `position` in `slot`, not yet placed.
    #[allow(clippy::too_many_arguments)]
    fn new_player(
        &mut self,
        slot: u32,
        user_id: Uuid,
        session_id: Uuid,
        name: Arc<str>,
        epoch: u64,
        position: meridian_protocol::LonLat,
        now: Instant,
    ) -> Player {
        let entity = (self.generations[slot as usize] << SLOT_BITS) | slot;
        let state = EntityState::quantize(entity, position, 0.0, 0.0);
        self.roster_changed = true;
        Player {
            entity,
            user_id,
            session_id,
            name,
            link: None,
            detached_at: None,
            resume_token: String::new(),
            position,
            ecef: to_ecef(position),
            heading: 0.0,
            speed_mps: 0.0,
            last_motion: now,
            budget: Budget::full(self.rules.speed_mps, now),
            inputs: Default::default(),
            last_seq: 0,
            ack_seq: 0,
            queued_since: 0,
            ack_arrival: 0,
            awaiting_ack: None,
            next_correction: 1,
            strikes: 0,
            last_strike: None,
            inside: Vec::new(),
            area_events: 0,
            team: None,
            flag_events: 0,
            epoch,
            position_seq: 0,
            dirty: true,
            state,
            wire: WireState::encode(&state),
            changed_tick: self.tick,
            ghost: None,
            published_tick: 0,
        }
    }

    fn resume(&mut self, token: &str, link: ConnLink) -> Result<Joined, JoinError> {
        let slot = self
            .by_resume
            .get(token)
            .copied()
            .ok_or(JoinError::ResumeFailed)?;
        let player = self.slots[slot as usize]
            .as_mut()
            .expect("indexed slot is occupied");
        if let Some(old) = player.link.take() {
            // The old socket is half-dead (the client already moved on).
            kick(&old, KickReason::LoggedInElsewhere);
        }
        player.inputs.clear();
        Ok(self.attach(slot, link))
    }

    /// Connect a player to a link: rotate the resume token and queue `Welcome`.
    fn attach(&mut self, slot: u32, link: ConnLink) -> Joined {
        let token = resume_token();
        let player = self.slots[slot as usize]
            .as_mut()
            .expect("attach to an occupied slot");
        self.by_resume.remove(&player.resume_token);
        self.by_resume.insert(token.clone(), slot);
        player.resume_token = token.clone();
        player.detached_at = None;
        link.send(ServerMessage::Welcome {
            player_id: player.user_id,
            entity_id: player.entity,
            shard_id: self.settings.shard_id.clone(),
            tick_hz: self.settings.tick_hz,
            position: player.position,
            world: self.def.name.clone(),
            server_time_ms: now_ms() as u64,
            resume_token: token,
        });
        link.send(ServerMessage::Flags {
            team: player.team.as_deref().map(str::to_owned),
            teams: self.flags.teams(),
            flags: self.flags.all().iter().map(|f| f.info()).collect(),
        });
        // A client whose last correction was lost with the old socket would
        // otherwise never be able to move again: resend it.
        if let Some((id, reason)) = player.awaiting_ack {
            link.send(ServerMessage::Correction {
                id,
                seq: player.last_seq,
                lon: player.position.lon,
                lat: player.position.lat,
                reason,
            });
        }
        player.link = Some(link);
        Joined {
            entity: player.entity,
            user_id: player.user_id,
            position: player.position,
        }
    }

    fn control(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::SessionRevoked { session_id } => {
                let slot = self
                    .slots
                    .iter()
                    .flatten()
                    .find(|p| p.session_id == session_id)
                    .map(|p| p.entity & SLOT_MASK);
                if let Some(slot) = slot {
                    self.remove(slot, Some(KickReason::SessionRevoked));
                }
            }
            ControlEvent::Kick { user_id } => {
                if let Some(&slot) = self.by_user.get(&user_id) {
                    self.remove(slot, Some(KickReason::Admin));
                }
            }
            // On its own shard the join itself takes the player over, in place.
            ControlEvent::LoggedIn { shard, .. } if shard == self.settings.shard_id => {}
            ControlEvent::LoggedIn { user_id, epoch, .. } => {
                let older = self.by_user.get(&user_id).copied().filter(|&slot| {
                    self.slots[slot as usize]
                        .as_ref()
                        .is_some_and(|p| p.ghost.is_none() && p.epoch < epoch)
                });
                if let Some(slot) = older {
                    self.remove(slot, Some(KickReason::LoggedInElsewhere));
                }
            }
            // The areas themselves arrive as `Command::ReplaceAreas`, loaded
            // from the store by the shard's control task (the tick does no I/O).
            ControlEvent::AreasChanged { .. } => {}
            ControlEvent::Broadcast { world_id, text } => {
                if world_id.is_none_or(|id| id == self.def.id) {
                    self.say(&ChatLine::operator(self.def.id, text));
                }
            }
            ControlEvent::FlagCaptured(committed) => {
                if committed.capture.world_id == self.def.id {
                    let mut effects = Vec::new();
                    self.flags.apply(&committed, &mut effects);
                    self.flags_changed = true;
                    self.carry_out(effects);
                }
            }
            // The flags themselves arrive as `Command::ReplaceFlags`, loaded
            // by the shard's control task, like areas.
            ControlEvent::FlagsChanged { .. } => {}
            ControlEvent::ScoresReset { world_id } => {
                if world_id == self.def.id {
                    self.flags.reset_scores();
                    self.tell_flags();
                }
            }
        }
    }

    fn movement(&mut self, now: Instant) {
        let tick = self.tick;
        let mut kicked = Vec::new();
        let mut moved = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(player) = self.slots[slot].as_mut().filter(|p| p.ghost.is_none()) else {
                continue;
            };
            let before = player.position;
            let waited_since = player.queued_since;
            let mut processed = 0;
            while processed < MOVES_PER_TICK {
                let Some(input) = player.inputs.pop_front() else {
                    break;
                };
                match input {
                    Input::AckCorrection { id } => {
                        if player
                            .awaiting_ack
                            .is_some_and(|(awaited, _)| awaited == id)
                        {
                            player.awaiting_ack = None;
                        }
                    }
                    Input::Move {
                        seq,
                        lon,
                        lat,
                        heading,
                        accuracy_m,
                    } => {
                        processed += 1;
                        // Stale or duplicate moves, and moves sent before the
                        // client saw its correction, are dropped silently.
                        if seq <= player.last_seq || player.awaiting_ack.is_some() {
                            continue;
                        }
                        player.last_seq = seq;
                        let proposal = Proposal {
                            lon,
                            lat,
                            accuracy_m,
                        };
                        match movement::validate(
                            player.position,
                            proposal,
                            &mut player.budget,
                            now,
                            &self.rules,
                            &self.areas,
                        ) {
                            Ok(accepted) => {
                                player.position = accepted.to;
                                player.heading = if heading.is_finite() {
                                    heading.rem_euclid(360.0)
                                } else {
                                    0.0
                                };
                                player.ack_seq = seq;
                                player.ack_arrival = waited_since;
                                player.position_seq += 1;
                                player.dirty = true;
                                self.meters.accepted.increment(1);
                            }
                            Err(reason) => {
                                self.meters.refused(reason);
                                if correct(player, seq, reason, self.rules.mode, now) {
                                    kicked.push(slot as u32);
                                }
                                break;
                            }
                        }
                    }
                }
            }
            if player.position != before {
                player.ecef = to_ecef(player.position);
                let elapsed = now
                    .duration_since(player.last_motion)
                    .max(self.settings.tick_period());
                player.speed_mps =
                    (distance_m(before, player.position) / elapsed.as_secs_f64()) as f32;
                player.last_motion = now;
                moved.push(slot as u32);
            } else if player.speed_mps > 0.0
                && now.duration_since(player.last_motion) > STOPPED_AFTER
            {
                player.speed_mps = 0.0;
            }
            player.refresh_state(tick);
        }
        for slot in moved {
            self.update_areas(slot);
        }
        for slot in kicked {
            self.remove(slot, Some(KickReason::TooManyCorrections));
        }
    }

    /// Send `AreaEvent`s for the areas a player entered or left.
    fn update_areas(&mut self, slot: u32) {
        let player = self.slots[slot as usize].as_mut().expect("occupied slot");
        let now_inside: Vec<_> = self
            .areas
            .containing(player.position)
            .filter(|a| a.kind != AreaKind::Blocked)
            .collect();
        let left: Vec<Uuid> = player
            .inside
            .iter()
            .filter(|id| !now_inside.iter().any(|a| a.id == **id))
            .copied()
            .collect();
        for id in left {
            player.inside.retain(|x| *x != id);
            player.area_events += 1;
            let (name, kind) = self
                .areas
                .of_id(id)
                .map_or((String::new(), AreaKind::Zone), |a| {
                    (a.name.clone(), a.kind)
                });
            if let Some(link) = &player.link {
                link.send(ServerMessage::AreaEvent {
                    n: player.area_events,
                    area_id: id,
                    name,
                    kind,
                    transition: Transition::Leave,
                });
            }
        }
        for area in now_inside {
            if player.inside.contains(&area.id) {
                continue;
            }
            player.inside.push(area.id);
            player.area_events += 1;
            if let Some(link) = &player.link {
                link.send(ServerMessage::AreaEvent {
                    n: player.area_events,
                    area_id: area.id,
                    name: area.name.clone(),
                    kind: area.kind,
                    transition: Transition::Enter,
                });
            }
        }
    }

    fn expire_sessions(&mut self, now: Instant) {
        let grace = self.settings.resume_grace;
        let expired: Vec<u32> = self
            .slots
            .iter()
            .flatten()
            .filter(|p| {
                p.detached_at
                    .is_some_and(|t| now.duration_since(t) >= grace)
                    || p.ghost.as_ref().is_some_and(|g| g.expired(now))
            })
            .map(|p| p.entity & SLOT_MASK)
            .collect();
        for slot in expired {
            self.remove(slot, None);
        }
    }

    /// Take a player out of the world: kick its connection if it has one, hand
    /// its position to the flusher, and free its slot.
    fn remove(&mut self, slot: u32, reason: Option<KickReason>) {
        let Some(player) = self.slots[slot as usize].take() else {
            return;
        };
        self.roster_changed = true;
        self.flags.forget(player.entity);
        if player.ghost.is_some() {
            self.ghosts -= 1;
        }
        if let (Some(link), Some(reason)) = (&player.link, reason) {
            kick(link, reason);
        }
        if player.dirty {
            self.pending
                .insert_all([stored(&self.def, &player, now_ms())]);
        }
        self.by_user.remove(&player.user_id);
        self.by_resume.remove(&player.resume_token);
        self.generations[slot as usize] =
            (self.generations[slot as usize] + 1) & ((1 << (32 - SLOT_BITS)) - 1);
        self.free.push(slot);
    }

    fn publish(&mut self) {
        let mut slots = Vec::with_capacity(self.slots.len());
        let mut hot = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Some(p) => {
                    slots.push(Some(EntitySnap {
                        ecef: p.ecef,
                        state: p.state,
                        ack_seq: p.ack_seq,
                        ack_arrival: p.ack_arrival,
                    }));
                    hot.push(Hot::new(&p.state, p.wire, p.changed_tick));
                }
                None => {
                    slots.push(None);
                    hot.push(Hot::vacant(i as u32));
                }
            }
        }
        if std::mem::take(&mut self.roster_changed) {
            self.roster = Arc::new(
                self.slots
                    .iter()
                    .map(|slot| {
                        slot.as_ref().map(|p| Identity {
                            player_id: p.user_id,
                            name: Arc::clone(&p.name),
                        })
                    })
                    .collect(),
            );
        }
        if std::mem::take(&mut self.flags_changed) {
            self.board = Arc::new(Board {
                teams: self.flags.teams(),
                flags: self.flags.all().iter().map(|f| f.info()).collect(),
            });
        }
        let grid = Grid::build(
            self.settings.view.leave_radius_m,
            slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.as_ref().map(|e| (i as u32, e.ecef))),
        );
        self.publisher.send_replace(Arc::new(Snapshot {
            tick: self.tick,
            server_time_ms: now_ms() as u64,
            slots,
            hot,
            roster: Arc::clone(&self.roster),
            grid,
            timings: self.timings,
            overruns: self.overruns,
            stats: self.stats,
            ghosts: self.ghosts,
            board: Arc::clone(&self.board),
        }));
    }

    fn persist(&mut self) {
        let (def, now) = (&self.def, now_ms());
        self.pending
            .insert_all(self.slots.iter_mut().flatten().filter_map(|player| {
                std::mem::replace(&mut player.dirty, false).then(|| stored(def, player, now))
            }));
    }

    /// Kick everyone (`Shutdown`) and hand every position to the flusher.
    pub fn shutdown(mut self) {
        for slot in 0..self.slots.len() {
            if let Some(player) = self.slots[slot].as_mut() {
                // Ghosts are their own shard's to save.
                player.dirty = player.ghost.is_none();
            }
            self.remove(slot as u32, Some(KickReason::Shutdown));
        }
    }

    fn player_mut(&mut self, entity: u32) -> Option<&mut Player> {
        self.slots
            .get_mut((entity & SLOT_MASK) as usize)?
            .as_mut()
            .filter(|p| p.entity == entity)
    }

    /// This shard's players in the world, connected or not (ghosts excluded).
    #[must_use]
    pub fn population(&self) -> usize {
        self.by_user.len() - self.ghosts
    }

    /// Ghosts (players of other shards) in the world.
    #[must_use]
    pub fn ghosts(&self) -> usize {
        self.ghosts
    }

    /// Hand local players that changed this tick, or were last published a
    /// second or more ago, to the shard-sync task. Never waits: when its queue
    /// is full the batch is dropped and counted, and the next republish heals.
    fn share_changes(&mut self) {
        let Some(share) = &self.share else {
            return;
        };
        let (tick, hz) = (self.tick, u64::from(self.settings.tick_hz));
        let mut players = Vec::new();
        for player in self.slots.iter_mut().flatten() {
            if player.ghost.is_some()
                || (player.changed_tick != tick && tick - player.published_tick < hz)
            {
                continue;
            }
            player.published_tick = tick;
            players.push(RemotePlayer {
                user_id: player.user_id,
                name: Arc::clone(&player.name),
                epoch: player.epoch,
                seq: player.position_seq,
                position: player.position,
                heading: player.heading,
                speed_mps: player.speed_mps,
                team: player.team.clone(),
            });
        }
        if players.is_empty() {
            return;
        }
        let changes = LocalChanges {
            world_id: self.def.id,
            tick,
            players,
        };
        match share.try_send(Shared::Players(changes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.share_drops += 1,
            // The sync task is gone (shutting down): stop sharing.
            Err(TrySendError::Closed(_)) => self.share = None,
        }
    }

    /// Replace the world's areas (after an edit). Players' area memberships are
    /// brought up to date on their next move.
    pub fn replace_areas(&mut self, areas: &[Area]) {
        self.areas = AreaIndex::new(areas);
        // A flag in an area that became (or stopped being) safe.
        let areas = &self.areas;
        self.flags
            .recheck(|at| !areas.containing(at).any(|a| a.kind == AreaKind::Safe));
        self.flags_changed = true;
    }

    /// Use the flags among `objects` from now on.
    fn replace_flags(&mut self, objects: &[WorldObject]) {
        let areas = &self.areas;
        let max_radius_m = self.settings.view.leave_radius_m;
        self.flags.replace(objects, max_radius_m, |at| {
            !areas.containing(at).any(|a| a.kind == AreaKind::Safe)
        });
        self.flags_changed = true;
    }

    /// Send every connected player the flags and scores afresh.
    fn tell_flags(&mut self) {
        self.flags_changed = true;
        let teams = self.flags.teams();
        let flags: Vec<_> = self.flags.all().iter().map(|f| f.info()).collect();
        for player in self.slots.iter().flatten() {
            if let Some(link) = &player.link {
                link.send(ServerMessage::Flags {
                    team: player.team.as_deref().map(str::to_owned),
                    teams: teams.clone(),
                    flags: flags.clone(),
                });
            }
        }
    }

    /// Step 6: bring every flag up to date with who stands in its zone.
    fn gameplay(&mut self, now: Instant) {
        if self.flags.all().is_empty() {
            return;
        }
        let snapshot = Arc::clone(&self.publisher.borrow());
        let now_ms = now_ms();
        let mut effects = Vec::new();
        let mut present = Vec::new();
        for index in 0..self.flags.all().len() {
            let flag = &self.flags.all()[index];
            let (centre, r2) = (flag.ecef, chord_for_arc(flag.radius_m).powi(2));
            present.clear();
            snapshot.grid.for_each_near(centre, |slot, pos| {
                if chord2(*pos, centre) > r2 {
                    return;
                }
                if let Some(p) = self.slots.get(slot as usize).and_then(Option::as_ref) {
                    present.push(Presence {
                        entity: p.entity,
                        user_id: p.user_id,
                        name: Arc::clone(&p.name),
                        team: p.team.clone(),
                        local: p.ghost.is_none(),
                        safe: self
                            .areas
                            .containing(p.position)
                            .any(|a| a.kind == AreaKind::Safe),
                    });
                }
            });
            self.flags
                .step(index, &present, self.def.id, now, now_ms, &mut effects);
        }
        self.carry_out(effects);
    }

    /// Do what the flags asked: send events, hand captures to the writer.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut refused = Vec::new();
        for effect in effects {
            match effect {
                Effect::Player {
                    entity,
                    flag_id,
                    change,
                } => {
                    if let Some(player) = self.player_mut(entity) {
                        tell(player, flag_id, change);
                    }
                }
                Effect::Near {
                    flag_id,
                    position,
                    change,
                } => {
                    let mut near = Vec::new();
                    self.for_each_near(position, self.settings.view.radius_m, |p| {
                        if p.link.is_some() {
                            near.push(p.entity);
                        }
                    });
                    for entity in near {
                        if let Some(player) = self.player_mut(entity) {
                            tell(player, flag_id, change.clone());
                        }
                    }
                }
                Effect::Everyone { flag_id, change } => {
                    for player in self.slots.iter_mut().flatten() {
                        tell(player, flag_id, change.clone());
                    }
                }
                Effect::Propose(capture) => {
                    let handed = self
                        .captures
                        .as_ref()
                        .is_some_and(|writer| writer.try_send(capture.clone()).is_ok());
                    if !handed {
                        self.flags
                            .not_committed(capture.flag_id, capture.id, false, &mut refused);
                    }
                }
            }
        }
        if !refused.is_empty() {
            self.carry_out(refused);
        }
    }
}

/// Send a connected player a `FlagEvent`, numbered.
fn tell(player: &mut Player, flag_id: Uuid, change: FlagChange) {
    if let Some(link) = &player.link {
        player.flag_events += 1;
        link.send(ServerMessage::FlagEvent {
            n: player.flag_events,
            flag_id,
            change,
        });
    }
}

/// A histogram of tick durations from 1 µs to 60 s at 3 significant digits.
fn duration_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Refuse a move: send a `Correction` and count a strike. Returns whether the
/// player has now earned a kick.
fn correct(
    player: &mut Player,
    seq: u32,
    reason: CorrectionReason,
    mode: crate::store::MovementMode,
    now: Instant,
) -> bool {
    let id = player.next_correction;
    player.next_correction = player.next_correction.wrapping_add(1);
    player.awaiting_ack = Some((id, reason));
    player
        .inputs
        .retain(|i| matches!(i, Input::AckCorrection { .. }));
    if let Some(link) = &player.link {
        link.send(ServerMessage::Correction {
            id,
            seq,
            lon: player.position.lon,
            lat: player.position.lat,
            reason,
        });
    }
    if !movement::is_strike(reason, mode) {
        return false;
    }
    if player
        .last_strike
        .is_some_and(|t| now.duration_since(t) > movement::STRIKE_MEMORY)
    {
        player.strikes = 0;
    }
    player.strikes += 1;
    player.last_strike = Some(now);
    player.strikes >= movement::STRIKE_LIMIT
}

fn kick(link: &ConnLink, reason: KickReason) {
    let retry_after_ms = (reason == KickReason::Shutdown).then_some(SHUTDOWN_RETRY_MS);
    link.send(ServerMessage::Kicked {
        reason,
        retry_after_ms,
        redirect: None,
    });
    link.signals.close(close::for_kick(reason), reason.as_str());
}

/// The position to save for `player`, as of `updated_at_ms`.
fn stored(def: &WorldDef, player: &Player, updated_at_ms: i64) -> StoredPosition {
    StoredPosition {
        user_id: player.user_id,
        world_id: def.id,
        position: player.position,
        heading: player.heading,
        epoch: player.epoch,
        seq: player.position_seq,
        updated_at_ms,
    }
}

/// 128 bits from the thread's cryptographically secure generator, hex:
/// unguessable, so holding one proves being the client it was sent to.
fn resume_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::ghost::GHOST_TTL;
    use super::*;
    use crate::store::{Bounds, MovementMode};

    const TICK: Duration = Duration::from_millis(50);

    fn world() -> World {
        let def = WorldDef {
            id: Uuid::nil(),
            name: "w".into(),
            bounds: Bounds::WORLD,
            center: meridian_protocol::LonLat { lon: 0.0, lat: 0.0 },
            movement_mode: MovementMode::Input,
            max_speed_mps: None,
        };
        let settings = Settings {
            shard_id: "here".into(),
            tick_hz: 20,
            view: View::new(150.0, 64),
            default_speed_mps: 10.0,
            resume_grace: Duration::from_secs(20),
            chat_radius_m: 100.0,
        };
        World::new(def, &[], settings, Arc::new(PendingPositions::default()))
    }

    #[test]
    fn the_tick_thread_ends_when_every_handle_is_gone() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Never cancelled: as when a server is dropped without being stopped.
        let stop = CancellationToken::new();
        let task = {
            let _context = runtime.enter();
            let (handle, task) = world().spawn(stop.clone());
            drop(handle);
            task
        };
        // Dropping the runtime waits for the tick's thread.
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(task);
            drop(runtime);
            let _ = done.send(());
        });
        assert!(
            ended.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the runtime did not shut down: the tick thread is still running"
        );
    }

    fn remote(user_id: Uuid, epoch: u64, seq: u64, lon: f64) -> RemotePlayer {
        RemotePlayer {
            user_id,
            name: "far".into(),
            epoch,
            seq,
            position: meridian_protocol::LonLat { lon, lat: 52.0 },
            heading: 90.0,
            speed_mps: 1.5,
            team: None,
        }
    }

    fn ghosts(shard: &str, players: Vec<RemotePlayer>) -> Command {
        Command::Ghosts {
            shard: shard.into(),
            players,
        }
    }

    fn join(
        user_id: Uuid,
        epoch: u64,
    ) -> (
        Command,
        tokio::sync::oneshot::Receiver<Result<Joined, JoinError>>,
    ) {
        let (link, _outbox) = ConnLink::new(u64::from(epoch as u32));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = Command::Join {
            request: JoinRequest {
                user_id,
                session_id: Uuid::now_v7(),
                name: "local".into(),
                epoch,
                stored: None,
                team: None,
                link,
            },
            reply,
        };
        (command, answer)
    }

    /// The lon of `user`'s entity in the newest snapshot, if it is there.
    fn seen_lon(
        world: &World,
        snapshots: &watch::Receiver<Arc<Snapshot>>,
        user: Uuid,
    ) -> Option<f64> {
        let slot = *world.by_user.get(&user)?;
        let snapshot = snapshots.borrow();
        let entity = snapshot.slots[slot as usize].as_ref()?;
        Some(entity.state.position().lon)
    }

    #[test]
    fn ghosts_appear_move_newer_only_and_leave_after_their_ttl_unsaved() {
        let mut world = world();
        let snapshots = world.subscribe();
        let user = Uuid::now_v7();
        let mut now = Instant::now();
        world.tick(now, vec![ghosts("there", vec![remote(user, 2, 5, 4.0)])]);
        assert_eq!((world.ghosts(), world.population()), (1, 0));
        assert_eq!(
            snapshots.borrow().population(),
            0,
            "ghosts are not this shard's players"
        );
        assert!((seen_lon(&world, &snapshots, user).unwrap() - 4.0).abs() < 1e-6);

        // Older news is ignored; newer news moves it, a new epoch too.
        for (epoch, seq, lon, expected) in [
            (2, 4, 9.0, 4.0),
            (1, 99, 9.0, 4.0),
            (2, 6, 4.1, 4.1),
            (3, 1, 4.2, 4.2),
        ] {
            now += TICK;
            world.tick(
                now,
                vec![ghosts("there", vec![remote(user, epoch, seq, lon)])],
            );
            let lon_seen = seen_lon(&world, &snapshots, user).unwrap();
            assert!(
                (lon_seen - expected).abs() < 1e-6,
                "({epoch}, {seq}): {lon_seen}"
            );
        }

        // Unheard of for longer than the TTL, it leaves; it was never saved.
        now += GHOST_TTL - TICK;
        world.tick(now, Vec::new());
        assert_eq!(world.ghosts(), 1, "still within its TTL");
        now += 2 * TICK;
        world.tick(now, Vec::new());
        assert_eq!(world.ghosts(), 0);
        assert!(world.by_user.is_empty());
        assert!(
            world.pending.is_empty(),
            "a ghost is its own shard's to save"
        );
    }

    #[tokio::test]
    async fn a_local_player_wins_over_its_ghost_and_takes_its_place() {
        let mut world = world();
        let snapshots = world.subscribe();
        let (local, wanderer) = (Uuid::now_v7(), Uuid::now_v7());
        let mut now = Instant::now();
        let (command, answer) = join(local, 1);
        world.tick(now, vec![command]);
        let here = answer.await.unwrap().unwrap();
        now += TICK;
        world.tick(now, vec![ghosts("there", vec![remote(local, 9, 9, 7.0)])]);
        assert_eq!(world.ghosts(), 0, "news of a local player is ignored");
        let slot = world.by_user[&local];
        assert_eq!(
            world.slots[slot as usize].as_ref().unwrap().position,
            here.position
        );

        // A player seen as a ghost logs in here: same entity, where it was.
        now += TICK;
        world.tick(
            now,
            vec![ghosts("there", vec![remote(wanderer, 4, 30, 4.5)])],
        );
        let ghost_entity = world.slots[world.by_user[&wanderer] as usize]
            .as_ref()
            .unwrap()
            .entity;
        now += TICK;
        let (command, answer) = join(wanderer, 5);
        world.tick(now, vec![command]);
        let joined = answer.await.unwrap().unwrap();
        assert_eq!(joined.entity, ghost_entity, "others never see it leave");
        assert!((joined.position.lon - 4.5).abs() < 1e-9);
        assert_eq!((world.ghosts(), world.population()), (0, 2));
        assert!((seen_lon(&world, &snapshots, wanderer).unwrap() - 4.5).abs() < 1e-6);
    }

    #[tokio::test]
    async fn changed_local_players_are_shared_every_tick_and_all_once_a_second() {
        let mut world = world();
        let (sender, mut shared) = mpsc::channel(16);
        world.share_with(sender);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut now = Instant::now();
        let (join_a, answer_a) = join(a, 1);
        let (join_b, answer_b) = join(b, 1);
        world.tick(
            now,
            vec![
                join_a,
                join_b,
                ghosts("there", vec![remote(Uuid::now_v7(), 1, 1, 4.0)]),
            ],
        );
        answer_a.await.unwrap().unwrap();
        answer_b.await.unwrap().unwrap();
        let Shared::Players(first) = shared.try_recv().unwrap() else {
            panic!("players first");
        };
        let mut users: Vec<Uuid> = first.players.iter().map(|p| p.user_id).collect();
        users.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(users, expected, "both new, and never the ghost");

        // Nothing changes: nothing is shared until the once-a-second republish.
        for _ in 0..19 {
            now += TICK;
            world.tick(now, vec![ghosts("there", vec![])]);
            assert!(shared.try_recv().is_err());
        }
        now += TICK;
        world.tick(now, Vec::new());
        let Shared::Players(again) = shared.try_recv().unwrap() else {
            panic!("players");
        };
        assert_eq!(again.players.len(), 2);
    }

    #[test]
    fn tick_durations_are_published_once_a_second() {
        let mut world = world();
        let snapshots = world.subscribe();
        let mut now = Instant::now();
        for _ in 0..41 {
            now += Duration::from_millis(50);
            world.tick(now, Vec::new());
        }
        let stats = snapshots.borrow().stats;
        // Published by tick 40, seen in tick 41's snapshot.
        assert_eq!(stats.ticks, 40);
        assert!(stats.p50_us <= stats.p99_us && stats.p99_us <= stats.max_us);
        assert!(stats.max_us >= 1);
    }
}
