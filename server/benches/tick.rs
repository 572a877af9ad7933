//! Benchmarks of one world tick and of the per-connection fan-out, with 1,000
//! and 10,000 players random-walking at walking pace around the demo city.
//!
//! * `tick/N`: one `World::tick` with every player sending one move (command
//!   application, validation against the demo areas, area events, snapshot and
//!   grid rebuild, hand-off of dirty positions).
//! * `fanout/N`: what all connection tasks together do with that snapshot:
//!   each player's interest diff and its bincode `Update` frame.
//! * `crowd/2000`: the fan-out when 2,000 players gather inside one 150 m
//!   circle (a point of interest), where `AOI_MAX` must bound the work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use meridian_protocol::{Encoding, LonLat};
use meridian_server::net::frames;
use meridian_server::store::{PendingPositions, StoredPosition};
use meridian_server::world::interest::{Delta, Interest, View};
use meridian_server::world::{Command, ConnLink, Input, JoinRequest, Settings, World};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const TICK: Duration = Duration::from_millis(50);
/// Players spread over a square this many metres across, centred on the city.
const SPREAD_M: f64 = 3_000.0;
/// A crowd stands in a square this many metres across (inside a 150 m circle).
const CROWD_M: f64 = 200.0;
const M_PER_DEG: f64 = 111_195.0;

struct Walker {
    entity: u32,
    at: LonLat,
    heading: f64,
    seq: u32,
}

fn settings() -> Settings {
    Settings {
        shard_id: "bench".into(),
        tick_hz: 20,
        view: View::new(150.0, 64),
        default_speed_mps: 10.0,
        resume_grace: Duration::from_secs(20),
        chat_radius_m: 100.0,
    }
}

/// A world with `n` players joined at random places, and their walkers.
fn populated(n: usize, spread_m: f64, rng: &mut SmallRng) -> (World, Vec<Walker>, Instant) {
    let (def, areas, _) = meridian_server::demo::demo_world();
    let center = def.center;
    let mut world = World::new(
        def.clone(),
        &areas,
        settings(),
        Arc::new(PendingPositions::default()),
    );
    let now = Instant::now();
    let mut replies = Vec::with_capacity(n);
    let mut commands = Vec::with_capacity(n);
    for _ in 0..n {
        let east = rng.random_range(-spread_m / 2.0..spread_m / 2.0);
        let north = rng.random_range(-spread_m / 2.0..spread_m / 2.0);
        let at = LonLat {
            lon: center.lon + east / (M_PER_DEG * center.lat.to_radians().cos()),
            lat: center.lat + north / M_PER_DEG,
        };
        // Outboxes are dropped: the tick's sends to them are no-ops, as they
        // would be cheap queue pushes in the server.
        let (link, _) = ConnLink::new(replies.len() as u64);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let user_id = Uuid::now_v7();
        commands.push(Command::Join {
            request: JoinRequest {
                user_id,
                session_id: Uuid::now_v7(),
                name: "bot".into(),
                epoch: 1,
                stored: Some(StoredPosition {
                    user_id,
                    world_id: def.id,
                    position: at,
                    heading: 0.0,
                    epoch: 0,
                    seq: 0,
                    updated_at_ms: 0,
                }),
                team: None,
                link,
            },
            reply,
        });
        replies.push(answer);
    }
    world.tick(now, commands);
    let walkers = replies
        .into_iter()
        .map(|mut answer| {
            let joined = answer
                .try_recv()
                .expect("joined")
                .expect("room in the world");
            Walker {
                entity: joined.entity,
                at: joined.position,
                heading: rng.random_range(0.0..std::f64::consts::TAU),
                seq: 0,
            }
        })
        .collect();
    (world, walkers, now)
}

/// One legal move per walker: 0.4 m (8 m/s at 20 Hz), turning a little.
fn moves(walkers: &mut [Walker], rng: &mut SmallRng) -> Vec<Command> {
    walkers
        .iter_mut()
        .enumerate()
        .map(|(i, w)| {
            w.heading += rng.random_range(-0.3..0.3);
            let step = 0.4;
            w.at = LonLat {
                lon: w.at.lon + step * w.heading.sin() / (M_PER_DEG * w.at.lat.to_radians().cos()),
                lat: w.at.lat + step * w.heading.cos() / M_PER_DEG,
            };
            w.seq += 1;
            Command::Input {
                entity: w.entity,
                // Each walker's link was made with its join order as conn_id.
                conn_id: i as u64,
                input: Input::Move {
                    seq: w.seq,
                    lon: w.at.lon,
                    lat: w.at.lat,
                    heading: w.heading.to_degrees() as f32,
                    accuracy_m: None,
                },
            }
        })
        .collect()
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick");
    group.sample_size(30);
    for n in [1_000usize, 10_000] {
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut world, mut walkers, mut now) = populated(n, SPREAD_M, &mut rng);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    now += TICK;
                    (moves(&mut walkers, &mut rng), now)
                },
                |(commands, now)| world.tick(now, commands),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    fanout_group(c, "fanout", &[1_000, 10_000], SPREAD_M);
    fanout_group(c, "crowd", &[2_000], CROWD_M);
}

fn fanout_group(c: &mut Criterion, name: &str, sizes: &[usize], spread_m: f64) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for &n in sizes {
        let mut rng = SmallRng::seed_from_u64(2);
        let (mut world, mut walkers, mut now) = populated(n, spread_m, &mut rng);
        let snapshots = world.subscribe();
        let view = View::new(150.0, 64);
        let mut interests: Vec<Interest> = (0..n).map(|_| Interest::default()).collect();
        let mut delta = Delta::default();
        let mut buffer = bytes::BytesMut::new();
        let entities: Vec<u32> = walkers.iter().map(|w| w.entity).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    let commands = moves(&mut walkers, &mut rng);
                    now += TICK;
                    world.tick(now, commands);
                    Arc::clone(&snapshots.borrow())
                },
                |snapshot| {
                    let mut total = 0usize;
                    for (&entity, interest) in entities.iter().zip(interests.iter_mut()) {
                        interest.diff(&snapshot, entity, &view, &mut delta);
                        let ack = snapshot.entity(entity).map_or(0, |e| e.ack_seq);
                        let frame =
                            frames::update(Encoding::Bincode, &snapshot, ack, &delta, &mut buffer);
                        total += frame.into_data().len();
                    }
                    total
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, tick, fanout);
criterion_main!(benches);
