//! A shard on PostgreSQL + PostGIS: what a flush writes, checked in PostGIS
//! itself, and a database outage while players keep moving.

mod util;

use std::collections::HashMap;
use std::time::Duration;

use meridian_protocol::Encoding;
use sqlx::{PgPool, Row};
use util::pg::{PgCluster, TestDatabase};
use util::{offset, Client, TestServer, CENTER};
use uuid::Uuid;

const FLUSH: Duration = Duration::from_millis(200);

/// `n` players in a row 200 m south of the centre, clear of every area.
async fn players(server: &TestServer, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        let at = offset(CENTER, i as f64 * 15.0 - 100.0, -200.0);
        clients.push(server.guest_player("arena", at, Encoding::Bincode).await);
    }
    clients
}

/// Every player takes one step of `step_m` north and waits for its ack, so
/// `client.position` is what the shard holds.
async fn step_all(clients: &mut [Client], step_m: f64) {
    for client in clients.iter_mut() {
        let to = offset(client.position, 0.0, step_m);
        let seq = client.move_to(to).await;
        client.acked(seq).await;
        client.position = to;
    }
}

/// Stored positions by player: (valid, srid, lon, lat).
async fn stored(pool: &PgPool) -> HashMap<Uuid, (bool, i32, f64, f64)> {
    sqlx::query(
        "SELECT user_id, ST_IsValid(geom) AS valid, ST_SRID(geom) AS srid, \
                ST_X(geom) AS lon, ST_Y(geom) AS lat FROM player_positions",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.get("user_id"),
            (
                row.get("valid"),
                row.get("srid"),
                row.get("lon"),
                row.get("lat"),
            ),
        )
    })
    .collect()
}

/// The shard normalizes longitudes into [-180, 180), which may round the last
/// bits of what a client sent; 1e-9° is a tenth of a millimetre.
const SAME_DEG: f64 = 1e-9;

/// Wait until PostGIS holds the players' positions (valid points in SRID
/// 4326); panics with the differences after `within`.
async fn until_stored(pool: &PgPool, clients: &[Client], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rows = stored(pool).await;
        let wrong: Vec<String> = clients
            .iter()
            .filter_map(|c| {
                let want = (true, 4326, c.position.lon, c.position.lat);
                let same = |got: (bool, i32, f64, f64)| {
                    (got.0, got.1) == (want.0, want.1)
                        && (got.2 - want.2).abs() < SAME_DEG
                        && (got.3 - want.3).abs() < SAME_DEG
                };
                match rows.get(&c.player_id) {
                    Some(&got) if same(got) => None,
                    got => Some(format!("{}: stored {got:?}, shard {want:?}", c.player_id)),
                }
            })
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PostGIS does not hold the shard's positions:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_flush_stores_valid_srid_4326_points_equal_to_the_shards() {
    let db = TestDatabase::create().await;
    let server = TestServer::start_pg(&db.url, |c| c.flush_interval = FLUSH).await;
    let pool = db.pool().await;
    let mut clients = players(&server, 12).await;
    for _ in 0..5 {
        step_all(&mut clients, 3.0).await;
    }
    until_stored(&pool, &clients, Duration::from_secs(5)).await;
    let rows = stored(&pool).await;
    assert_eq!(rows.len(), clients.len(), "one row per player");
    server.stop().await;
}

async fn readiness(server: &TestServer) -> (u16, serde_json::Value) {
    server.ops_get("/readyz").await
}

/// Wait for `/readyz` to answer `status`, walking the players meanwhile.
async fn walk_until_ready_is(server: &TestServer, clients: &mut [Client], status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        step_all(clients, 1.0).await;
        let (got, body) = readiness(server).await;
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_outage_loses_no_position_and_readiness_follows_it() {
    let cluster = PgCluster::start();
    let db = TestDatabase::create_in(&cluster.admin_url()).await;
    let server = TestServer::start_pg(&db.url, |c| {
        c.flush_interval = FLUSH;
        // Failing calls give up sooner than the 30 s default, so the test
        // also covers flushes that fail rather than only wait.
        c.db_pool.acquire_timeout = Duration::from_secs(2);
    })
    .await;
    let mut clients = players(&server, 10).await;
    step_all(&mut clients, 2.0).await;
    assert_eq!(readiness(&server).await.0, 200);
    let pool = db.pool().await;
    until_stored(&pool, &clients, Duration::from_secs(5)).await;
    pool.close().await;

    // The database goes away; the players keep moving and every move is
    // acknowledged: the shard keeps serving.
    cluster.halt();
    walk_until_ready_is(&server, &mut clients, 503).await;
    let (_, body) = readiness(&server).await;
    assert_eq!(body["checks"]["database"], "unreachable", "{body}");
    // Durable writes are refused with a clear error, never acknowledged.
    let (status, body) = server
        .post(
            "/api/register",
            serde_json::json!({"username": "late", "password": "a-good-password"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );

    // Memory stays bounded by the player count, however many moves are made:
    // between flush attempts, exactly one pending position per player.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        step_all(&mut clients, 1.0).await;
        let (_, body) = readiness(&server).await;
        let pending = body["pending_positions"].as_u64().unwrap() as usize;
        assert!(pending <= clients.len(), "{body}");
        if pending == clients.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back: readiness recovers and the newest positions are flushed.
    cluster.resume();
    walk_until_ready_is(&server, &mut clients, 200).await;
    step_all(&mut clients, 1.0).await;
    let pool = db.pool().await;
    until_stored(&pool, &clients, Duration::from_secs(10)).await;
    let late: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'late'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(late, 0, "the refused registration was not written later");
    let (status, _) = server
        .post(
            "/api/register",
            serde_json::json!({"username": "late", "password": "a-good-password"}),
        )
        .await;
    assert_eq!(status, 201, "and works once the database is back");
    server.stop().await;
    // The final flush at shutdown changes nothing: it was all there.
    until_stored(&pool, &clients, Duration::from_secs(1)).await;
}
