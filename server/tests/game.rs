//! The game over real WebSockets, in both encodings: joining, moves and acks,
//! who sees whom, corrections, area events, the antimeridian and the poles.

mod util;

use std::time::Duration;

use meridian_protocol::{
    AreaKind, ClientMessage, CorrectionReason, Encoding, LonLat, ServerMessage, Transition, Update,
};
use util::{blocked_centre, offset, zone_centre, Client, TestServer, CENTER};

const BOTH: [Encoding; 2] = [Encoding::Bincode, Encoding::Json];

/// Collect `Update`s for a while and return every entity id seen entering,
/// moving and leaving.
async fn updates_for(client: &mut Client, how_long: Duration) -> Vec<Update> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + how_long;
    while let Ok(message) = tokio::time::timeout_at(deadline, client.next()).await {
        if let Ok(ServerMessage::Update(update)) = message {
            out.push(update);
        }
    }
    out
}

/// Wait until `viewer` is told that `entity` entered.
async fn sees(viewer: &mut Client, entity: u32) {
    viewer
        .until(|m| match m {
            ServerMessage::Update(u) if u.entered.iter().any(|e| e.state.id == entity) => Some(()),
            _ => None,
        })
        .await;
}

/// Wait until `viewer` is told that `entity` left.
async fn loses(viewer: &mut Client, entity: u32) {
    viewer
        .until(|m| match m {
            ServerMessage::Update(u) if u.left.contains(&entity) => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn register_login_connect_welcome_in_both_encodings_and_by_hello() {
    let server = TestServer::start().await;
    for (i, encoding) in BOTH.into_iter().enumerate() {
        let (user_id, token) = server.login(&format!("alice{i}")).await;
        // By header.
        let mut client = Client::connect(server.game, encoding, Some(&token), None)
            .await
            .unwrap();
        client.welcome().await;
        assert_eq!(client.player_id, user_id);
        assert!(
            meridian_server::world::geodesy::distance_m(client.position, CENTER) < 40.0,
            "spawned in the spawn square"
        );
        drop(client);
        // By Hello (browsers cannot set headers); the same account takes over.
        let mut client = Client::hello(server.game, encoding, &token, Some("arena"), None).await;
        client.welcome().await;
        assert_eq!(client.player_id, user_id);
        assert!(!client.resume_token.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn moves_are_acked_and_pings_answered() {
    let server = TestServer::start().await;
    for (i, encoding) in BOTH.into_iter().enumerate() {
        let mut client = server
            .player(&format!("mover{i}"), "arena", CENTER, encoding)
            .await;
        let seq = client.move_to(offset(CENTER, 3.0, 0.0)).await;
        client.acked(seq).await;
        client
            .send(&ClientMessage::Ping { client_time_ms: 42 })
            .await;
        let (echo, server_time) = client
            .until(|m| match m {
                ServerMessage::Pong {
                    client_time_ms,
                    server_time_ms,
                } => Some((*client_time_ms, *server_time_ms)),
                _ => None,
            })
            .await;
        assert_eq!(echo, 42);
        assert!(server_time > 1_700_000_000_000);
    }
    server.stop().await;
}

#[tokio::test]
async fn players_100_m_apart_see_each_other_and_1_km_apart_do_not() {
    let server = TestServer::start().await;
    let mut a = server
        .player("near_a", "fast", CENTER, Encoding::Bincode)
        .await;
    let mut b = server
        .player("near_b", "fast", offset(CENTER, 0.0, 100.0), Encoding::Json)
        .await;
    let mut far = server
        .player(
            "far_c",
            "fast",
            offset(CENTER, 0.0, -1000.0),
            Encoding::Bincode,
        )
        .await;
    sees(&mut a, b.entity_id).await;
    sees(&mut b, a.entity_id).await;
    // The distant player sees nobody, and nobody sees it.
    let seen: Vec<u32> = updates_for(&mut far, Duration::from_millis(500))
        .await
        .iter()
        .flat_map(|u| u.entered.iter().map(|e| e.state.id))
        .collect();
    assert!(seen.is_empty(), "1 km away but saw {seen:?}");
    let seen_by_a: Vec<u32> = updates_for(&mut a, Duration::from_millis(300))
        .await
        .iter()
        .flat_map(|u| u.entered.iter().map(|e| e.state.id))
        .collect();
    assert!(!seen_by_a.contains(&far.entity_id));
    // Entered entities carry name, position, heading and speed.
    let _ = b.move_to(offset(CENTER, 0.0, 105.0)).await;
    let state = a
        .until(|m| match m {
            ServerMessage::Update(u) => u.moved.iter().find(|s| s.id == b.entity_id).copied(),
            _ => None,
        })
        .await;
    let at = state.position();
    assert!(meridian_server::world::geodesy::distance_m(at, offset(CENTER, 0.0, 105.0)) < 0.05);
    assert_eq!(state.heading_cdeg, 9000);
    server.stop().await;
}

#[tokio::test]
async fn neighbours_appear_and_disappear_as_they_walk_with_hysteresis() {
    let server = TestServer::start().await;
    let mut a = server
        .player("walk_a", "fast", CENTER, Encoding::Bincode)
        .await;
    let mut b = server
        .player(
            "walk_b",
            "fast",
            offset(CENTER, 0.0, 400.0),
            Encoding::Bincode,
        )
        .await;
    // B walks to 140 m: A sees it enter.
    b.walk(offset(CENTER, 0.0, 140.0), 20.0, 20.0).await;
    sees(&mut a, b.entity_id).await;
    // B walks out to 170 m: inside the hysteresis band (150..180 m), it stays.
    b.walk(offset(CENTER, 0.0, 170.0), 10.0, 20.0).await;
    let updates = updates_for(&mut a, Duration::from_millis(400)).await;
    assert!(
        updates.iter().all(|u| !u.left.contains(&b.entity_id)),
        "left inside the hysteresis band"
    );
    // Past 180 m it leaves.
    b.walk(offset(CENTER, 0.0, 190.0), 10.0, 20.0).await;
    loses(&mut a, b.entity_id).await;
    // And coming back to 160 m is not enough to re-enter (enter radius 150 m).
    b.walk(offset(CENTER, 0.0, 160.0), 10.0, 20.0).await;
    let updates = updates_for(&mut a, Duration::from_millis(400)).await;
    assert!(updates
        .iter()
        .all(|u| u.entered.iter().all(|e| e.state.id != b.entity_id)));
    b.walk(offset(CENTER, 0.0, 120.0), 10.0, 20.0).await;
    sees(&mut a, b.entity_id).await;
    server.stop().await;
}

/// Send a move and expect a correction with the authoritative position.
async fn corrected(client: &mut Client, lon: f64, lat: f64, want: CorrectionReason) {
    let seq = client.move_raw(lon, lat, None).await;
    let (id, at, reason, refused_seq) = client
        .until(|m| match m {
            ServerMessage::Correction {
                id,
                seq,
                lon,
                lat,
                reason,
            } => Some((
                *id,
                LonLat {
                    lon: *lon,
                    lat: *lat,
                },
                *reason,
                *seq,
            )),
            _ => None,
        })
        .await;
    assert_eq!(reason, want, "move to ({lon}, {lat})");
    assert_eq!(refused_seq, seq);
    assert!(
        meridian_server::world::geodesy::distance_m(at, client.position) < 0.01,
        "correction must carry the authoritative position"
    );
    client.send(&ClientMessage::AckCorrection { id }).await;
}

#[tokio::test]
async fn cheats_and_garbage_coordinates_are_corrected_in_both_encodings() {
    let server = TestServer::start().await;
    for (i, encoding) in BOTH.into_iter().enumerate() {
        let near_wall = offset(blocked_centre(), -70.0, 0.0);
        let mut c = server
            .player(&format!("cheat{i}"), "arena", near_wall, encoding)
            .await;
        // Teleport 2 km.
        let far = offset(near_wall, 0.0, 2000.0);
        corrected(&mut c, far.lon, far.lat, CorrectionReason::TooFast).await;
        // Through the blocked square (60 m east crosses its west edge at 50 m).
        let through = offset(near_wall, 25.0, 0.0);
        corrected(&mut c, through.lon, through.lat, CorrectionReason::Blocked).await;
        // Out of the world.
        corrected(
            &mut c,
            CENTER.lon + 0.2,
            CENTER.lat,
            CorrectionReason::OutOfBounds,
        )
        .await;
        // Out-of-range latitude.
        corrected(
            &mut c,
            CENTER.lon,
            95.0,
            CorrectionReason::InvalidCoordinates,
        )
        .await;
        if encoding == Encoding::Bincode {
            // JSON cannot carry NaN or infinities at all (see bad_input.rs).
            corrected(
                &mut c,
                f64::NAN,
                CENTER.lat,
                CorrectionReason::InvalidCoordinates,
            )
            .await;
            corrected(
                &mut c,
                CENTER.lon,
                f64::INFINITY,
                CorrectionReason::InvalidCoordinates,
            )
            .await;
        }
        // Speed hack: 30 m/s for two seconds.
        let mut at = near_wall;
        let mut refused = false;
        for _ in 0..20 {
            at = offset(at, 0.0, 3.0);
            c.move_to(at).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let updates_or_correction = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Ok(ServerMessage::Correction { reason, .. }) = c.next().await {
                    return reason;
                }
            }
        })
        .await;
        if let Ok(reason) = updates_or_correction {
            assert_eq!(reason, CorrectionReason::TooFast);
            refused = true;
        }
        assert!(refused, "sustained speeding was never corrected");
    }
    server.stop().await;
}

#[tokio::test]
async fn moves_after_a_correction_are_ignored_until_acknowledged() {
    let server = TestServer::start().await;
    let mut c = server
        .player("acker", "arena", CENTER, Encoding::Bincode)
        .await;
    let far = offset(CENTER, 0.0, 5000.0);
    c.move_raw(far.lon, far.lat, None).await;
    let id = c
        .until(|m| match m {
            ServerMessage::Correction { id, .. } => Some(*id),
            _ => None,
        })
        .await;
    // A legal move sent before the client saw the correction is ignored…
    let ignored = c.move_to(offset(CENTER, 1.0, 0.0)).await;
    let updates = updates_for(&mut c, Duration::from_millis(300)).await;
    assert!(updates.iter().all(|u| u.ack_seq < ignored));
    // …and after the ack, moves count again.
    c.send(&ClientMessage::AckCorrection { id }).await;
    let seq = c.move_to(offset(CENTER, 2.0, 0.0)).await;
    c.acked(seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_phone_sending_bunched_jittery_legal_moves_gets_no_correction() {
    let server = TestServer::start().await;
    for (world, accuracy) in [("arena", None), ("gps", Some(8.0f32))] {
        let mut phone = server
            .player(&format!("phone_{world}"), world, CENTER, Encoding::Bincode)
            .await;
        // 8 m/s on average (limit 10) for 6 s, delivered in bursts of 3–5 moves
        // every 300–600 ms, each fix jittered sideways by up to ±1.5 m.
        let mut north = 0.0;
        let mut last = 0;
        let mut rng_state = 7u64;
        let mut rand = move || {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng_state >> 33) as f64 / f64::from(u32::MAX >> 1)
        };
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            let gap = 0.3 + 0.3 * rand();
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
            let burst = 3 + (rand() * 3.0) as usize;
            for _ in 0..burst {
                north += 8.0 * gap / burst as f64;
                let jitter = (rand() - 0.5) * 3.0;
                let p = offset(CENTER, jitter, north);
                last = phone.move_raw(p.lon, p.lat, accuracy).await;
            }
        }
        let corrections = tokio::time::timeout(Duration::from_secs(3), async {
            let mut corrections = 0;
            loop {
                match phone.next().await {
                    Ok(ServerMessage::Correction { .. }) => corrections += 1,
                    Ok(ServerMessage::Update(u)) if u.ack_seq >= last => return corrections,
                    _ => {}
                }
            }
        })
        .await
        .expect("the last move was acked");
        assert_eq!(corrections, 0, "legal phone movement corrected in {world}");
    }
    server.stop().await;
}

#[tokio::test]
async fn area_events_on_enter_and_leave_are_numbered() {
    let server = TestServer::start().await;
    let outside = offset(zone_centre(), 80.0, 0.0);
    let mut c = server
        .player("tourist", "fast", outside, Encoding::Json)
        .await;
    c.walk(zone_centre(), 10.0, 20.0).await;
    let (n1, kind, t1) = c
        .until(|m| match m {
            ServerMessage::AreaEvent {
                n,
                kind,
                transition,
                name,
                ..
            } if name == "Market" => Some((*n, *kind, *transition)),
            _ => None,
        })
        .await;
    assert_eq!((kind, t1), (AreaKind::Zone, Transition::Enter));
    c.walk(outside, 10.0, 20.0).await;
    let (n2, t2) = c
        .until(|m| match m {
            ServerMessage::AreaEvent {
                n,
                transition,
                name,
                ..
            } if name == "Market" => Some((*n, *transition)),
            _ => None,
        })
        .await;
    assert_eq!(t2, Transition::Leave);
    assert_eq!(n2, n1 + 1, "events are numbered per player");
    server.stop().await;
}

#[tokio::test]
async fn visibility_and_movement_work_across_the_antimeridian_and_near_a_pole() {
    let server = TestServer::start().await;
    // 50 m either side of ±180 on the equator: 100 m apart, so they see each other.
    let east = LonLat {
        lon: 179.99955,
        lat: 0.0,
    };
    let west = LonLat {
        lon: -179.99955,
        lat: 0.0,
    };
    let mut a = server
        .player("fiji_a", "globe", east, Encoding::Bincode)
        .await;
    let mut b = server.player("fiji_b", "globe", west, Encoding::Json).await;
    sees(&mut a, b.entity_id).await;
    sees(&mut b, a.entity_id).await;
    // A walks east across the line (100 m in 10 m steps) without a correction.
    a.walk(
        LonLat {
            lon: -179.9999,
            lat: 0.0,
        },
        10.0,
        20.0,
    )
    .await;
    let state = b
        .until(|m| match m {
            ServerMessage::Update(u) => u
                .moved
                .iter()
                .find(|s| s.id == a.entity_id && s.lon_e7 < 0)
                .copied(),
            _ => None,
        })
        .await;
    assert!(state.position().lon < -179.99);
    // Near the north pole a quarter turn of longitude is metres, not kilometres.
    let mut p = server
        .player(
            "pole_p",
            "globe",
            LonLat {
                lon: 0.0,
                lat: 89.9995,
            },
            Encoding::Bincode,
        )
        .await;
    let mut q = server
        .player(
            "pole_q",
            "globe",
            LonLat {
                lon: 90.0,
                lat: 89.9995,
            },
            Encoding::Bincode,
        )
        .await;
    sees(&mut p, q.entity_id).await;
    sees(&mut q, p.entity_id).await;
    // Walking over the pole itself is a short, legal step.
    let seq = p
        .move_to(LonLat {
            lon: 0.0,
            lat: 90.0,
        })
        .await;
    p.acked(seq).await;
    let seq = p
        .move_to(LonLat {
            lon: 180.0,
            lat: 89.9999,
        })
        .await;
    p.acked(seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_closes_normally_leaves_at_once() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = TestServer::start().await;
    let mut a = server
        .player("stay_a", "arena", CENTER, Encoding::Bincode)
        .await;
    let mut b = server
        .player("bye_b", "arena", offset(CENTER, 0.0, 10.0), Encoding::Json)
        .await;
    sees(&mut a, b.entity_id).await;
    let closed_at = tokio::time::Instant::now();
    b.socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    // Well before the 20 s resume grace period.
    loses(&mut a, b.entity_id).await;
    assert!(closed_at.elapsed() < Duration::from_secs(2));
    server.stop().await;
}

#[tokio::test]
async fn repeated_cheating_is_kicked_after_the_strike_limit() {
    let server = TestServer::start().await;
    let mut cheat = server
        .player("serial", "arena", CENTER, Encoding::Bincode)
        .await;
    let mut bystander = server
        .player("honest", "arena", offset(CENTER, 5.0, 0.0), Encoding::Json)
        .await;
    let far = offset(CENTER, 0.0, 3000.0);
    // Each acknowledged correction ends one episode; the tenth episode kicks.
    for _ in 1..10 {
        cheat.move_raw(far.lon, far.lat, None).await;
        let id = cheat
            .until(|m| match m {
                ServerMessage::Correction { id, .. } => Some(*id),
                ServerMessage::Kicked { .. } => panic!("kicked too early"),
                _ => None,
            })
            .await;
        cheat.send(&ClientMessage::AckCorrection { id }).await;
    }
    cheat.move_raw(far.lon, far.lat, None).await;
    let reason = cheat
        .until(|m| match m {
            ServerMessage::Kicked { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, meridian_protocol::KickReason::TooManyCorrections);
    assert_eq!(
        cheat.closed().await,
        util::Closed::Code(meridian_protocol::close::TOO_MANY_CORRECTIONS)
    );
    let seq = bystander.move_to(offset(CENTER, 6.0, 0.0)).await;
    bystander.acked(seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_can_lower_its_update_rate() {
    let server = TestServer::start().await;
    let mut watcher = server
        .player("battery", "fast", CENTER, Encoding::Bincode)
        .await;
    let mut walker = server
        .player("busy", "fast", offset(CENTER, 0.0, 20.0), Encoding::Bincode)
        .await;
    sees(&mut watcher, walker.entity_id).await;
    watcher.send(&ClientMessage::SetUpdateRate { hz: 2 }).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = updates_for(&mut watcher, Duration::from_millis(1)).await;
    // The walker moves 20 times a second; the watcher hears about it twice.
    let walk = tokio::spawn(async move {
        walker.walk(offset(CENTER, 0.0, 60.0), 1.0, 20.0).await;
        walker
    });
    let updates = updates_for(&mut watcher, Duration::from_millis(2000)).await;
    assert!(
        (2..=6).contains(&updates.len()),
        "{} updates in 2 s at 2 Hz",
        updates.len()
    );
    let _walker = walk.await.unwrap();
    server.stop().await;
}
