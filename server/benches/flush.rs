//! The position flush against a real PostgreSQL + PostGIS: 10,000 players'
//! positions written as the shard writes them (one `UNNEST` upsert) against
//! the same upsert sent one row per statement, and the batch again with a GiST
//! index on `player_positions.geom` (kept only if the flush goal holds with it).
//!
//! Needs `TEST_DATABASE_URL` (a superuser URL): `scripts/bench --flush` starts
//! a throwaway server and sets it. Each group works in a database of its own.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meridian_protocol::LonLat;
use meridian_server::config::DbPool;
use meridian_server::store::{now_ms, PgStore, Store, StoredPosition};
use sqlx::{Connection, PgConnection};
use tokio::runtime::Runtime;
use uuid::Uuid;

const PLAYERS: usize = 10_000;

/// A migrated database with `PLAYERS` accounts and one world; returns the
/// store and the first batch (every player at epoch 1, seq 1).
async fn setup(admin_url: &str, gist: bool) -> (PgStore, Vec<StoredPosition>) {
    let name = format!("meridian_bench_{}", Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    let store = PgStore::connect(&format!("{base}/{name}"), DbPool::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    if gist {
        sqlx::query("CREATE INDEX player_positions_geom ON player_positions USING gist (geom)")
            .execute(store.pool())
            .await
            .unwrap();
    }
    let users: Vec<Uuid> = (0..PLAYERS).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO users (id, username, device_hash) \
         SELECT id, 'bench-' || id, 'device-' || id FROM UNNEST($1::uuid[]) AS u (id)",
    )
    .bind(&users)
    .execute(store.pool())
    .await
    .unwrap();
    let world = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO worlds (id, name, min_lon, min_lat, max_lon, max_lat, center, movement_mode) \
         VALUES ($1, 'bench', 4.7, 52.2, 5.1, 52.5, ST_SetSRID(ST_MakePoint(4.9, 52.37), 4326), 'input')",
    )
    .bind(world)
    .execute(store.pool())
    .await
    .unwrap();
    let batch = users
        .iter()
        .enumerate()
        .map(|(i, &user_id)| StoredPosition {
            user_id,
            world_id: world,
            position: LonLat {
                lon: 4.8 + (i % 100) as f64 * 0.002,
                lat: 52.3 + (i / 100) as f64 * 0.001,
            },
            heading: 90.0,
            epoch: 1,
            seq: 1,
            updated_at_ms: now_ms(),
        })
        .collect();
    (store, batch)
}

/// Every player moved a little since the last flush.
fn moved(batch: &mut [StoredPosition]) {
    for p in batch {
        p.seq += 1;
        p.position.lon += 1e-6;
        p.updated_at_ms = now_ms();
    }
}

/// The same upsert as the batch, one statement per row, in one transaction
/// with the same `synchronous_commit = off`: what the batch is compared with.
async fn row_per_statement(store: &PgStore, batch: &[StoredPosition]) {
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    for p in batch {
        sqlx::query(
            "INSERT INTO player_positions (user_id, world_id, geom, heading, epoch, seq, updated_at) \
             VALUES ($1, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326), $5, $6, $7, \
                     to_timestamp($8::float8 / 1000)) \
             ON CONFLICT (user_id, world_id) DO UPDATE SET \
                 geom = excluded.geom, heading = excluded.heading, epoch = excluded.epoch, \
                 seq = excluded.seq, updated_at = excluded.updated_at \
             WHERE (excluded.epoch, excluded.seq) > (player_positions.epoch, player_positions.seq)",
        )
        .bind(p.user_id)
        .bind(p.world_id)
        .bind(p.position.lon)
        .bind(p.position.lat)
        .bind(p.heading)
        .bind(p.epoch as i64)
        .bind(p.seq as i64)
        .bind(p.updated_at_ms)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

fn flush(c: &mut Criterion) {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!(
            "flush benchmarks skipped: TEST_DATABASE_URL is not set (run scripts/bench --flush)"
        );
        return;
    };
    let runtime = Runtime::new().unwrap();
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(PLAYERS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    let mut timed = |name: &str, gist: bool, per_row: bool| {
        let (store, mut batch) = runtime.block_on(setup(&admin_url, gist));
        // The first flush inserts; the measured ones update, as in play.
        runtime.block_on(store.save_positions(&batch)).unwrap();
        group.bench_function(format!("{name}/{PLAYERS}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    moved(&mut batch);
                    let started = Instant::now();
                    if per_row {
                        runtime.block_on(row_per_statement(&store, &batch));
                    } else {
                        let written = runtime.block_on(store.save_positions(&batch)).unwrap();
                        assert_eq!(written, PLAYERS as u64);
                    }
                    total += started.elapsed();
                }
                total
            });
        });
        runtime.block_on(store.close());
    };
    timed("batched", false, false);
    timed("batched_with_gist", true, false);
    timed("row_per_statement", false, true);
    group.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
