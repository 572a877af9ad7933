//! The store contract: what every `Store` implementation must do, as one generic
//! suite (`run_contract`) that takes a migrated store, so the PostGIS store can
//! run exactly the same checks. Below it, the SQLite-specific checks (files,
//! migrations, cascades) and the demo world seeding.
//!
//! The checks share one store and never assume it is empty: every name and id
//! they create is fresh. `CachedStore` (Redis in front of a store) runs the
//! same suite, with Redis up and with Redis down.

mod util;

use std::path::Path;
use std::sync::Arc;

use meridian_protocol::{AreaKind, LonLat};
use meridian_server::demo;
use meridian_server::store::{
    now_ms, Area, Bounds, CachedStore, Capture, CaptureOutcome, CommittedCapture, MovementMode,
    Profile, RedisCache, Role, Rotation, Session, SqliteStore, Store, StoreError, StoredPosition,
    Team, TeamScore, User, WorldDef, WorldObject,
};
use sha2::{Digest, Sha256};
use util::redis::RedisServer;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The generic suite.
// ---------------------------------------------------------------------------

/// Run every contract check against `store`, which must be migrated.
async fn run_contract(store: &dyn Store) {
    store.ping().await.expect("ping");
    users_round_trip_with_roles(store).await;
    taken_username_or_device_is_a_conflict(store).await;
    profiles_are_accounts_without_secrets(store).await;
    display_names_are_stored_verbatim(store).await;
    teams_are_seeded_in_display_order(store).await;
    new_accounts_join_the_team_with_the_fewest_members(store).await;
    sessions_can_be_revoked_once(store).await;
    refresh_hashes_rotate_once(store).await;
    concurrent_rotations_have_one_winner(store).await;
    epochs_increase_per_user(store).await;
    worlds_round_trip_and_names_are_unique(store).await;
    areas_round_trip_replace_and_delete(store).await;
    world_objects_round_trip(store).await;
    scores_start_at_zero_for_every_team_and_reset(store).await;
    a_capture_commits_owner_version_score_and_history(store).await;
    concurrent_captures_of_one_flag_have_one_winner(store).await;
    unannounced_captures_are_found_until_marked(store).await;
    positions_round_trip(store).await;
    newer_position_wins_by_epoch_then_seq(store).await;
    empty_batch_is_a_no_op(store).await;
    batch_of_ten_thousand_in_one_call(store).await;
    positions_of_unknown_players_do_not_fail_the_batch(store).await;
    nearby_finds_positions_and_objects_within_the_radius_nearest_first(store).await;
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

fn new_user(roles: Vec<Role>) -> User {
    User {
        id: Uuid::now_v7(),
        username: unique("user"),
        display_name: None,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        device_hash: None,
        roles,
        team: None,
        created_at_ms: now_ms(),
    }
}

/// A refresh hash as the server makes them: SHA-256 hex of a fresh secret.
fn refresh_hash() -> String {
    hex::encode(Sha256::digest(Uuid::new_v4().as_bytes()))
}

fn new_session(user: &User, expires_in_ms: i64) -> Session {
    let now = now_ms();
    Session {
        id: Uuid::now_v7(),
        user_id: user.id,
        created_at_ms: now,
        expires_at_ms: now + expires_in_ms,
        revoked: false,
    }
}

fn new_world() -> WorldDef {
    WorldDef {
        id: Uuid::now_v7(),
        name: unique("world"),
        bounds: Bounds {
            min_lon: 4.79,
            min_lat: 52.31,
            max_lon: 4.99,
            max_lat: 52.43,
        },
        center: LonLat {
            lon: 4.8932,
            lat: 52.3731,
        },
        movement_mode: MovementMode::Input,
        max_speed_mps: None,
    }
}

async fn created_user(store: &dyn Store) -> User {
    let user = new_user(vec![]);
    store.create_user(&user).await.expect("create user");
    user
}

async fn created_world(store: &dyn Store) -> WorldDef {
    let world = new_world();
    store.put_world(&world).await.expect("put world");
    world
}

fn position(user: &User, world: &WorldDef, epoch: u64, seq: u64, lon: f64) -> StoredPosition {
    StoredPosition {
        user_id: user.id,
        world_id: world.id,
        position: LonLat {
            lon,
            lat: 52.123_456_789_012_34,
        },
        heading: 123.4,
        epoch,
        seq,
        // Derived from the order, so that two calls describe the same position.
        updated_at_ms: 1_700_000_000_000 + (epoch * 1_000_000 + seq) as i64,
    }
}

async fn users_round_trip_with_roles(store: &dyn Store) {
    let player = created_user(store).await;
    let found = store.user_by_name(&player.username).await.unwrap();
    // Created without a team, so one was assigned.
    let team = found.as_ref().and_then(|u| u.team.clone());
    assert!(
        store
            .teams()
            .await
            .unwrap()
            .iter()
            .any(|t| Some(&t.name) == team.as_ref()),
        "assigned an existing team: {team:?}"
    );
    let expected = User {
        roles: vec![Role::Player],
        team,
        ..player.clone()
    };
    assert_eq!(
        found.as_ref(),
        Some(&expected),
        "by name, with the player role"
    );
    assert_eq!(
        store.user_by_id(player.id).await.unwrap().as_ref(),
        Some(&expected)
    );

    let admin = new_user(vec![Role::Admin]);
    store.create_user(&admin).await.unwrap();
    let found = store.user_by_id(admin.id).await.unwrap().unwrap();
    assert_eq!(
        found.roles,
        [Role::Player, Role::Admin],
        "player is always granted"
    );

    let guest = User {
        password_hash: None,
        device_hash: Some(unique("device")),
        ..new_user(vec![])
    };
    store.create_user(&guest).await.unwrap();
    let found = store
        .user_by_device(guest.device_hash.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, guest.id);
    assert_eq!(found.password_hash, None);

    assert_eq!(store.user_by_name(&unique("nobody")).await.unwrap(), None);
    assert_eq!(
        store.user_by_device(&unique("nodevice")).await.unwrap(),
        None
    );
    assert_eq!(store.user_by_id(Uuid::now_v7()).await.unwrap(), None);
}

async fn taken_username_or_device_is_a_conflict(store: &dyn Store) {
    let first = created_user(store).await;
    let same_name = User {
        id: Uuid::now_v7(),
        ..first.clone()
    };
    let err = store.create_user(&same_name).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.user_by_id(same_name.id).await.unwrap(),
        None,
        "nothing of the refused account remains"
    );

    let device = unique("device");
    let guest = User {
        device_hash: Some(device.clone()),
        ..new_user(vec![])
    };
    store.create_user(&guest).await.unwrap();
    let same_device = User {
        device_hash: Some(device),
        ..new_user(vec![])
    };
    let err = store.create_user(&same_device).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // Named accounts all have no device; that is not a conflict.
    created_user(store).await;
    created_user(store).await;
}

async fn sessions_can_be_revoked_once(store: &dyn Store) {
    let user = created_user(store).await;
    let now = now_ms();
    let session = Session {
        id: Uuid::now_v7(),
        user_id: user.id,
        created_at_ms: now,
        expires_at_ms: now + 3_600_000,
        revoked: false,
    };
    store
        .create_session(&session, &refresh_hash())
        .await
        .unwrap();
    assert_eq!(
        store.session(session.id).await.unwrap(),
        Some(session.clone())
    );

    assert!(
        store.revoke_session(session.id).await.unwrap(),
        "live, so revoked now"
    );
    assert!(
        !store.revoke_session(session.id).await.unwrap(),
        "already revoked"
    );
    let revoked = store.session(session.id).await.unwrap().unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.expires_at_ms, session.expires_at_ms);

    assert!(
        !store.revoke_session(Uuid::now_v7()).await.unwrap(),
        "never existed"
    );
    assert_eq!(store.session(Uuid::now_v7()).await.unwrap(), None);

    let expired = Session {
        id: Uuid::now_v7(),
        expires_at_ms: now - 1,
        ..session
    };
    store
        .create_session(&expired, &refresh_hash())
        .await
        .unwrap();
    assert!(
        !store.revoke_session(expired.id).await.unwrap(),
        "expired, not live"
    );
}

async fn profiles_are_accounts_without_secrets(store: &dyn Store) {
    let teams = team_names(store).await;
    let admin = User {
        team: Some(teams[1].clone()),
        ..new_user(vec![Role::Admin])
    };
    store.create_user(&admin).await.unwrap();
    let expected = Profile {
        id: admin.id,
        username: admin.username.clone(),
        display_name: None,
        roles: vec![Role::Player, Role::Admin],
        team: Some(teams[1].clone()),
    };
    assert_eq!(
        store.profile(admin.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.profile(admin.id).await.unwrap(),
        Some(expected),
        "the same when asked again"
    );
    assert_eq!(store.profile(Uuid::now_v7()).await.unwrap(), None);
}

async fn display_names_are_stored_verbatim(store: &dyn Store) {
    // Bound as parameters, so SQL in a name is only text.
    for name in [
        "Robert'); DROP TABLE users;--",
        "O'Brien \"Bobby\" ; -- 名前 \\ %_",
    ] {
        let user = User {
            display_name: Some(name.to_owned()),
            ..new_user(vec![])
        };
        store.create_user(&user).await.unwrap();
        let found = store.user_by_id(user.id).await.unwrap().unwrap();
        assert_eq!(found.display_name.as_deref(), Some(name));
        let profile = store.profile(user.id).await.unwrap().unwrap();
        assert_eq!(profile.shown_name(), name);
    }
    // Every table is still there, and an account without one shows its username.
    let plain = created_user(store).await;
    let profile = store.profile(plain.id).await.unwrap().unwrap();
    assert_eq!(profile.shown_name(), plain.username);
}

/// The teams' names, in display order.
async fn team_names(store: &dyn Store) -> Vec<String> {
    store
        .teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

async fn teams_are_seeded_in_display_order(store: &dyn Store) {
    let teams = store.teams().await.unwrap();
    assert!(teams.len() >= 2, "{teams:?}");
    assert_eq!(
        teams[..2],
        [
            Team {
                name: "red".into(),
                colour: "#e5484d".into()
            },
            Team {
                name: "blue".into(),
                colour: "#3e63dd".into()
            },
        ]
    );
}

/// The team an account was created with, as every read of it says.
async fn team_of(store: &dyn Store, user: &User) -> String {
    let found = store.user_by_id(user.id).await.unwrap().unwrap();
    let profile = store.profile(user.id).await.unwrap().unwrap();
    assert_eq!(profile.team, found.team, "the profile carries the team");
    let by_name = store.user_by_name(&user.username).await.unwrap().unwrap();
    assert_eq!(by_name.team, found.team);
    found.team.expect("every new account has a team")
}

/// The team that the fewest-members rule picks, given each team's member
/// count relative to the others (ties go to the first in display order).
fn fewest(counts: &[i64]) -> usize {
    (0..counts.len()).min_by_key(|&i| (counts[i], i)).unwrap()
}

async fn new_accounts_join_the_team_with_the_fewest_members(store: &dyn Store) {
    let teams = team_names(store).await;

    // A chosen team is kept, and the profile still starts at epoch 0.
    for team in &teams {
        let user = User {
            team: Some(team.clone()),
            ..new_user(vec![])
        };
        store.create_user(&user).await.unwrap();
        assert_eq!(&team_of(store, &user).await, team);
        assert_eq!(
            store.next_epoch(user.id).await.unwrap(),
            1,
            "the first epoch is still 1"
        );
    }

    // An unknown team is refused, with nothing of the account left behind.
    let lost = User {
        team: Some(unique("no-such-team")),
        ..new_user(vec![])
    };
    let err = store.create_user(&lost).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.user_by_id(lost.id).await.unwrap(), None);
    let retried = User { team: None, ..lost };
    store
        .create_user(&retried)
        .await
        .expect("the name and id are still free");
    team_of(store, &retried).await;

    // The store is shared, so the teams' sizes are not known here. But when
    // every team is assigned once in display order, the teams were even just
    // before (each pick was a smallest team, ties to the first), so assign
    // until that happens...
    let mut recent: Vec<String> = Vec::new();
    for _ in 0..100 {
        let user = created_user(store).await;
        recent.push(team_of(store, &user).await);
        if recent.ends_with(&teams) {
            break;
        }
    }
    assert!(
        recent.ends_with(&teams),
        "assignments never took turns: {recent:?}"
    );
    // ...and from even teams every pick is known.
    let mut counts = vec![0_i64; teams.len()];
    for _ in 0..2 {
        let user = User {
            team: Some(teams[0].clone()),
            ..new_user(vec![])
        };
        store.create_user(&user).await.unwrap();
        counts[0] += 1;
    }
    let mut expected = Vec::new();
    let mut assigned = Vec::new();
    for _ in 0..3 * teams.len() {
        let pick = fewest(&counts);
        counts[pick] += 1;
        expected.push(teams[pick].clone());
        let user = created_user(store).await;
        assigned.push(team_of(store, &user).await);
    }
    assert_eq!(assigned, expected, "the smallest team first, ties in order");
}

async fn refresh_hashes_rotate_once(store: &dyn Store) {
    let user = created_user(store).await;
    let session = new_session(&user, 3_600_000);
    let first = refresh_hash();
    store.create_session(&session, &first).await.unwrap();
    let rotate = |old: &str, new: &str| {
        let (old, new) = (old.to_owned(), new.to_owned());
        async move { store.rotate_refresh(session.id, &old, &new).await.unwrap() }
    };
    let rotated = Rotation::Rotated { user_id: user.id };

    let second = refresh_hash();
    assert_eq!(rotate(&first, &second).await, rotated);
    assert_eq!(
        rotate(&first, &refresh_hash()).await,
        Rotation::Reused,
        "the replaced hash, presented again"
    );
    let third = refresh_hash();
    assert_eq!(
        rotate(&second, &third).await,
        rotated,
        "a reuse changes nothing: the current hash still works"
    );
    assert_eq!(rotate(&second, &refresh_hash()).await, Rotation::Reused);
    assert_eq!(
        rotate(&first, &refresh_hash()).await,
        Rotation::Refused,
        "only the last replaced hash is known"
    );
    assert_eq!(
        rotate(&refresh_hash(), &refresh_hash()).await,
        Rotation::Refused,
        "a secret the session never had"
    );
    assert!(
        !store.session(session.id).await.unwrap().unwrap().revoked,
        "the store never revokes by itself"
    );

    // Only live sessions rotate.
    assert!(store.revoke_session(session.id).await.unwrap());
    assert_eq!(rotate(&third, &refresh_hash()).await, Rotation::Refused);
    assert_eq!(rotate(&second, &refresh_hash()).await, Rotation::Refused);
    let expired = new_session(&user, -1);
    let hash = refresh_hash();
    store.create_session(&expired, &hash).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh(expired.id, &hash, &refresh_hash())
            .await
            .unwrap(),
        Rotation::Refused
    );
    assert_eq!(
        store
            .rotate_refresh(Uuid::now_v7(), &hash, &refresh_hash())
            .await
            .unwrap(),
        Rotation::Refused,
        "no such session"
    );
}

async fn concurrent_rotations_have_one_winner(store: &dyn Store) {
    let user = created_user(store).await;
    let session = new_session(&user, 3_600_000);
    let first = refresh_hash();
    store.create_session(&session, &first).await.unwrap();
    let next: Vec<String> = (0..16).map(|_| refresh_hash()).collect();
    let outcomes = futures_util::future::join_all(
        next.iter()
            .map(|new| store.rotate_refresh(session.id, &first, new)),
    )
    .await;
    let outcomes: Vec<Rotation> = outcomes.into_iter().map(Result::unwrap).collect();
    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|&i| matches!(outcomes[i], Rotation::Rotated { .. }))
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Rotation::Rotated { .. } | Rotation::Reused)),
        "the others presented a replaced hash: {outcomes:?}"
    );
    // The winner's hash is the session's hash now.
    assert_eq!(
        store
            .rotate_refresh(session.id, &next[winners[0]], &refresh_hash())
            .await
            .unwrap(),
        Rotation::Rotated { user_id: user.id }
    );
}

async fn epochs_increase_per_user(store: &dyn Store) {
    let a = created_user(store).await;
    let b = created_user(store).await;
    assert_eq!(store.next_epoch(a.id).await.unwrap(), 1);
    assert_eq!(store.next_epoch(a.id).await.unwrap(), 2);
    assert_eq!(
        store.next_epoch(b.id).await.unwrap(),
        1,
        "independent per user"
    );
    assert_eq!(store.next_epoch(a.id).await.unwrap(), 3);

    // Concurrent takeovers never share an epoch.
    let takes = futures_util::future::join_all((0..20).map(|_| store.next_epoch(b.id))).await;
    let mut epochs: Vec<u64> = takes.into_iter().map(Result::unwrap).collect();
    epochs.sort_unstable();
    assert_eq!(epochs, (2..=21).collect::<Vec<_>>());
}

async fn worlds_round_trip_and_names_are_unique(store: &dyn Store) {
    let mut world = new_world();
    world.movement_mode = MovementMode::Gps;
    world.max_speed_mps = Some(7.5);
    store.put_world(&world).await.unwrap();
    let all = store.worlds().await.unwrap();
    assert!(all.contains(&world), "{all:?}");

    // Replace by id.
    world.name = unique("renamed");
    world.max_speed_mps = None;
    world.bounds = Bounds {
        min_lon: 170.0,
        min_lat: -10.0,
        max_lon: -170.0,
        max_lat: 10.0,
    };
    store.put_world(&world).await.unwrap();
    let all = store.worlds().await.unwrap();
    assert!(all.contains(&world), "replaced in place");
    assert_eq!(all.iter().filter(|w| w.id == world.id).count(), 1);

    let other = WorldDef {
        id: Uuid::now_v7(),
        ..world.clone()
    };
    let err = store.put_world(&other).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

fn square(lon: f64, lat: f64, half: f64) -> geo::Polygon<f64> {
    geo::Polygon::new(
        geo::LineString::from(vec![
            (lon - half, lat - half),
            (lon + half, lat - half),
            (lon + half, lat + half),
            (lon - half, lat + half),
            (lon - half, lat - half),
        ]),
        vec![],
    )
}

async fn areas_round_trip_replace_and_delete(store: &dyn Store) {
    let world = created_world(store).await;
    let mut with_hole = square(4.89, 52.37, 0.002);
    with_hole.interiors_push(geo::LineString::from(vec![
        (4.8895, 52.3695),
        (4.8905, 52.3695),
        (4.8905, 52.3705),
        (4.8895, 52.3695),
    ]));
    let kinds = [
        AreaKind::Blocked,
        AreaKind::SpeedLimit,
        AreaKind::Safe,
        AreaKind::Spawn,
        AreaKind::Zone,
    ];
    let mut areas: Vec<Area> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| Area {
            id: Uuid::now_v7(),
            world_id: world.id,
            name: format!("area {i}"),
            kind,
            geometry: geo::MultiPolygon(vec![
                with_hole.clone(),
                square(4.9 + i as f64 * 0.01, 52.38, 0.000_123_456_789),
            ]),
            properties: serde_json::json!({ "max_speed_mps": 2.0, "note": "ünïcode", "n": [1, 2] }),
        })
        .collect();
    for area in &areas {
        store.put_area(area).await.unwrap();
    }
    assert_eq!(
        store.areas(world.id).await.unwrap(),
        areas,
        "exact geometry"
    );

    areas[0].name = "renamed".into();
    areas[0].kind = AreaKind::Zone;
    areas[0].geometry = geo::MultiPolygon(vec![square(4.88, 52.36, 0.001)]);
    areas[0].properties = serde_json::json!({});
    store.put_area(&areas[0]).await.unwrap();
    assert_eq!(
        store.areas(world.id).await.unwrap(),
        areas,
        "replaced by id"
    );

    assert!(store.delete_area(areas[1].id).await.unwrap());
    assert!(
        !store.delete_area(areas[1].id).await.unwrap(),
        "already gone"
    );
    areas.remove(1);
    assert_eq!(store.areas(world.id).await.unwrap(), areas);

    assert_eq!(store.areas(Uuid::now_v7()).await.unwrap(), []);
}

async fn world_objects_round_trip(store: &dyn Store) {
    let world = created_world(store).await;
    let mut flag = WorldObject {
        id: Uuid::now_v7(),
        world_id: world.id,
        kind: "flag".into(),
        name: "Dam".into(),
        position: LonLat {
            lon: 4.893_212_345_678_9,
            lat: 52.373_198_765_432_1,
        },
        properties: serde_json::json!({ "capture_radius_m": 20, "capture_time_ms": 5000 }),
        owner: None,
        version: 0,
    };
    store.put_world_object(&flag).await.unwrap();
    assert_eq!(
        store.world_objects(world.id).await.unwrap(),
        [flag.clone()],
        "a new object is at version 0"
    );

    // Replacing counts a change, whatever version is given, and writes the owner.
    let team = team_names(store).await.remove(0);
    flag.position.lon = -179.999_999_9;
    flag.name = "moved".into();
    flag.owner = Some(team.clone());
    flag.version = 42;
    store.put_world_object(&flag).await.unwrap();
    flag.version = 1;
    assert_eq!(store.world_objects(world.id).await.unwrap(), [flag.clone()]);
    flag.owner = None;
    flag.version = 0;
    store.put_world_object(&flag).await.unwrap();
    flag.version = 2;
    assert_eq!(
        store.world_objects(world.id).await.unwrap(),
        [flag.clone()],
        "the owner can be cleared"
    );
    assert_eq!(store.world_objects(Uuid::now_v7()).await.unwrap(), []);

    // A new object, even with a version given, starts at 0.
    let other = WorldObject {
        id: Uuid::now_v7(),
        version: 7,
        ..flag.clone()
    };
    store.put_world_object(&other).await.unwrap();
    let stored = store.world_objects(world.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].version, 0);

    assert!(store.delete_world_object(flag.id).await.unwrap());
    assert!(
        !store.delete_world_object(flag.id).await.unwrap(),
        "already gone"
    );
    assert!(!store.delete_world_object(Uuid::now_v7()).await.unwrap());
    assert_eq!(
        store.world_objects(world.id).await.unwrap(),
        [WorldObject {
            version: 0,
            ..other
        }]
    );
}

/// A flag placed in `world` at its centre.
async fn placed_flag(store: &dyn Store, world: &WorldDef) -> WorldObject {
    let flag = WorldObject {
        id: Uuid::now_v7(),
        world_id: world.id,
        kind: "flag".into(),
        name: unique("flag"),
        position: world.center,
        properties: serde_json::json!({ "capture_radius_m": 20 }),
        owner: None,
        version: 0,
    };
    store.put_world_object(&flag).await.unwrap();
    flag
}

/// A capture of `flag` by `user` for `team`, won against `version`.
fn capture_of(flag: &WorldObject, user: &User, team: &str, version: i64) -> Capture {
    Capture {
        id: Uuid::now_v7(),
        world_id: flag.world_id,
        flag_id: flag.id,
        user_id: user.id,
        name: user.username.clone(),
        team: team.to_owned(),
        version,
        captured_at_ms: now_ms(),
    }
}

/// Each team's score in display order, as `team_scores` answers.
fn scores(teams: &[String], values: &[i64]) -> Vec<TeamScore> {
    teams
        .iter()
        .zip(values)
        .map(|(team, &score)| TeamScore {
            team: team.clone(),
            score,
        })
        .collect()
}

/// The one flag of `world`, as stored.
async fn stored_flag(store: &dyn Store, world: &WorldDef) -> WorldObject {
    let mut objects = store.world_objects(world.id).await.unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");
    objects.remove(0)
}

async fn scores_start_at_zero_for_every_team_and_reset(store: &dyn Store) {
    let teams = team_names(store).await;
    let zeros = scores(&teams, &vec![0; teams.len()]);
    let world = created_world(store).await;
    assert_eq!(store.team_scores(world.id).await.unwrap(), zeros);
    assert_eq!(store.team_scores(Uuid::now_v7()).await.unwrap(), zeros);

    let user = created_user(store).await;
    let other = created_world(store).await;
    for (world, team) in [(&world, 1), (&world, 1), (&world, 0), (&other, 1)] {
        let flag = placed_flag(store, world).await;
        let outcome = store
            .capture_flag(&capture_of(&flag, &user, &teams[team], 0))
            .await
            .unwrap();
        assert!(matches!(outcome, CaptureOutcome::Committed { .. }));
    }
    let mut expected = vec![0; teams.len()];
    expected[0] = 1;
    expected[1] = 2;
    assert_eq!(
        store.team_scores(world.id).await.unwrap(),
        scores(&teams, &expected),
        "display order, one point per capture"
    );

    store.reset_scores(world.id).await.unwrap();
    assert_eq!(store.team_scores(world.id).await.unwrap(), zeros);
    assert_eq!(
        store.captures(world.id, 0).await.unwrap().len(),
        3,
        "the history stays"
    );
    let mut other_scores = vec![0; teams.len()];
    other_scores[1] = 1;
    assert_eq!(
        store.team_scores(other.id).await.unwrap(),
        scores(&teams, &other_scores),
        "other worlds keep theirs"
    );
    store.reset_scores(Uuid::now_v7()).await.unwrap();

    // Scores count on from 0 after a reset.
    let flag = placed_flag(store, &world).await;
    let outcome = store
        .capture_flag(&capture_of(&flag, &user, &teams[1], 0))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CaptureOutcome::Committed {
            version: 1,
            score: 1
        }
    );
}

async fn a_capture_commits_owner_version_score_and_history(store: &dyn Store) {
    let teams = team_names(store).await;
    let (red, blue) = (teams[0].as_str(), teams[1].as_str());
    let world = created_world(store).await;
    let user = created_user(store).await;
    let flag = placed_flag(store, &world).await;
    let base = now_ms();

    let first = Capture {
        captured_at_ms: base,
        ..capture_of(&flag, &user, red, 0)
    };
    assert_eq!(
        store.capture_flag(&first).await.unwrap(),
        CaptureOutcome::Committed {
            version: 1,
            score: 1
        }
    );
    let owned = WorldObject {
        owner: Some(red.to_owned()),
        version: 1,
        ..flag.clone()
    };
    assert_eq!(stored_flag(store, &world).await, owned);
    let mut expected_scores = vec![0; teams.len()];
    expected_scores[0] = 1;
    assert_eq!(
        store.team_scores(world.id).await.unwrap(),
        scores(&teams, &expected_scores)
    );
    let first_committed = CommittedCapture {
        capture: first.clone(),
        version: 1,
        score: 1,
    };
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        std::slice::from_ref(&first_committed)
    );
    let unannounced = store.unannounced_captures(base, 10_000).await.unwrap();
    assert!(
        unannounced.contains(&first_committed),
        "not announced yet: {unannounced:?}"
    );

    // Won against the version before: stale, and nothing changes.
    let unchanged = || async {
        assert_eq!(stored_flag(store, &world).await, owned);
        assert_eq!(
            store.team_scores(world.id).await.unwrap(),
            scores(&teams, &expected_scores)
        );
        assert_eq!(
            store.captures(world.id, 0).await.unwrap(),
            std::slice::from_ref(&first_committed)
        );
    };
    let late = capture_of(&flag, &user, blue, 0);
    assert_eq!(
        store.capture_flag(&late).await.unwrap(),
        CaptureOutcome::Stale
    );
    unchanged().await;
    // A retry of a committed capture never counts twice, even at the
    // current version.
    let retry = Capture {
        version: 1,
        ..first.clone()
    };
    assert_eq!(
        store.capture_flag(&retry).await.unwrap(),
        CaptureOutcome::Stale
    );
    unchanged().await;
    // Only flags of the named world can be captured.
    let elsewhere = created_world(store).await;
    let wrong_world = Capture {
        world_id: elsewhere.id,
        ..capture_of(&flag, &user, blue, 1)
    };
    assert_eq!(
        store.capture_flag(&wrong_world).await.unwrap(),
        CaptureOutcome::Stale
    );
    let no_flag = Capture {
        flag_id: Uuid::now_v7(),
        ..capture_of(&flag, &user, blue, 1)
    };
    assert_eq!(
        store.capture_flag(&no_flag).await.unwrap(),
        CaptureOutcome::Stale
    );
    unchanged().await;
    assert_eq!(
        store.team_scores(elsewhere.id).await.unwrap(),
        scores(&teams, &vec![0; teams.len()])
    );

    // Taken over by the other team at the current version.
    let second = Capture {
        captured_at_ms: base + 1000,
        ..capture_of(&flag, &user, blue, 1)
    };
    assert_eq!(
        store.capture_flag(&second).await.unwrap(),
        CaptureOutcome::Committed {
            version: 2,
            score: 1
        }
    );
    expected_scores[1] = 1;
    assert_eq!(
        store.team_scores(world.id).await.unwrap(),
        scores(&teams, &expected_scores)
    );
    let held = stored_flag(store, &world).await;
    assert_eq!((held.owner.as_deref(), held.version), (Some(blue), 2));
    let second_committed = CommittedCapture {
        capture: second.clone(),
        version: 2,
        score: 1,
    };
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        [first_committed.clone(), second_committed.clone()],
        "oldest first"
    );
    assert_eq!(
        store.captures(world.id, base + 1).await.unwrap(),
        std::slice::from_ref(&second_committed),
        "since a time"
    );
    assert_eq!(store.captures(elsewhere.id, 0).await.unwrap(), []);

    // An unknown team is refused and writes nothing.
    let bad_team = capture_of(&flag, &user, &unique("no-such-team"), 2);
    let err = store.capture_flag(&bad_team).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(stored_flag(store, &world).await, held);

    // Other objects are not flags, whatever their version.
    let portal = WorldObject {
        id: Uuid::now_v7(),
        kind: "portal".into(),
        ..flag.clone()
    };
    store.put_world_object(&portal).await.unwrap();
    let at_portal = Capture {
        flag_id: portal.id,
        ..capture_of(&flag, &user, red, 0)
    };
    assert_eq!(
        store.capture_flag(&at_portal).await.unwrap(),
        CaptureOutcome::Stale
    );
    assert!(store.delete_world_object(portal.id).await.unwrap());

    // An edit moves the version on, so a capture won before it is stale.
    store.put_world_object(&held).await.unwrap();
    let edited = stored_flag(store, &world).await;
    assert_eq!((edited.owner.as_deref(), edited.version), (Some(blue), 3));
    assert_eq!(
        store
            .capture_flag(&capture_of(&flag, &user, red, 2))
            .await
            .unwrap(),
        CaptureOutcome::Stale
    );

    // A deleted flag cannot be captured; its captures stay in the history.
    assert!(store.delete_world_object(flag.id).await.unwrap());
    assert_eq!(
        store
            .capture_flag(&capture_of(&flag, &user, red, 3))
            .await
            .unwrap(),
        CaptureOutcome::Stale
    );
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        [first_committed, second_committed]
    );
}

async fn concurrent_captures_of_one_flag_have_one_winner(store: &dyn Store) {
    let teams = team_names(store).await;
    let world = created_world(store).await;
    let flag = placed_flag(store, &world).await;
    let mut captures = Vec::new();
    for i in 0..8 {
        let user = created_user(store).await;
        captures.push(capture_of(&flag, &user, &teams[i % teams.len()], 0));
    }
    let outcomes =
        futures_util::future::join_all(captures.iter().map(|c| store.capture_flag(c))).await;
    let outcomes: Vec<CaptureOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|&i| matches!(outcomes[i], CaptureOutcome::Committed { .. }))
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = &captures[winners[0]];
    assert_eq!(
        outcomes[winners[0]],
        CaptureOutcome::Committed {
            version: 1,
            score: 1
        }
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, CaptureOutcome::Committed { .. } | CaptureOutcome::Stale)),
        "{outcomes:?}"
    );

    let held = stored_flag(store, &world).await;
    assert_eq!((held.owner.as_ref(), held.version), (Some(&winner.team), 1));
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        [CommittedCapture {
            capture: winner.clone(),
            version: 1,
            score: 1
        }],
        "one capture in the history"
    );
    let expected: Vec<i64> = teams.iter().map(|t| i64::from(*t == winner.team)).collect();
    assert_eq!(
        store.team_scores(world.id).await.unwrap(),
        scores(&teams, &expected),
        "one point"
    );
}

async fn unannounced_captures_are_found_until_marked(store: &dyn Store) {
    let teams = team_names(store).await;
    let world = created_world(store).await;
    let user = created_user(store).await;
    // Captured long ago (2001), so that captures of the other checks, made
    // now, are later than all of these.
    let t0 = 1_000_000_000_000;
    let mut committed = Vec::new();
    for (i, at) in [t0 + 2, t0, t0 + 5].into_iter().enumerate() {
        let flag = placed_flag(store, &world).await;
        let capture = Capture {
            captured_at_ms: at,
            ..capture_of(&flag, &user, &teams[0], 0)
        };
        store.capture_flag(&capture).await.unwrap();
        committed.push(CommittedCapture {
            capture,
            version: 1,
            score: i as i64 + 1,
        });
    }
    let [a, b, c] = [0, 1, 2].map(|i| committed[i].clone());
    let ours = |all: Vec<CommittedCapture>| -> Vec<CommittedCapture> {
        all.into_iter()
            .filter(|c| c.capture.world_id == world.id)
            .collect()
    };

    assert_eq!(
        ours(store.unannounced_captures(t0 + 2, 10_000).await.unwrap()),
        [b.clone(), a.clone()],
        "at or before the time, oldest first"
    );
    let first = store.unannounced_captures(t0 + 5, 1).await.unwrap();
    assert_eq!(first.len(), 1, "at most the limit");
    assert!(
        first[0].capture.captured_at_ms <= t0,
        "the oldest: {first:?}"
    );
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        [b.clone(), a.clone(), c.clone()]
    );
    assert_eq!(
        store.captures(world.id, t0 + 1).await.unwrap(),
        [a.clone(), c.clone()]
    );

    store
        .mark_announced(&[b.capture.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(
        ours(store.unannounced_captures(t0 + 5, 10_000).await.unwrap()),
        [a.clone(), c.clone()],
        "unknown ids are ignored"
    );
    store.mark_announced(&[]).await.unwrap();
    store
        .mark_announced(&[a.capture.id, c.capture.id, b.capture.id])
        .await
        .unwrap();
    assert_eq!(
        ours(
            store
                .unannounced_captures(now_ms() + 86_400_000, 10_000)
                .await
                .unwrap()
        ),
        []
    );
    assert_eq!(
        store.captures(world.id, 0).await.unwrap(),
        [b, a, c],
        "announced captures stay in the history"
    );
}

async fn positions_round_trip(store: &dyn Store) {
    let user = created_user(store).await;
    let world = created_world(store).await;
    assert_eq!(store.position(user.id, world.id).await.unwrap(), None);
    let p = position(&user, &world, 1, 1, 4.893_212_345_678_912);
    assert_eq!(store.save_positions(&[p]).await.unwrap(), 1);
    assert_eq!(
        store.position(user.id, world.id).await.unwrap(),
        Some(p),
        "bit-exact"
    );

    // The same player in another world is another row.
    let elsewhere = created_world(store).await;
    assert_eq!(store.position(user.id, elsewhere.id).await.unwrap(), None);
}

async fn newer_position_wins_by_epoch_then_seq(store: &dyn Store) {
    let user = created_user(store).await;
    let world = created_world(store).await;
    let stored = |epoch, seq, lon| position(&user, &world, epoch, seq, lon);
    let current = || store.position(user.id, world.id);

    store.save_positions(&[stored(2, 10, 1.0)]).await.unwrap();

    for (epoch, seq) in [(2, 9), (2, 10), (1, 11), (1, 1000)] {
        let n = store
            .save_positions(&[stored(epoch, seq, 9.0)])
            .await
            .unwrap();
        assert_eq!(n, 0, "({epoch}, {seq}) is not newer than (2, 10)");
        assert_eq!(current().await.unwrap().unwrap().position.lon, 1.0);
    }

    assert_eq!(
        store.save_positions(&[stored(2, 11, 2.0)]).await.unwrap(),
        1
    );
    assert_eq!(current().await.unwrap(), Some(stored(2, 11, 2.0)));

    // A new epoch (a new login) wins even though its seq starts over.
    assert_eq!(store.save_positions(&[stored(3, 1, 3.0)]).await.unwrap(), 1);
    let now = current().await.unwrap().unwrap();
    assert_eq!((now.epoch, now.seq, now.position.lon), (3, 1, 3.0));
}

async fn empty_batch_is_a_no_op(store: &dyn Store) {
    assert_eq!(store.save_positions(&[]).await.unwrap(), 0);
}

async fn batch_of_ten_thousand_in_one_call(store: &dyn Store) {
    // 100 players in 100 worlds: 10,000 distinct rows.
    let mut users = Vec::new();
    let mut worlds = Vec::new();
    for _ in 0..100 {
        users.push(created_user(store).await);
        worlds.push(created_world(store).await);
    }
    let batch: Vec<StoredPosition> = users
        .iter()
        .flat_map(|u| worlds.iter().map(move |w| (u, w)))
        .enumerate()
        .map(|(i, (u, w))| position(u, w, 1, 1, -180.0 + i as f64 * 0.0313))
        .collect();
    assert_eq!(batch.len(), 10_000);
    assert_eq!(store.save_positions(&batch).await.unwrap(), 10_000);
    for p in [batch[0], batch[4_321], batch[9_999]] {
        assert_eq!(
            store.position(p.user_id, p.world_id).await.unwrap(),
            Some(p)
        );
    }

    // Everyone moves on: all rows change again in one call.
    let moved: Vec<StoredPosition> = batch
        .iter()
        .map(|p| StoredPosition { seq: 2, ..*p })
        .collect();
    assert_eq!(store.save_positions(&moved).await.unwrap(), 10_000);
    assert_eq!(store.save_positions(&moved).await.unwrap(), 0, "not newer");
}

async fn positions_of_unknown_players_do_not_fail_the_batch(store: &dyn Store) {
    // An account deleted while its position was pending must not block the
    // positions of everyone else, now or on any retry.
    let user = created_user(store).await;
    let world = created_world(store).await;
    let ghost = new_user(vec![]);
    let batch = [
        position(&ghost, &world, 1, 1, 4.0),
        position(&user, &world, 1, 1, 4.0),
    ];
    assert_eq!(store.save_positions(&batch).await.unwrap(), 1);
    assert!(store.position(user.id, world.id).await.unwrap().is_some());
    assert_eq!(store.position(ghost.id, world.id).await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// SQLite.
// ---------------------------------------------------------------------------

async fn open_migrated(path: &Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test]
async fn sqlite_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: open creates it.
    let store = open_migrated(&dir.path().join("nested/data/meridian.db")).await;
    store.migrate().await.expect("migrating twice is a no-op");
    run_contract(&store).await;
}

#[tokio::test]
async fn reopening_the_file_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.db");
    let store = open_migrated(&path).await;
    let user = created_user(&store).await;
    let world = created_world(&store).await;
    let p = position(&user, &world, 4, 2, 4.9);
    store.save_positions(&[p]).await.unwrap();
    store.close().await;

    let store = open_migrated(&path).await;
    assert_eq!(
        store.user_by_id(user.id).await.unwrap().unwrap().username,
        user.username
    );
    assert!(store.worlds().await.unwrap().contains(&world));
    assert_eq!(store.position(user.id, world.id).await.unwrap(), Some(p));
}

#[tokio::test]
async fn migrations_revert_cleanly_and_reapply() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    let migrator = &meridian_server::store::sqlite::MIGRATOR;
    migrator
        .undo(store.pool(), 0)
        .await
        .expect("every down migration runs");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        Vec::<String>::new(),
        "down migrations leave nothing behind"
    );
    store.migrate().await.expect("up again");
    run_contract(&store).await;
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from the future', 1, x'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Migration(m) if m.contains("99991231000000")),
        "{err:?}"
    );
}

#[tokio::test]
async fn deleting_an_account_deletes_its_positions_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    let user = created_user(&store).await;
    let world = created_world(&store).await;
    store
        .save_positions(&[position(&user, &world, 1, 1, 4.9)])
        .await
        .unwrap();
    let session = Session {
        id: Uuid::now_v7(),
        user_id: user.id,
        created_at_ms: now_ms(),
        expires_at_ms: now_ms() + 1000,
        revoked: false,
    };
    store
        .create_session(&session, &refresh_hash())
        .await
        .unwrap();
    store.next_epoch(user.id).await.unwrap();
    let captured = captured_by(&store, &user, &world).await;

    sqlx::query("DELETE FROM users WHERE id = ?1")
        .bind(user.id.hyphenated())
        .execute(store.pool())
        .await
        .unwrap();

    assert_eq!(store.position(user.id, world.id).await.unwrap(), None);
    assert_eq!(store.session(session.id).await.unwrap(), None);
    assert_capture_kept_without_its_player(&store, &world, captured).await;
    for table in [
        "player_positions",
        "sessions",
        "player_profiles",
        "user_roles",
        "flag_captures",
    ] {
        let left: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE user_id = ?1"))
                .bind(user.id.hyphenated())
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(left, 0, "{table} keeps nothing of a deleted account");
    }
}

/// A committed capture of a new flag of `world` by `user`.
async fn captured_by(store: &dyn Store, user: &User, world: &WorldDef) -> CommittedCapture {
    let team = team_names(store).await.remove(0);
    let flag = placed_flag(store, world).await;
    let capture = capture_of(&flag, user, &team, 0);
    let CaptureOutcome::Committed { version, score } = store.capture_flag(&capture).await.unwrap()
    else {
        panic!("a fresh flag is captured");
    };
    CommittedCapture {
        capture,
        version,
        score,
    }
}

/// The history keeps a deleted account's capture, naming the nil player.
async fn assert_capture_kept_without_its_player(
    store: &dyn Store,
    world: &WorldDef,
    mut captured: CommittedCapture,
) {
    captured.capture.user_id = Uuid::nil();
    assert_eq!(store.captures(world.id, 0).await.unwrap(), [captured]);
}

#[tokio::test]
async fn accounts_from_before_teams_are_dealt_teams_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    // The schema as it was before teams.
    meridian_server::store::sqlite::MIGRATOR
        .undo(store.pool(), 20261121000009)
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO users (id, username, device_hash, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?2, 0, 0)",
        )
        .bind(id.hyphenated())
        .bind(format!("old-{i}"))
        .execute(store.pool())
        .await
        .unwrap();
    }
    // Only the second one has played (a profile at epoch 7).
    sqlx::query(
        "INSERT INTO player_profiles (user_id, epoch, created_at_ms, updated_at_ms) \
         VALUES (?1, 7, 0, 0)",
    )
    .bind(ids[1].hyphenated())
    .execute(store.pool())
    .await
    .unwrap();

    store.migrate().await.unwrap();
    assert_dealt_in_turn(&store, &ids).await;
}

/// After the teams migration, accounts `ids` (oldest first; the second one at
/// epoch 7, the others without a profile) have teams red, blue, red and
/// their epochs count on.
async fn assert_dealt_in_turn(store: &dyn Store, ids: &[Uuid]) {
    let mut teams = Vec::new();
    for id in ids {
        teams.push(store.user_by_id(*id).await.unwrap().unwrap().team);
    }
    assert_eq!(
        teams,
        [Some("red".into()), Some("blue".into()), Some("red".into())]
    );
    assert_eq!(store.next_epoch(ids[0]).await.unwrap(), 1);
    assert_eq!(
        store.next_epoch(ids[1]).await.unwrap(),
        8,
        "the epoch is kept"
    );
    assert_eq!(store.next_epoch(ids[2]).await.unwrap(), 1);
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    store.close().await;
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn an_unopenable_path_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the database's directory should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let err = SqliteStore::open(&blocker.join("meridian.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// Redis in front of SQLite.
// ---------------------------------------------------------------------------

async fn cached(dir: &Path, url: &str) -> CachedStore {
    let inner: Arc<dyn Store> = Arc::new(open_migrated(&dir.join("meridian.db")).await);
    CachedStore::new(inner, RedisCache::open(url).unwrap())
}

#[tokio::test]
async fn a_cached_store_meets_the_contract() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = cached(dir.path(), &redis.url()).await;
    run_contract(&store).await;
}

#[tokio::test]
async fn a_cached_store_with_redis_down_meets_the_contract() {
    let mut redis = RedisServer::start();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    let store = cached(dir.path(), &redis.url()).await;
    run_contract(&store).await;
}

// ---------------------------------------------------------------------------
// The demo world.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_demo_world_is_seeded_once_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    demo::seed_if_empty(&store).await.unwrap();
    demo::seed_if_empty(&store).await.unwrap();
    let worlds = store.worlds().await.unwrap();
    assert_eq!(worlds.len(), 1, "{worlds:?}");
    let world = &worlds[0];
    assert_eq!(world.name, demo::DEMO_WORLD_NAME);

    let (expected_world, expected_areas, expected_objects) = demo::demo_world();
    assert_eq!(world.center, expected_world.center);
    assert_eq!(world.bounds, expected_world.bounds);
    let areas = store.areas(world.id).await.unwrap();
    assert_eq!(areas.len(), expected_areas.len());
    for kind in [
        AreaKind::Blocked,
        AreaKind::SpeedLimit,
        AreaKind::Safe,
        AreaKind::Spawn,
        AreaKind::Zone,
    ] {
        assert!(areas.iter().any(|a| a.kind == kind), "no {kind:?} area");
    }
    let objects = store.world_objects(world.id).await.unwrap();
    assert_eq!(objects.len(), expected_objects.len());
    assert!(objects.iter().all(|o| o.kind == "flag"));
}

#[tokio::test]
async fn the_demo_world_is_not_seeded_beside_another_world() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_migrated(&dir.path().join("meridian.db")).await;
    let world = created_world(&store).await;
    demo::seed_if_empty(&store).await.unwrap();
    assert_eq!(store.worlds().await.unwrap(), [world]);
}

// ---------------------------------------------------------------------------
// PostgreSQL + PostGIS (the throwaway server of scripts/test).
// ---------------------------------------------------------------------------

use meridian_server::config::DbPool;
use meridian_server::store::PgStore;
use util::pg::TestDatabase;

async fn pg_store(db: &TestDatabase) -> PgStore {
    let store = PgStore::connect(&db.url, DbPool::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test]
async fn postgres_store_meets_the_contract() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    store.migrate().await.expect("migrating twice is a no-op");
    run_contract(&store).await;
}

#[tokio::test]
async fn a_cached_postgres_store_meets_the_contract() {
    let db = TestDatabase::create().await;
    let redis = RedisServer::start();
    let inner: Arc<dyn Store> = Arc::new(pg_store(&db).await);
    let store = CachedStore::new(inner, RedisCache::open(&redis.url()).unwrap());
    run_contract(&store).await;
}

/// The user tables of the public schema, PostGIS's own excepted.
async fn pg_tables(store: &PgStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         AND tablename NOT IN ('spatial_ref_sys', '_sqlx_migrations') ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_migrations_go_all_down_and_up_again() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    let migrator = &meridian_server::store::postgres::MIGRATOR;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        migrator.iter().count() / 2,
        "every up ran"
    );
    assert!(pg_tables(&store)
        .await
        .contains(&"player_positions".to_owned()));

    migrator
        .undo(store.pool(), 0)
        .await
        .expect("every down runs");
    assert_eq!(
        pg_tables(&store).await,
        Vec::<String>::new(),
        "nothing left"
    );
    let postgis: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
            .fetch_optional(store.pool())
            .await
            .unwrap();
    assert_eq!(postgis, None, "the first down drops the extension");

    store.migrate().await.expect("all up again");
    run_contract(&store).await;
}

#[tokio::test]
async fn an_edited_applied_postgres_migration_is_refused() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    // What sqlx records of a migration whose file changed after it ran.
    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea \
         WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Migration(m) if m.contains("edited")),
        "{err:?}"
    );
}

#[tokio::test]
async fn postgis_refuses_invalid_geometry_and_wrong_srids() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    let world = created_world(&store).await;
    let insert = |geom: &'static str| {
        sqlx::query(
            "INSERT INTO areas (id, world_id, name, kind, geom) \
             VALUES ($1, $2, 'bad', 'zone', ST_GeomFromText($3, $4))",
        )
        .bind(Uuid::now_v7())
        .bind(world.id)
        .bind(geom)
    };
    let bowtie = "MULTIPOLYGON(((4.8 52.3, 4.9 52.4, 4.9 52.3, 4.8 52.4, 4.8 52.3)))";
    let square = "MULTIPOLYGON(((4.8 52.3, 4.9 52.3, 4.9 52.4, 4.8 52.4, 4.8 52.3)))";
    let err = insert(bowtie)
        .bind(4326)
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("areas_geom_check"), "{err}");
    let err = insert(square)
        .bind(3857)
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SRID"), "{err}");
    insert(square)
        .bind(4326)
        .execute(store.pool())
        .await
        .expect("a valid shape");

    // Through the store, an invalid shape is a clear conflict, not stored.
    let bad = geo::MultiPolygon(vec![geo::Polygon::new(
        geo::LineString::from(vec![
            (4.8, 52.3),
            (4.9, 52.4),
            (4.9, 52.3),
            (4.8, 52.4),
            (4.8, 52.3),
        ]),
        vec![],
    )]);
    let area = Area {
        id: Uuid::now_v7(),
        world_id: world.id,
        name: "bow tie".into(),
        kind: AreaKind::Blocked,
        geometry: bad,
        properties: serde_json::json!({}),
    };
    let err = store.put_area(&area).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.areas(world.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_deleting_an_account_deletes_its_positions_and_sessions() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    let user = created_user(&store).await;
    let world = created_world(&store).await;
    store
        .save_positions(&[position(&user, &world, 1, 1, 4.9)])
        .await
        .unwrap();
    let now = now_ms();
    let session = Session {
        id: Uuid::now_v7(),
        user_id: user.id,
        created_at_ms: now,
        expires_at_ms: now + 60_000,
        revoked: false,
    };
    store
        .create_session(&session, &refresh_hash())
        .await
        .unwrap();
    let captured = captured_by(&store, &user, &world).await;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.position(user.id, world.id).await.unwrap(), None);
    assert_eq!(store.session(session.id).await.unwrap(), None);
    assert_capture_kept_without_its_player(&store, &world, captured).await;
}

#[tokio::test]
async fn postgres_accounts_from_before_teams_are_dealt_teams_in_turn() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    // The schema as it was before teams.
    meridian_server::store::postgres::MIGRATOR
        .undo(store.pool(), 20261121120012)
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        sqlx::query("INSERT INTO users (id, username, device_hash) VALUES ($1, $2, $2)")
            .bind(id)
            .bind(format!("old-{i}"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO player_profiles (user_id, epoch) VALUES ($1, 7)")
        .bind(ids[1])
        .execute(store.pool())
        .await
        .unwrap();
    // A capture from before: history, not something to announce now.
    let world = created_world(&store).await;
    sqlx::query(
        "INSERT INTO flag_captures (id, world_id, object_id, team) VALUES ($1, $2, $3, 'red')",
    )
    .bind(Uuid::now_v7())
    .bind(world.id)
    .bind(Uuid::now_v7())
    .execute(store.pool())
    .await
    .unwrap();

    store.migrate().await.unwrap();
    assert_dealt_in_turn(&store, &ids).await;
    assert_eq!(store.captures(world.id, 0).await.unwrap().len(), 1);
    let unannounced = store
        .unannounced_captures(now_ms() + 86_400_000, 10_000)
        .await
        .unwrap();
    assert_eq!(unannounced, [], "old captures count as announced");
}

#[tokio::test]
async fn capture_partitions_exist_for_the_coming_months() {
    let db = TestDatabase::create().await;
    let store = pg_store(&db).await;
    let months = meridian_server::store::postgres::CAPTURE_PARTITIONS_AHEAD;
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'flag_captures'::regclass ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(partitions.len() as u32, months + 2, "{partitions:?}");
    assert_eq!(
        store.create_capture_partitions(months).await.unwrap(),
        0,
        "none missing"
    );

    // This month's capture lands in this month's partition, not the default.
    let world = created_world(&store).await;
    sqlx::query(
        "INSERT INTO flag_captures (id, world_id, object_id, team) VALUES ($1, $2, $3, 'red')",
    )
    .bind(Uuid::now_v7())
    .bind(world.id)
    .bind(Uuid::now_v7())
    .execute(store.pool())
    .await
    .unwrap();
    let partition: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM flag_captures")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let expected: String =
        sqlx::query_scalar("SELECT 'flag_captures_' || to_char(now(), 'YYYYMM')")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(partition, expected);
}

async fn nearby_finds_positions_and_objects_within_the_radius_nearest_first(store: &dyn Store) {
    use meridian_server::world::geodesy::distance_m;
    let world = created_world(store).await;
    let centre = LonLat {
        lon: 179.9995,
        lat: 52.0,
    };
    // Metres east of the centre, across the antimeridian for the far ones.
    let east = |m: f64| {
        let lon = centre.lon + m / (111_194.93 * centre.lat.to_radians().cos());
        LonLat {
            lon: meridian_server::world::geodesy::normalize_lon(lon),
            lat: centre.lat,
        }
    };
    let mut users = Vec::new();
    for (i, metres) in [40.0, 10.0, 90.0, 300.0].into_iter().enumerate() {
        let user = created_user(store).await;
        let mut p = position(&user, &world, 1, 1, 0.0);
        p.position = east(metres);
        p.updated_at_ms = 1_700_000_000_000 + i as i64;
        store.save_positions(&[p]).await.unwrap();
        users.push((user, p));
    }
    // Elsewhere in another world: never found.
    let other = created_world(store).await;
    let stranger = created_user(store).await;
    let mut p = position(&stranger, &other, 1, 1, 0.0);
    p.position = centre;
    store.save_positions(&[p]).await.unwrap();
    let flag = WorldObject {
        id: Uuid::now_v7(),
        world_id: world.id,
        kind: "flag".into(),
        name: "Near".into(),
        position: east(20.0),
        properties: serde_json::json!({}),
        owner: None,
        version: 0,
    };
    let far_flag = WorldObject {
        id: Uuid::now_v7(),
        name: "Far".into(),
        position: east(500.0),
        ..flag.clone()
    };
    store.put_world_object(&flag).await.unwrap();
    store.put_world_object(&far_flag).await.unwrap();

    let found = store.nearby(world.id, centre, 100.0, 10).await.unwrap();
    let names: Vec<&str> = found.players.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(
        names,
        [
            &users[1].0.username,
            &users[0].0.username,
            &users[2].0.username
        ],
        "within 100 m, nearest first"
    );
    for player in &found.players {
        let (_, stored) = users.iter().find(|(u, _)| u.id == player.user_id).unwrap();
        assert!((player.position.lon - stored.position.lon).abs() < 1e-9);
        assert!((player.position.lat - stored.position.lat).abs() < 1e-9);
        // The same sphere as the game's distance, to a centimetre.
        let expected = distance_m(centre, stored.position);
        assert!(
            (player.distance_m - expected).abs() < 0.01,
            "{} m against the game's {expected} m",
            player.distance_m
        );
    }
    assert_eq!(found.objects.len(), 1, "{:?}", found.objects);
    assert_eq!(found.objects[0].object, flag);

    let capped = store.nearby(world.id, centre, 100.0, 2).await.unwrap();
    assert_eq!(capped.players.len(), 2);
    assert_eq!(capped.players[0].user_id, users[1].0.id);
    let none = store
        .nearby(world.id, east(-5_000.0), 100.0, 10)
        .await
        .unwrap();
    assert!(none.players.is_empty() && none.objects.is_empty());
}
