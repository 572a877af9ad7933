//! Flags: the tick's capture system.
//!
//! A flag is a point with a capture zone (a radius). Each tick the world tells
//! this system who stands in each zone (`Presence`, found through the
//! snapshot's grid, so a flag costs one grid lookup, not a scan of every
//! player), and the system answers with `Effect`s for the world to carry out:
//! events to send and captures to propose. Nothing here sends or stores
//! anything itself.
//!
//! The rules, per flag:
//! * Players standing inside a `safe` area neither capture nor contest, and a
//!   flag that itself stands in a `safe` area is never captured.
//! * When players of exactly one team other than the owner's are in the zone,
//!   and at least one of them is local to this shard, the capture starts; if
//!   that stays so for the flag's capture time, the capture is proposed,
//!   credited to the local player of that team who has been inside longest.
//!   Ghosts (players of other shards) count for the presence of their team,
//!   but their own shard runs their capture.
//! * Players of two or more teams in the zone contest it: progress is lost and
//!   nothing is captured until one team is alone again.
//! * The capturing team emptying the zone, or only the owner's team being
//!   left, loses the progress too.
//! * A proposed capture waits for the store's answer; until then the flag is
//!   pending and nothing else happens to it. Committed, it is announced; stale
//!   (another shard got there first), the winner's announcement follows; not
//!   saved (database down), it is refused and must be won again.
//!
//! Announcements are applied by capture id exactly once, whichever way they
//! arrive (this shard's writer, or the control stream from any shard).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_protocol::{FlagChange, FlagInfo, LonLat, TeamInfo};
use uuid::Uuid;

use super::geodesy::to_ecef;
use crate::store::{Capture, CommittedCapture, Team, TeamScore, WorldObject};

/// The capture radius of a flag that sets none, in metres.
pub const DEFAULT_RADIUS_M: f64 = 20.0;

/// The capture time of a flag that sets none.
pub const DEFAULT_CAPTURE_TIME: Duration = Duration::from_secs(5);

/// The `world_objects.kind` of flags.
pub const KIND: &str = "flag";

/// How many announced capture ids are remembered to ignore repeats. Repeats
/// arrive within seconds (the writer's answer and the stream's echo, or a
/// re-announcement of a capture nobody announced), so this is plenty.
const REMEMBERED_CAPTURES: usize = 4096;

/// One player standing in a flag's zone this tick.
#[derive(Debug, Clone)]
pub struct Presence {
    /// Entity id.
    pub entity: u32,
    /// The account.
    pub user_id: Uuid,
    /// Display name.
    pub name: Arc<str>,
    /// The player's team; a player without one neither captures nor contests.
    pub team: Option<Arc<str>>,
    /// Whether the player is this shard's (not a ghost).
    pub local: bool,
    /// Whether the player stands inside a `safe` area.
    pub safe: bool,
}

/// What the world must do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell one player (`Enter`/`Leave`).
    Player {
        /// The player's entity id.
        entity: u32,
        /// The flag.
        flag_id: Uuid,
        /// What happened.
        change: FlagChange,
    },
    /// Tell the players near a flag.
    Near {
        /// The flag.
        flag_id: Uuid,
        /// Where it stands.
        position: LonLat,
        /// What happened.
        change: FlagChange,
    },
    /// Tell every player of the world.
    Everyone {
        /// The flag.
        flag_id: Uuid,
        /// What happened.
        change: FlagChange,
    },
    /// Hand a capture to the writer.
    Propose(Capture),
}

/// Where a flag's capture stands.
#[derive(Debug, Clone, PartialEq)]
enum Progress {
    /// Nobody is capturing it.
    Idle,
    /// `team` has held the zone alone since `since`.
    Capturing { team: Arc<str>, since: Instant },
    /// More than one team is in the zone.
    Contested,
    /// Capture `id` is with the writer.
    Pending { id: Uuid },
}

/// One flag as the tick holds it.
#[derive(Debug, Clone)]
pub struct Flag {
    /// The `world_objects` id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Where it stands.
    pub position: LonLat,
    /// Earth-centred metric position, for grid lookups.
    pub ecef: [f64; 3],
    /// Capture zone radius, metres.
    pub radius_m: f64,
    /// How long a team must hold the zone alone.
    pub capture_time: Duration,
    /// The team holding it.
    pub owner: Option<Arc<str>>,
    /// The stored version (see `WorldObject::version`).
    pub version: i64,
    /// False when it stands in a `safe` area.
    pub capturable: bool,
    /// Local players inside the zone, with when they entered, sorted by entity.
    inside: Vec<(u32, Instant)>,
    progress: Progress,
}

impl Flag {
    /// A flag from its stored object, its radius at most `max_radius_m`.
    /// `capturable` says whether it stands outside every `safe` area; `team`
    /// maps a stored team name to the world's shared one.
    #[must_use]
    pub fn from_object(
        object: &WorldObject,
        max_radius_m: f64,
        capturable: bool,
        team: impl Fn(&str) -> Option<Arc<str>>,
    ) -> Self {
        let number = |key: &str| {
            object
                .properties
                .get(key)
                .and_then(serde_json::Value::as_f64)
        };
        let radius_m = number("capture_radius_m")
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(DEFAULT_RADIUS_M)
            .min(max_radius_m);
        let capture_time = number("capture_time_s")
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(DEFAULT_CAPTURE_TIME, Duration::from_secs_f64);
        Self {
            id: object.id,
            name: object.name.clone(),
            position: object.position,
            ecef: to_ecef(object.position),
            radius_m,
            capture_time,
            owner: object.owner.as_deref().and_then(team),
            version: object.version,
            capturable,
            inside: Vec::new(),
            progress: Progress::Idle,
        }
    }

    /// The flag as clients are told it.
    #[must_use]
    pub fn info(&self) -> FlagInfo {
        FlagInfo {
            id: self.id,
            name: self.name.clone(),
            position: self.position,
            radius_m: self.radius_m as f32,
            capture_ms: self.capture_time.as_millis().min(u128::from(u32::MAX)) as u32,
            owner: self.owner.as_deref().map(str::to_owned),
            capturable: self.capturable,
        }
    }
}

/// A world's flags, teams and scores.
#[derive(Debug, Default)]
pub struct Flags {
    /// The flags.
    flags: Vec<Flag>,
    /// Every team, in display order, with its score.
    teams: Vec<(Team, Arc<str>, i64)>,
    /// Capture ids already announced, oldest first, and the same as a set.
    announced: VecDeque<Uuid>,
    announced_set: HashSet<Uuid>,
}

impl Flags {
    /// Flags with these teams and scores (teams without a score start at 0).
    #[must_use]
    pub fn new(teams: Vec<Team>, scores: &[TeamScore]) -> Self {
        let teams = teams
            .into_iter()
            .map(|team| {
                let score = scores
                    .iter()
                    .find(|s| s.team == team.name)
                    .map_or(0, |s| s.score);
                let name: Arc<str> = Arc::from(team.name.as_str());
                (team, name, score)
            })
            .collect();
        Self {
            teams,
            ..Self::default()
        }
    }

    /// The world's shared name of team `name`, if it is a team.
    #[must_use]
    pub fn team(&self, name: &str) -> Option<Arc<str>> {
        self.teams
            .iter()
            .find(|(team, _, _)| team.name == name)
            .map(|(_, shared, _)| Arc::clone(shared))
    }

    /// Replace the flags (after an edit). A flag whose stored version did not
    /// change keeps its capture in progress and who is inside; others start
    /// afresh. Radii are capped at `max_radius_m` (what one grid lookup
    /// covers); `capturable` says whether a position is outside every `safe` area.
    pub fn replace(
        &mut self,
        objects: &[WorldObject],
        max_radius_m: f64,
        capturable: impl Fn(LonLat) -> bool,
    ) {
        let mut old = std::mem::take(&mut self.flags);
        for object in objects.iter().filter(|o| o.kind == KIND) {
            let capturable = capturable(object.position);
            let fresh = Flag::from_object(object, max_radius_m, capturable, |t| self.team(t));
            let kept = old
                .iter()
                .position(|f| f.id == object.id && f.version == object.version)
                .map(|i| old.swap_remove(i));
            self.flags.push(match kept {
                Some(flag) => Flag {
                    inside: flag.inside,
                    progress: flag.progress,
                    ..fresh
                },
                None => fresh,
            });
        }
    }

    /// Decide again which flags stand in `safe` areas (after an area edit).
    pub fn recheck(&mut self, capturable: impl Fn(LonLat) -> bool) {
        for flag in &mut self.flags {
            flag.capturable = capturable(flag.position);
        }
    }

    /// The flags.
    #[must_use]
    pub fn all(&self) -> &[Flag] {
        &self.flags
    }

    /// The teams with their scores, as clients are told them.
    #[must_use]
    pub fn teams(&self) -> Vec<TeamInfo> {
        self.teams
            .iter()
            .map(|(team, _, score)| TeamInfo {
                name: team.name.clone(),
                colour: team.colour.clone(),
                score: *score,
            })
            .collect()
    }

    /// The scores, in display order.
    #[must_use]
    pub fn scores(&self) -> Vec<TeamScore> {
        self.teams
            .iter()
            .map(|(team, _, score)| TeamScore {
                team: team.name.clone(),
                score: *score,
            })
            .collect()
    }

    /// Every score back to 0.
    pub fn reset_scores(&mut self) {
        for (_, _, score) in &mut self.teams {
            *score = 0;
        }
    }

    /// Bring flag `index` up to date with who stands in its zone at `now`.
    /// `present` is everyone within its radius, local players and ghosts.
    pub fn step(
        &mut self,
        index: usize,
        present: &[Presence],
        world_id: Uuid,
        now: Instant,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let flag = &mut self.flags[index];
        enter_and_leave(flag, present, now, effects);
        if !flag.capturable || matches!(flag.progress, Progress::Pending { .. }) {
            return;
        }
        let mut teams = present
            .iter()
            .filter(|p| !p.safe)
            .filter_map(|p| p.team.as_ref());
        let alone = match teams.next() {
            None => None,
            Some(first) if teams.all(|t| t == first) => Some(first),
            Some(_) => {
                if flag.progress != Progress::Contested {
                    flag.progress = Progress::Contested;
                    effects.push(near(flag, FlagChange::Contested));
                }
                return;
            }
        };
        // The team that may capture: alone, not the owner, with a local player.
        let capturer = alone.filter(|team| {
            flag.owner.as_ref() != Some(*team)
                && present
                    .iter()
                    .any(|p| p.local && !p.safe && p.team.as_ref() == Some(*team))
        });
        let Some(team) = capturer else {
            if matches!(flag.progress, Progress::Capturing { .. }) {
                effects.push(near(flag, FlagChange::Reset));
            }
            flag.progress = Progress::Idle;
            return;
        };
        match &flag.progress {
            Progress::Capturing { team: t, since } if t == team => {
                if now.duration_since(*since) < flag.capture_time {
                    return;
                }
                // Credited: the capturing team's local player inside longest.
                let credited = flag
                    .inside
                    .iter()
                    .filter_map(|(entity, at)| {
                        present
                            .iter()
                            .find(|p| {
                                p.entity == *entity && !p.safe && p.team.as_ref() == Some(team)
                            })
                            .map(|p| (at, p))
                    })
                    .min_by_key(|(at, _)| **at)
                    .map(|(_, p)| p);
                let Some(player) = credited else {
                    return;
                };
                let id = Uuid::now_v7();
                effects.push(Effect::Propose(Capture {
                    id,
                    world_id,
                    flag_id: flag.id,
                    user_id: player.user_id,
                    name: player.name.to_string(),
                    team: team.to_string(),
                    version: flag.version,
                    captured_at_ms: now_ms,
                }));
                flag.progress = Progress::Pending { id };
            }
            _ => {
                let done_ms = now_ms + flag.capture_time.as_millis() as i64;
                flag.progress = Progress::Capturing {
                    team: Arc::clone(team),
                    since: now,
                };
                effects.push(near(
                    flag,
                    FlagChange::Capturing {
                        team: team.to_string(),
                        done_ms: u64::try_from(done_ms).unwrap_or(0),
                    },
                ));
            }
        }
    }

    /// The writer did not commit capture `id` (`saved` false: the database
    /// was unavailable, so it is refused; otherwise it was stale and the
    /// winner's announcement follows). The flag is free to be won again.
    pub fn not_committed(
        &mut self,
        flag_id: Uuid,
        id: Uuid,
        saved: bool,
        effects: &mut Vec<Effect>,
    ) {
        let Some(flag) = self.flags.iter_mut().find(|f| f.id == flag_id) else {
            return;
        };
        if flag.progress == (Progress::Pending { id }) {
            flag.progress = Progress::Idle;
            if !saved {
                effects.push(near(flag, FlagChange::Refused));
            }
        }
    }

    /// Apply a committed capture, once per capture id however often it
    /// arrives: the flag changes hands (unless a newer version is already
    /// held), the team's score is brought up, and everyone is told.
    pub fn apply(&mut self, committed: &CommittedCapture, effects: &mut Vec<Effect>) {
        let capture = &committed.capture;
        if !self.announced_set.insert(capture.id) {
            return;
        }
        self.announced.push_back(capture.id);
        if self.announced.len() > REMEMBERED_CAPTURES {
            if let Some(old) = self.announced.pop_front() {
                self.announced_set.remove(&old);
            }
        }
        let team = self.team(&capture.team);
        if let Some((_, _, score)) = self
            .teams
            .iter_mut()
            .find(|(t, _, _)| t.name == capture.team)
        {
            // Scores only grow between resets, and announcements may overtake
            // each other: the larger is the newer.
            *score = (*score).max(committed.score);
        }
        if let Some(flag) = self.flags.iter_mut().find(|f| f.id == capture.flag_id) {
            if committed.version > flag.version {
                flag.version = committed.version;
                flag.owner = team;
                flag.progress = Progress::Idle;
            } else if flag.progress == (Progress::Pending { id: capture.id }) {
                flag.progress = Progress::Idle;
            }
        }
        effects.push(Effect::Everyone {
            flag_id: capture.flag_id,
            change: FlagChange::Captured {
                capture_id: capture.id,
                team: capture.team.clone(),
                player_id: capture.user_id,
                name: capture.name.clone(),
                score: committed.score,
            },
        });
    }

    /// Forget a player who left the world: it is no longer inside any zone.
    pub fn forget(&mut self, entity: u32) {
        for flag in &mut self.flags {
            flag.inside.retain(|(e, _)| *e != entity);
        }
    }
}

fn near(flag: &Flag, change: FlagChange) -> Effect {
    Effect::Near {
        flag_id: flag.id,
        position: flag.position,
        change,
    }
}

/// `Enter`/`Leave` for the local players whose presence in the zone changed.
/// `inside` and the local players present are both kept sorted by entity, so
/// a crowd in the zone costs a sort and a merge, not every pair compared.
fn enter_and_leave(flag: &mut Flag, present: &[Presence], now: Instant, effects: &mut Vec<Effect>) {
    let flag_id = flag.id;
    let mut here: Vec<u32> = present
        .iter()
        .filter(|p| p.local)
        .map(|p| p.entity)
        .collect();
    here.sort_unstable();
    here.dedup();
    let before = std::mem::take(&mut flag.inside);
    let mut was = before.into_iter().peekable();
    let mut inside = Vec::with_capacity(here.len());
    for entity in here {
        // Everyone before this entity in the old list has left.
        while let Some(&(gone, _)) = was.peek().filter(|(e, _)| *e < entity) {
            was.next();
            effects.push(Effect::Player {
                entity: gone,
                flag_id,
                change: FlagChange::Leave,
            });
        }
        match was.next_if(|(e, _)| *e == entity) {
            Some(stayed) => inside.push(stayed),
            None => {
                inside.push((entity, now));
                effects.push(Effect::Player {
                    entity,
                    flag_id,
                    change: FlagChange::Enter,
                });
            }
        }
    }
    for (gone, _) in was {
        effects.push(Effect::Player {
            entity: gone,
            flag_id,
            change: FlagChange::Leave,
        });
    }
    flag.inside = inside;
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: &str = "red";
    const BLUE: &str = "blue";

    fn teams() -> Vec<Team> {
        [(RED, "#e5484d"), (BLUE, "#3e63dd")]
            .map(|(name, colour)| Team {
                name: name.into(),
                colour: colour.into(),
            })
            .into()
    }

    fn flags(owner: Option<&str>) -> Flags {
        let mut flags = Flags::new(teams(), &[]);
        let object = WorldObject {
            id: Uuid::now_v7(),
            world_id: Uuid::nil(),
            kind: KIND.into(),
            name: "Flag".into(),
            position: LonLat {
                lon: 4.9,
                lat: 52.37,
            },
            properties: serde_json::json!({ "capture_radius_m": 20, "capture_time_s": 5 }),
            owner: owner.map(str::to_owned),
            version: 3,
        };
        flags.replace(&[object], 200.0, |_| true);
        flags
    }

    fn player(flags: &Flags, entity: u32, team: &str, local: bool) -> Presence {
        Presence {
            entity,
            user_id: Uuid::from_u128(u128::from(entity)),
            name: Arc::from(format!("p{entity}")),
            team: flags.team(team),
            local,
            safe: false,
        }
    }

    /// Step flag 0 at `t` seconds after `t0`; returns the effects.
    fn step(flags: &mut Flags, t0: Instant, t: f64, present: &[Presence]) -> Vec<Effect> {
        let mut effects = Vec::new();
        let now = t0 + Duration::from_secs_f64(t);
        flags.step(
            0,
            present,
            Uuid::nil(),
            now,
            (t * 1000.0) as i64,
            &mut effects,
        );
        effects
    }

    fn proposed(effects: &[Effect]) -> Option<&Capture> {
        effects.iter().find_map(|e| match e {
            Effect::Propose(c) => Some(c),
            _ => None,
        })
    }

    fn near_changes(effects: &[Effect]) -> Vec<&FlagChange> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Near { change, .. } => Some(change),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_team_alone_for_the_capture_time_proposes_a_capture_and_not_before() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let red = [player(&flags, 1, RED, true)];
        let first = step(&mut flags, t0, 0.0, &red);
        assert!(first.contains(&Effect::Player {
            entity: 1,
            flag_id: flags.all()[0].id,
            change: FlagChange::Enter
        }));
        assert!(
            matches!(near_changes(&first)[..], [FlagChange::Capturing { team, done_ms: 5000 }] if team == RED)
        );
        assert!(proposed(&step(&mut flags, t0, 4.9, &red)).is_none());
        let capture = proposed(&step(&mut flags, t0, 5.0, &red)).cloned().unwrap();
        assert_eq!(capture.team, RED);
        assert_eq!(capture.user_id, Uuid::from_u128(1));
        assert_eq!(capture.version, 3);
        // Pending: nothing more is proposed until the writer answers.
        assert!(proposed(&step(&mut flags, t0, 9.0, &red)).is_none());
    }

    /// (entity, change) of every `Enter`/`Leave`, sorted.
    fn comings_and_goings(effects: &[Effect]) -> Vec<(u32, &'static str)> {
        let mut seen: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Player {
                    entity,
                    change: FlagChange::Enter,
                    ..
                } => Some((*entity, "enter")),
                Effect::Player {
                    entity,
                    change: FlagChange::Leave,
                    ..
                } => Some((*entity, "leave")),
                _ => None,
            })
            .collect();
        seen.sort_unstable();
        seen
    }

    #[test]
    fn each_local_player_is_told_once_when_it_enters_and_once_when_it_leaves() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let p = |flags: &Flags, entity, local| player(flags, entity, RED, local);
        // In any order, a ghost among them, one player listed twice.
        let first = [7, 3, 5, 9, 3].map(|e| p(&flags, e, e != 5));
        let second = [8, 7, 1].map(|e| p(&flags, e, true));
        let entered = step(&mut flags, t0, 0.0, &first);
        assert_eq!(
            comings_and_goings(&entered),
            [(3, "enter"), (7, "enter"), (9, "enter")]
        );
        assert!(comings_and_goings(&step(&mut flags, t0, 0.1, &first)).is_empty());
        // 3 and 9 leave, 1 and 8 come, 7 stays.
        assert_eq!(
            comings_and_goings(&step(&mut flags, t0, 0.2, &second)),
            [(1, "enter"), (3, "leave"), (8, "enter"), (9, "leave")]
        );
        // 7 has been inside longest, so it is credited with the capture.
        let capture = proposed(&step(&mut flags, t0, 5.2, &second))
            .cloned()
            .unwrap();
        assert_eq!(capture.user_id, Uuid::from_u128(7));
        assert_eq!(
            comings_and_goings(&step(&mut flags, t0, 5.3, &[])),
            [(1, "leave"), (7, "leave"), (8, "leave")]
        );
    }

    #[test]
    fn leaving_early_resets_the_progress() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let red = [player(&flags, 1, RED, true)];
        step(&mut flags, t0, 0.0, &red);
        let left = step(&mut flags, t0, 3.0, &[]);
        assert_eq!(near_changes(&left), [&FlagChange::Reset]);
        assert!(left.iter().any(|e| matches!(
            e,
            Effect::Player {
                change: FlagChange::Leave,
                ..
            }
        )));
        // Back in: the clock starts again.
        step(&mut flags, t0, 4.0, &red);
        assert!(proposed(&step(&mut flags, t0, 8.9, &red)).is_none());
        assert!(proposed(&step(&mut flags, t0, 9.0, &red)).is_some());
    }

    #[test]
    fn a_contested_flag_does_not_flip() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let both = [player(&flags, 1, RED, true), player(&flags, 2, BLUE, false)];
        step(&mut flags, t0, 0.0, &both[..1]);
        let contested = step(&mut flags, t0, 1.0, &both);
        assert_eq!(near_changes(&contested), [&FlagChange::Contested]);
        for t in 2..20 {
            assert!(proposed(&step(&mut flags, t0, f64::from(t), &both)).is_none());
        }
        // Blue leaves: red starts over.
        step(&mut flags, t0, 20.0, &both[..1]);
        assert!(proposed(&step(&mut flags, t0, 24.9, &both[..1])).is_none());
        assert!(proposed(&step(&mut flags, t0, 25.0, &both[..1])).is_some());
    }

    #[test]
    fn the_owner_does_not_capture_its_own_flag_and_ghosts_are_not_credited() {
        let mut flags = flags(Some(RED));
        let t0 = Instant::now();
        let red = [player(&flags, 1, RED, true)];
        for t in 0..10 {
            assert!(step(&mut flags, t0, f64::from(t), &red)
                .iter()
                .all(|e| matches!(e, Effect::Player { .. })));
        }
        // A blue ghost alone: its own shard captures, not this one.
        let ghost = [player(&flags, 2, BLUE, false)];
        for t in 10..20 {
            assert!(proposed(&step(&mut flags, t0, f64::from(t), &ghost)).is_none());
        }
    }

    #[test]
    fn no_capture_in_a_safe_area() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let mut red = player(&flags, 1, RED, true);
        red.safe = true;
        for t in 0..10 {
            assert!(proposed(&step(&mut flags, t0, f64::from(t), &[red.clone()])).is_none());
        }
        let mut safe_flag = Flags::new(teams(), &[]);
        let object = WorldObject {
            id: Uuid::now_v7(),
            world_id: Uuid::nil(),
            kind: KIND.into(),
            name: "Safe".into(),
            position: LonLat { lon: 0.0, lat: 0.0 },
            properties: serde_json::json!({}),
            owner: None,
            version: 0,
        };
        safe_flag.replace(&[object], 200.0, |_| false);
        red.safe = false;
        for t in 0..10 {
            assert!(proposed(&step(&mut safe_flag, t0, f64::from(t), &[red.clone()])).is_none());
        }
    }

    #[test]
    fn a_capture_is_applied_once_however_often_it_is_announced() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let red = [player(&flags, 1, RED, true)];
        step(&mut flags, t0, 0.0, &red);
        let capture = proposed(&step(&mut flags, t0, 5.0, &red)).cloned().unwrap();
        let committed = CommittedCapture {
            capture,
            version: 4,
            score: 1,
        };
        let mut effects = Vec::new();
        flags.apply(&committed, &mut effects);
        flags.apply(&committed, &mut effects);
        assert_eq!(effects.len(), 1);
        assert_eq!(flags.all()[0].owner.as_deref(), Some(RED));
        assert_eq!(flags.all()[0].version, 4);
        assert_eq!(flags.scores()[0].score, 1);
        // Red now owns it: red standing there captures nothing.
        assert!(proposed(&step(&mut flags, t0, 20.0, &red)).is_none());
    }

    #[test]
    fn a_refused_capture_frees_the_flag_to_be_won_again() {
        let mut flags = flags(None);
        let t0 = Instant::now();
        let red = [player(&flags, 1, RED, true)];
        step(&mut flags, t0, 0.0, &red);
        let capture = proposed(&step(&mut flags, t0, 5.0, &red)).cloned().unwrap();
        let mut effects = Vec::new();
        flags.not_committed(capture.flag_id, capture.id, false, &mut effects);
        assert_eq!(near_changes(&effects), [&FlagChange::Refused]);
        step(&mut flags, t0, 6.0, &red);
        assert!(proposed(&step(&mut flags, t0, 10.9, &red)).is_none());
        assert!(proposed(&step(&mut flags, t0, 11.0, &red)).is_some());
    }
}
