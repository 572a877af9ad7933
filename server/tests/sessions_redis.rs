//! Sessions and profiles cached in a real Redis (a private `redis-server` per
//! test): what the shard writes there, that revocations cannot be undone by a
//! stale key, and that accounts and play go on, promptly, while Redis is down.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_protocol::{Encoding, KickReason};
use meridian_server::store::{
    now_ms, CachedStore, Profile, RedisCache, Role, Session, SqliteStore, Store, User,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use util::redis::RedisServer;
use util::{offset, Client, TestServer};
use uuid::Uuid;

const HOUR_MS: i64 = 3_600_000;

/// How long an account call or a connection may take while Redis is down.
const PROMPT: Duration = Duration::from_secs(2);

async fn shard(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |config| {
        config.redis_url = Some(url);
        // The tests log in often, some in a loop.
        config.login_rate_per_min = 10_000;
    })
    .await
}

fn session_key(session_id: &str) -> String {
    format!("meridian:session:{session_id}")
}

/// Register and log in; returns the login reply.
async fn login(server: &TestServer, username: &str) -> Value {
    let credentials = json!({ "username": username, "password": "a-good-password" });
    let (status, body) = server.post("/api/register", credentials.clone()).await;
    assert_eq!(status, 201, "register: {body}");
    let (status, body) = server.post("/api/login", credentials).await;
    assert_eq!(status, 200, "login: {body}");
    body
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
}

/// The upgrade to `/ws` with this token is refused with 401.
async fn refused_on_ws(server: &TestServer, token: &str) {
    match Client::connect(server.game, Encoding::Json, Some(token), None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        Err(other) => panic!("expected HTTP 401, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// Connect with this token, get welcomed, and have a move acknowledged.
async fn play(server: &TestServer, token: &str) -> Client {
    let mut client = Client::connect(server.game, Encoding::Bincode, Some(token), Some("arena"))
        .await
        .expect("the upgrade is accepted");
    client.welcome().await;
    let seq = client.move_to(offset(client.position, 2.0, 0.0)).await;
    client.acked(seq).await;
    client
}

/// Run `step` and check it took less than `PROMPT`.
async fn promptly<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = step.await;
    assert!(
        started.elapsed() < PROMPT,
        "{what} took {:?} with Redis down",
        started.elapsed()
    );
    out
}

#[tokio::test]
async fn login_caches_the_session_for_a_day_and_logout_deletes_it() {
    let redis = RedisServer::start();
    let server = shard(&redis).await;
    let body = login(&server, "alice").await;
    let key = session_key(text(&body, "session_id"));
    let ttl = redis.pttl(&key).await;
    assert!(
        (239 * HOUR_MS / 10..=24 * HOUR_MS).contains(&ttl),
        "a TTL of about 24 h, got {ttl} ms"
    );
    let cached: Value = serde_json::from_str(&redis.get(&key).await.unwrap()).unwrap();
    assert_eq!(cached["user_id"], body["user_id"]);

    // A guest session and a registration are cached the same way.
    let (status, guest) = server.post("/api/guest", json!({})).await;
    assert_eq!(status, 200);
    assert!(redis.exists(&session_key(text(&guest, "session_id"))).await);
    let (status, registered) = server
        .post(
            "/api/register",
            json!({"username": "bob", "password": "a-good-password"}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(
        redis
            .exists(&session_key(text(&registered, "session_id")))
            .await
    );

    let token = text(&body, "token");
    let mut client = play(&server, token).await;
    assert_eq!(server.post_bearer("/api/logout", token).await, 204);
    assert!(!redis.exists(&key).await, "logout deletes the key");
    assert!(redis.exists(&format!("{key}:revoked")).await);
    client
        .until(|m| match m {
            meridian_protocol::ServerMessage::Kicked { reason, .. } => {
                assert_eq!(*reason, KickReason::SessionRevoked);
                Some(())
            }
            _ => None,
        })
        .await;
    refused_on_ws(&server, token).await;
    assert!(
        !redis.exists(&key).await,
        "a refused token does not bring the key back"
    );
    server.stop().await;
}

/// While Redis does not answer: sessions from before, new ones, refresh, play
/// and logout all work, promptly. Returns the token that was logged out.
///
/// Promptness is timed on guest logins, which open sessions through the same
/// code as register and login but without hashing a password: on a busy test
/// machine the hashing threads (at the lowest priority) can take seconds,
/// which says nothing about Redis. Register and login are checked to work.
async fn works_without_redis(server: &TestServer, before: &Value, early_guest: &Value) -> String {
    let mut early = promptly(
        "connecting a session from before",
        play(server, text(before, "token")),
    )
    .await;
    let (status, guest) = promptly("a guest login", server.post("/api/guest", json!({}))).await;
    assert_eq!(status, 200, "{guest}");
    let mut during = promptly("connecting a guest", play(server, text(&guest, "token"))).await;
    let (status, refreshed) = promptly(
        "a refresh",
        server.post(
            "/api/refresh",
            json!({ "refresh_token": text(early_guest, "refresh_token") }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    promptly("connecting", play(server, text(&refreshed, "token"))).await;
    for client in [&mut early, &mut during] {
        let seq = client.move_to(offset(client.position, -2.0, 1.0)).await;
        promptly("a move", client.acked(seq)).await;
    }
    let registered = login(server, "during").await;
    play(server, text(&registered, "token")).await;

    // Logout works, and its revocation holds, although Redis missed it.
    let token = text(before, "token");
    let status = promptly("logout", server.post_bearer("/api/logout", token)).await;
    assert_eq!(status, 204);
    promptly("a refused connection", refused_on_ws(server, token)).await;
    token.to_owned()
}

/// Log in as guests until one's session is cached: Redis is used again.
async fn cached_again(server: &TestServer, redis: &RedisServer) {
    // At most the pause after a failure, plus a reconnect.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let (status, guest) = server.post("/api/guest", json!({})).await;
        assert_eq!(status, 200, "{guest}");
        if redis.exists(&session_key(text(&guest, "session_id"))).await {
            return;
        }
        assert!(Instant::now() < deadline, "no session key after {n} logins");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_redis_stopped_accounts_and_play_work_promptly_and_recover() {
    let mut redis = RedisServer::start();
    let server = shard(&redis).await;
    let before = login(&server, "before").await;
    let (_, early_guest) = server.post("/api/guest", json!({})).await;
    redis.stop();
    let revoked = works_without_redis(&server, &before, &early_guest).await;

    // Back, empty: new sessions are cached again, and the revoked one stays
    // refused.
    redis.restart();
    cached_again(&server, &redis).await;
    refused_on_ws(&server, &revoked).await;
    let again = login(&server, "after").await;
    assert!(redis.exists(&session_key(text(&again, "session_id"))).await);
    play(&server, text(&again, "token")).await;
    server.stop().await;
}

#[tokio::test]
async fn with_redis_stalled_accounts_and_play_work_promptly_and_recover() {
    // A stalled Redis accepts connections and commands and never answers:
    // only the deadlines on cache calls keep requests from hanging.
    let redis = RedisServer::start();
    let server = shard(&redis).await;
    let before = login(&server, "before").await;
    let (_, early_guest) = server.post("/api/guest", json!({})).await;
    redis.freeze();
    let revoked = works_without_redis(&server, &before, &early_guest).await;

    redis.thaw();
    cached_again(&server, &redis).await;
    refused_on_ws(&server, &revoked).await;
    let key = session_key(text(&before, "session_id"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.exists(&key).await {
        assert!(Instant::now() < deadline, "the logout never reached Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_shard_starts_while_redis_is_down_and_uses_it_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let server = shard(&redis).await;
    let (status, guest) = promptly("a guest login", server.post("/api/guest", json!({}))).await;
    assert_eq!(status, 200);
    promptly("connecting", play(&server, text(&guest, "token"))).await;
    // It serves, but it is not ready: new players belong on a shard that
    // can see the others.
    let (status, ready) = server.ops_get("/readyz").await;
    assert_eq!(status, 503, "not ready without Redis: {ready}");
    assert_eq!(ready["checks"]["redis"], "unreachable", "{ready}");
    assert_eq!(ready["checks"]["database"], "ok", "{ready}");

    redis.restart();
    cached_again(&server, &redis).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, ready) = server.ops_get("/readyz").await;
        if status == 200 {
            assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_cached_session_and_its_sockets() {
    let redis = RedisServer::start();
    let server = shard(&redis).await;
    let body = login(&server, "alice").await;
    let key = session_key(text(&body, "session_id"));
    let first = text(&body, "refresh_token");
    let (status, refreshed) = server
        .post("/api/refresh", json!({ "refresh_token": first }))
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let access = text(&refreshed, "token");
    assert!(redis.exists(&key).await, "a refresh keeps the session");
    let profile = format!("meridian:profile:{}", text(&body, "user_id"));
    let ttl = redis.pttl(&profile).await;
    assert!(
        (1..=300_000).contains(&ttl),
        "the refresh read the profile through the cache (TTL {ttl} ms)"
    );
    let mut client = play(&server, access).await;

    let (status, _) = server
        .post("/api/refresh", json!({ "refresh_token": first }))
        .await;
    assert_eq!(status, 401);
    assert!(!redis.exists(&key).await, "the reuse deleted the key");
    client
        .until(|m| match m {
            meridian_protocol::ServerMessage::Kicked { reason, .. } => {
                assert_eq!(*reason, KickReason::SessionRevoked);
                Some(())
            }
            _ => None,
        })
        .await;
    refused_on_ws(&server, access).await;
    refused_on_ws(&server, text(&body, "token")).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The cached store itself, over SQLite.
// ---------------------------------------------------------------------------

struct Cached {
    store: CachedStore,
    sqlite: SqliteStore,
    _dir: tempfile::TempDir,
}

async fn cached(redis: &RedisServer) -> Cached {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = util::open_store(dir.path()).await;
    let inner: Arc<dyn Store> = Arc::new(sqlite.clone());
    Cached {
        store: CachedStore::new(inner, RedisCache::open(&redis.url()).unwrap()),
        sqlite,
        _dir: dir,
    }
}

fn user(name: &str) -> User {
    User {
        id: Uuid::now_v7(),
        username: format!("{name}-{}", Uuid::now_v7().simple()),
        display_name: None,
        password_hash: None,
        device_hash: Some(Uuid::now_v7().simple().to_string()),
        roles: vec![Role::Player],
        team: None,
        created_at_ms: now_ms(),
    }
}

fn session(user: &User, expires_in_ms: i64) -> Session {
    Session {
        id: Uuid::now_v7(),
        user_id: user.id,
        created_at_ms: now_ms(),
        expires_at_ms: now_ms() + expires_in_ms,
        revoked: false,
    }
}

fn hash() -> String {
    meridian_server::auth::refresh::RefreshToken::generate(Uuid::now_v7()).hash
}

#[tokio::test]
async fn sessions_are_read_from_redis_and_refilled_for_at_most_their_remaining_life() {
    let redis = RedisServer::start();
    let c = cached(&redis).await;
    let alice = user("alice");
    c.store.create_user(&alice).await.unwrap();
    let s = session(&alice, HOUR_MS);
    c.store.create_session(&s, &hash()).await.unwrap();
    let key = format!("meridian:session:{}", s.id);
    let ttl = redis.pttl(&key).await;
    assert!(
        (HOUR_MS - 60_000..=HOUR_MS).contains(&ttl),
        "never past the session's end: {ttl} ms"
    );

    // Served from Redis: the database's row is not even read.
    sqlx::query("DELETE FROM sessions WHERE id = ?1")
        .bind(s.id.hyphenated())
        .execute(c.sqlite.pool())
        .await
        .unwrap();
    assert_eq!(c.store.session(s.id).await.unwrap(), Some(s.clone()));

    // A miss reads the database and refills the key.
    let t = session(&alice, 2 * HOUR_MS);
    c.store.create_session(&t, &hash()).await.unwrap();
    let key = format!("meridian:session:{}", t.id);
    redis.del(&key).await;
    assert_eq!(c.store.session(t.id).await.unwrap(), Some(t.clone()));
    let ttl = redis.pttl(&key).await;
    assert!(
        (2 * HOUR_MS - 60_000..=2 * HOUR_MS).contains(&ttl),
        "refilled until the session's end: {ttl} ms"
    );

    // Dead sessions are never cached.
    let expired = session(&alice, -1);
    c.store.create_session(&expired, &hash()).await.unwrap();
    assert!(c.store.session(expired.id).await.unwrap().is_some());
    assert!(
        !redis
            .exists(&format!("meridian:session:{}", expired.id))
            .await
    );
}

#[tokio::test]
async fn a_read_racing_a_revocation_cannot_bring_the_key_back() {
    let redis = RedisServer::start();
    let c = cached(&redis).await;
    let alice = user("alice");
    c.store.create_user(&alice).await.unwrap();
    let s = session(&alice, HOUR_MS);
    c.store.create_session(&s, &hash()).await.unwrap();
    let key = format!("meridian:session:{}", s.id);
    assert!(c.store.revoke_session(s.id).await.unwrap());
    assert!(!redis.exists(&key).await);

    // A read that saw the session live just before the revocation, and only
    // now gets to refill the key, is what this plays: the row says live again
    // while the read runs.
    sqlx::query("UPDATE sessions SET revoked = 0 WHERE id = ?1")
        .bind(s.id.hyphenated())
        .execute(c.sqlite.pool())
        .await
        .unwrap();
    assert!(!c.store.session(s.id).await.unwrap().unwrap().revoked);
    assert!(
        !redis.exists(&key).await,
        "the revoked mark kept the refill out"
    );
}

#[tokio::test]
async fn a_revocation_redis_missed_is_honoured_and_retried() {
    let mut redis = RedisServer::start();
    let c = cached(&redis).await;
    let alice = user("alice");
    c.store.create_user(&alice).await.unwrap();
    let s = session(&alice, HOUR_MS);
    c.store.create_session(&s, &hash()).await.unwrap();
    let key = format!("meridian:session:{}", s.id);
    let value = redis.get(&key).await.unwrap();

    // Redis is unreachable during the revocation but keeps its data (a
    // partition rather than a crash): restarting empty and planting the key
    // again plays that.
    redis.stop();
    assert!(c.store.revoke_session(s.id).await.unwrap());
    redis.restart();
    redis.set(&key, &value).await;
    assert!(
        c.store.session(s.id).await.unwrap().unwrap().revoked,
        "the stale key is not trusted"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.exists(&key).await {
        assert!(Instant::now() < deadline, "the removal was never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(redis.exists(&format!("{key}:revoked")).await);
    assert!(c.store.session(s.id).await.unwrap().unwrap().revoked);
}

#[tokio::test]
async fn profiles_are_cached_for_five_minutes_and_dropped_on_write() {
    let redis = RedisServer::start();
    let c = cached(&redis).await;
    let alice = user("alice");
    c.store.create_user(&alice).await.unwrap();
    let key = format!("meridian:profile:{}", alice.id);
    assert!(!redis.exists(&key).await, "filled on read, not on write");

    // Created without a team, so the store assigned one; the profile has it.
    let team = c.store.user_by_id(alice.id).await.unwrap().unwrap().team;
    assert!(team.is_some(), "a team was assigned");
    let expected = Profile {
        id: alice.id,
        username: alice.username.clone(),
        display_name: None,
        roles: vec![Role::Player],
        team,
    };
    assert_eq!(
        c.store.profile(alice.id).await.unwrap(),
        Some(expected.clone())
    );
    let ttl = redis.pttl(&key).await;
    assert!((1..=300_000).contains(&ttl), "TTL {ttl} ms");
    let cached: Profile = serde_json::from_str(&redis.get(&key).await.unwrap()).unwrap();
    assert_eq!(cached, expected);
    let raw = redis.get(&key).await.unwrap();
    assert!(!raw.contains("hash"), "no secrets in Redis: {raw}");

    // Read from Redis: a planted value is what comes back.
    let planted = Profile {
        username: "planted".into(),
        ..expected.clone()
    };
    redis
        .set(&key, &serde_json::to_string(&planted).unwrap())
        .await;
    assert_eq!(
        c.store.profile(alice.id).await.unwrap(),
        Some(planted.clone())
    );

    // A write to the account drops it. Creating the account is the only write
    // accounts have today, so a stale value is planted for a new one.
    let bob = user("bob");
    let bob_key = format!("meridian:profile:{}", bob.id);
    redis
        .set(
            &bob_key,
            &serde_json::to_string(&Profile {
                id: bob.id,
                ..planted
            })
            .unwrap(),
        )
        .await;
    c.store.create_user(&bob).await.unwrap();
    assert!(!redis.exists(&bob_key).await, "invalidated by the write");
    assert_eq!(
        c.store.profile(bob.id).await.unwrap().unwrap().username,
        bob.username
    );
}
