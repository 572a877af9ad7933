//! The flag rush: bots converge on flags, team by team, and every capture the
//! shard announces is checked against the capture history it stored.
//!
//! The swarm places `--flag-rush N` flags on a ring around the test area's
//! centre through the admin API (and removes them afterwards). Each team is
//! split into groups, one group per flag it can hold at once, and every
//! `--rush-round-s` each group moves on to the next flag of the ring, so the
//! flags keep changing hands: in each round a flag is held by one team's
//! group, which the other team held the round before. The probes record every
//! `Captured` of these flags they are told of; afterwards the history from
//! `GET /admin/captures` must match: no capture told twice to a probe (a
//! duplicate), none stored in the steady state that a probe was not told of
//! (lost), none told that was not stored (phantom).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use meridian_protocol::LonLat;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use crate::options::{BBox, M_PER_DEG};
use crate::walk::Obstacle;
use crate::LoadtestError;

/// Capture zone radius of the placed flags, metres: the server's default.
pub const RADIUS_M: f64 = 20.0;

/// Capture time of the placed flags: the server's default.
const CAPTURE_TIME_S: f64 = 5.0;

/// Captures committed this close to the end of the steady state may reach
/// the probes after they stopped listening, so they are not counted as lost.
const SETTLE_MS: i64 = 2_000;

/// One placed flag.
#[derive(Debug, Clone)]
pub struct RushFlag {
    /// Its id.
    pub id: Uuid,
    /// Where it stands.
    pub at: LonLat,
}

/// Which flag a bot heads for: its team (by index) and its group in the team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duty {
    /// The team's index in `Rush::teams`.
    pub team: usize,
    /// The bot's group within its team.
    pub group: usize,
}

/// The rush plan every bot follows.
#[derive(Debug)]
pub struct Rush {
    /// The flags, in ring order.
    pub flags: Vec<RushFlag>,
    /// Team names, sorted.
    pub teams: Vec<String>,
    /// How long a group stays on one flag.
    pub round: Duration,
    /// When round 0 began.
    pub t0: Instant,
    /// What the probes were told, per probe: the capture ids in order.
    pub seen: Mutex<Vec<Vec<Uuid>>>,
}

/// The rush's outcome, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RushReport {
    /// Flags placed.
    pub flags: usize,
    /// Seconds each group held a flag.
    pub round_s: f64,
    /// Captures of the placed flags committed during the steady state.
    pub captures: usize,
    /// Those per second of steady state.
    pub captures_per_s: f64,
    /// Probes whose announcements were checked.
    pub probes_checked: usize,
    /// Announcements a probe got twice.
    pub duplicates: usize,
    /// Stored captures some probe was never told of.
    pub lost: usize,
    /// Announcements of captures that were never stored.
    pub phantom: usize,
    /// Whether all three are zero and there was at least one capture.
    pub passed: bool,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: Uuid,
}

#[derive(Debug, Deserialize)]
struct History {
    captures: Vec<Stored>,
}

#[derive(Debug, Deserialize)]
struct Stored {
    id: Uuid,
    flag_id: Uuid,
    captured_at_ms: i64,
}

impl Rush {
    /// Place `count` flags on a ring of `ring_m` metres around the area's
    /// centre, each moved along the ring until it is clear of every obstacle.
    ///
    /// # Errors
    /// `LoadtestError::Tokens` if the admin API refuses.
    pub async fn place(
        http: &reqwest::Client,
        (url, token): (&str, &str),
        world: Option<&str>,
        area: BBox,
        obstacles: &[Obstacle],
        (count, ring_m, round): (usize, f64, Duration),
        teams: Vec<String>,
    ) -> Result<Self, LoadtestError> {
        let centre = area.center();
        let clear = |p: LonLat| {
            obstacles.iter().all(|o| {
                let b = BBox::from_array(o.bbox);
                // Keep the zone itself clear too.
                let margin = RADIUS_M / M_PER_DEG * 2.0;
                !(p.lon > b.min_lon - margin
                    && p.lon < b.max_lon + margin
                    && p.lat > b.min_lat - margin
                    && p.lat < b.max_lat + margin)
            })
        };
        let mut flags = Vec::with_capacity(count);
        for i in 0..count {
            let base = i as f64 / count as f64 * std::f64::consts::TAU;
            let at = (0..36)
                .map(|k| at_angle(centre, ring_m, base + f64::from(k) * 0.05))
                .find(|p| clear(*p))
                .unwrap_or_else(|| at_angle(centre, ring_m, base));
            let body = serde_json::json!({
                "type": "Feature",
                "geometry": { "type": "Point", "coordinates": [at.lon, at.lat] },
                "properties": {
                    "name": format!("rush-{i}"),
                    "world": world,
                    "capture_radius_m": RADIUS_M,
                    "capture_time_s": CAPTURE_TIME_S,
                },
            });
            let request =
                admin(http, reqwest::Method::POST, url, "/admin/flags", token).json(&body);
            let created: Created = answer(request, url).await?;
            flags.push(RushFlag { id: created.id, at });
        }
        Ok(Self {
            flags,
            teams,
            round,
            t0: Instant::now(),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Groups per team: enough that every flag has one team's group.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.flags.len().div_ceil(self.teams.len().max(1)).max(1)
    }

    /// The duty of a bot of `team` that is the `nth` of its team.
    #[must_use]
    pub fn duty(&self, team: Option<&str>, nth: usize) -> Option<Duty> {
        let team = self.teams.iter().position(|t| Some(t.as_str()) == team)?;
        Some(Duty {
            team,
            group: nth % self.groups(),
        })
    }

    /// Where a bot with `duty` heads at `now`.
    #[must_use]
    pub fn target(&self, duty: Duty, now: Instant) -> LonLat {
        let round = (now.saturating_duration_since(self.t0).as_secs_f64()
            / self.round.as_secs_f64()) as usize;
        let teams = self.teams.len().max(1);
        let i = (duty.group * teams + duty.team + round) % self.flags.len();
        self.flags[i].at
    }

    /// Whether `id` is one of the placed flags.
    #[must_use]
    pub fn is_ours(&self, id: Uuid) -> bool {
        self.flags.iter().any(|f| f.id == id)
    }

    /// A probe's announcements, when it stops.
    pub fn record(&self, seen: Vec<Uuid>) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(seen);
    }

    /// Compare what the probes were told with the stored history of the
    /// placed flags; `window_ms` is the steady state in Unix milliseconds.
    ///
    /// # Errors
    /// `LoadtestError::Tokens` if the admin API cannot be read.
    pub async fn check(
        &self,
        http: &reqwest::Client,
        (url, token): (&str, &str),
        world: Option<&str>,
        window_ms: (i64, i64),
    ) -> Result<RushReport, LoadtestError> {
        let mut path = format!("/admin/captures?since_ms={}", window_ms.0 - 60_000);
        if let Some(world) = world {
            path.push_str(&format!("&world={world}"));
        }
        let request = admin(http, reqwest::Method::GET, url, &path, token);
        let history: History = answer(request, url).await?;
        let ours: Vec<&Stored> = history
            .captures
            .iter()
            .filter(|c| self.is_ours(c.flag_id))
            .collect();
        let stored: HashSet<Uuid> = ours.iter().map(|c| c.id).collect();
        let due: Vec<Uuid> = ours
            .iter()
            .filter(|c| {
                c.captured_at_ms >= window_ms.0 && c.captured_at_ms <= window_ms.1 - SETTLE_MS
            })
            .map(|c| c.id)
            .collect();
        let captures = ours
            .iter()
            .filter(|c| c.captured_at_ms >= window_ms.0 && c.captured_at_ms <= window_ms.1)
            .count();
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut duplicates, mut lost, mut phantom) = (0, 0, 0);
        for told in seen.iter() {
            let mut counts: HashMap<Uuid, usize> = HashMap::new();
            for id in told {
                *counts.entry(*id).or_default() += 1;
            }
            duplicates += counts.values().filter(|n| **n > 1).count();
            phantom += counts.keys().filter(|id| !stored.contains(id)).count();
            lost += due.iter().filter(|id| !counts.contains_key(id)).count();
        }
        let seconds = (window_ms.1 - window_ms.0) as f64 / 1000.0;
        Ok(RushReport {
            flags: self.flags.len(),
            round_s: self.round.as_secs_f64(),
            captures,
            captures_per_s: captures as f64 / seconds.max(1e-3),
            probes_checked: seen.len(),
            duplicates,
            lost,
            phantom,
            passed: duplicates == 0 && lost == 0 && phantom == 0 && captures > 0,
        })
    }

    /// Remove the placed flags (their captures stay in the history).
    pub async fn remove(&self, http: &reqwest::Client, (url, token): (&str, &str)) {
        for flag in &self.flags {
            let path = format!("/admin/flags/{}", flag.id);
            let removed = admin(http, reqwest::Method::DELETE, url, &path, token)
                .send()
                .await;
            if let Err(e) = removed {
                tracing::warn!(error = %e, flag = %flag.id, "cannot remove a rush flag");
            }
        }
    }
}

fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    http.request(method, format!("{}{path}", url.trim_end_matches('/')))
        .bearer_auth(token)
}

/// Send an admin request and read its JSON answer.
async fn answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, LoadtestError> {
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| admin_error(url, e))?
        .json()
        .await
        .map_err(|e| admin_error(url, e))
}

fn admin_error(url: &str, e: impl std::fmt::Display) -> LoadtestError {
    LoadtestError::Tokens {
        url: url.to_owned(),
        reason: format!("flag rush: {e}"),
    }
}

/// The point `radius_m` from `centre` at `angle` radians (clockwise from north).
fn at_angle(centre: LonLat, radius_m: f64, angle: f64) -> LonLat {
    let (east, north) = (radius_m * angle.sin(), radius_m * angle.cos());
    LonLat {
        lon: centre.lon + east / (M_PER_DEG * centre.lat.to_radians().cos()),
        lat: centre.lat + north / M_PER_DEG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rush(flags: usize) -> Rush {
        let centre = LonLat {
            lon: 4.9,
            lat: 52.37,
        };
        Rush {
            flags: (0..flags)
                .map(|i| RushFlag {
                    id: Uuid::from_u128(i as u128 + 1),
                    at: at_angle(centre, 80.0, i as f64),
                })
                .collect(),
            teams: vec!["blue".into(), "red".into()],
            round: Duration::from_secs(10),
            t0: Instant::now(),
            seen: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn every_flag_has_one_team_s_group_and_changes_team_every_round() {
        let rush = rush(4);
        let duties: Vec<Duty> = (0..2)
            .flat_map(|team| (0..rush.groups()).map(move |group| Duty { team, group }))
            .collect();
        for round in 0..6u32 {
            let now = rush.t0 + rush.round * round + Duration::from_millis(1);
            let mut held: Vec<(LonLat, usize)> = duties
                .iter()
                .map(|d| (rush.target(*d, now), d.team))
                .collect();
            held.sort_by(|a, b| a.0.lon.total_cmp(&b.0.lon));
            held.dedup_by(|a, b| a.0 == b.0);
            assert_eq!(held.len(), 4, "every flag has a group in round {round}");
            let next = rush.t0 + rush.round * (round + 1) + Duration::from_millis(1);
            for d in &duties {
                let now_at = rush.target(*d, now);
                let other = duties
                    .iter()
                    .find(|e| rush.target(**e, next) == now_at)
                    .expect("someone holds it next round");
                assert_ne!(other.team, d.team, "the flag changes team");
            }
        }
    }

    #[test]
    fn duties_spread_a_team_over_its_groups() {
        let rush = rush(4);
        assert_eq!(rush.duty(Some("red"), 3), Some(Duty { team: 1, group: 1 }));
        assert_eq!(rush.duty(Some("green"), 0), None);
        assert_eq!(rush.duty(None, 0), None);
    }

    #[test]
    fn points_on_the_ring_are_at_its_radius() {
        let centre = LonLat {
            lon: 4.9,
            lat: 52.37,
        };
        for k in 0..8 {
            let p = at_angle(centre, 80.0, f64::from(k));
            let east = (p.lon - centre.lon) * M_PER_DEG * centre.lat.to_radians().cos();
            let north = (p.lat - centre.lat) * M_PER_DEG;
            assert!((east.hypot(north) - 80.0).abs() < 1e-6);
        }
    }
}
