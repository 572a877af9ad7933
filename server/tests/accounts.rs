//! The account API over real HTTP: a real SQLite store, the in-process bus, and
//! `router(auth)` served on port 0 with client addresses, spoken to with reqwest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_server::auth::refresh::RefreshToken;
use meridian_server::auth::secret::Secret;
use meridian_server::auth::token::Tokens;
use meridian_server::auth::{router, Auth, AuthError};
use meridian_server::bus::{Bus, ControlEvent, LocalBus};
use meridian_server::config::Config;
use meridian_server::store::{now_ms, Role, Session, SqliteStore, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// A running account API with its own database.
struct TestServer {
    base: String,
    auth: Arc<Auth>,
    store: Arc<dyn Store>,
    sqlite: Arc<SqliteStore>,
    bus: Arc<LocalBus>,
    config: Config,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A response's status, headers and JSON body (`Null` when empty).
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl TestServer {
    async fn start() -> Self {
        Self::with_rate(1000).await
    }

    async fn with_rate(login_rate_per_min: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("meridian.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let sqlite = Arc::new(store);
        let store: Arc<dyn Store> = Arc::clone(&sqlite) as Arc<dyn Store>;
        let bus = Arc::new(LocalBus::default());
        let mut config = Config::for_tests(dir.path().to_owned());
        config.login_rate_per_min = login_rate_per_min;
        let auth = Arc::new(
            Auth::new(
                &config,
                Arc::clone(&store),
                Arc::clone(&bus) as Arc<dyn Bus>,
            )
            .await
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::clone(&auth));
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            auth,
            store,
            sqlite,
            bus,
            config,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Reply {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request).await
    }

    async fn register(&self, username: &str, password: &str) -> Reply {
        self.post(
            "/api/register",
            json!({"username": username, "password": password}),
        )
        .await
    }

    async fn login(&self, username: &str, password: &str) -> Reply {
        self.post(
            "/api/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/api/refresh", json!({ "refresh_token": refresh_token }))
            .await
    }

    async fn logout(&self, authorization: Option<&str>) -> Reply {
        let mut request = self.http.post(format!("{}/api/logout", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        self.send(request).await
    }
}

#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["error"], code, "{}", reply.text);
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a human message too: {}", reply.text);
}

fn uuid(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn register_creates_an_account_once_and_logs_it_in() {
    let server = TestServer::start().await;
    let reply = server.register("alice", "correct horse").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let user_id = uuid(&reply.body["user_id"]);
    assert_eq!(user_id.get_version_num(), 7);
    assert_eq!(reply.body["username"], "alice");
    let identity = server
        .auth
        .authenticate(reply.body["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(identity.user_id, user_id);
    assert_eq!(identity.session_id, uuid(&reply.body["session_id"]));
    let refreshed = server
        .refresh(reply.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);

    let again = server.register("alice", "another password").await;
    assert_error(&again, StatusCode::CONFLICT, "username_taken");
}

#[tokio::test]
async fn bad_usernames_and_passwords_are_refused_with_the_reason() {
    let server = TestServer::start().await;
    let cases = [
        ("ab", "long enough", "invalid_username", "3 to 32"),
        (
            "has space",
            "long enough",
            "invalid_username",
            "only letters",
        ),
        ("_alice", "long enough", "invalid_username", "start with"),
        (
            "guest-12345678",
            "long enough",
            "invalid_username",
            "reserved",
        ),
        ("bob", "short", "invalid_password", "8 to 128"),
        ("bob_bob_bob", "bob_bob_bob", "invalid_password", "username"),
    ];
    for (username, password, code, why) in cases {
        let reply = server.register(username, password).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, code);
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(why), "{username}/{password}: {message}");
    }
    let long = "p".repeat(129);
    let reply = server.register("bob", &long).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_password");
    // Nothing was created by the refused attempts.
    let reply = server.register("bob", "a fine password").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

#[tokio::test]
async fn malformed_bodies_get_clear_400s() {
    let server = TestServer::start().await;
    let json = Some("application/json");

    let reply = server.post_raw("/api/register", json, "{not json").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");

    let reply = server
        .post_raw("/api/login", json, r#"{"username":"alice"}"#)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(reply.body["message"].as_str().unwrap().contains("password"));

    let reply = server
        .post_raw("/api/register", json, r#"{"username":5,"password":"x"}"#)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");

    let reply = server.post_raw("/api/guest", None, "[1, 2").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");

    let reply = server
        .post_raw("/api/login", None, r#"{"username":"a","password":"b"}"#)
        .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let huge = json!({"username": "alice", "password": "x".repeat(10_000)}).to_string();
    let reply = server.post_raw("/api/login", json, &huge).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn login_returns_a_token_that_authenticates() {
    let server = TestServer::start().await;
    let user_id = uuid(&server.register("alice", "correct horse").await.body["user_id"]);

    let reply = server.login("alice", "correct horse").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(uuid(&reply.body["user_id"]), user_id);
    let token = reply.body["token"].as_str().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let expires_at = reply.body["expires_at"].as_i64().unwrap();
    let ttl_ms = expires_at - now_ms;
    assert!(
        (890_000..=901_000).contains(&ttl_ms),
        "token TTL is the configured 900 s, got {ttl_ms} ms"
    );

    let identity = server.auth.authenticate(token).await.unwrap();
    assert_eq!(identity.user_id, user_id);
    assert_eq!(identity.name, "alice");
    assert_eq!(identity.roles, vec![Role::Player]);
    assert_eq!(identity.session_id, uuid(&reply.body["session_id"]));

    // A second login opens a second, independent session.
    let second = server.login("alice", "correct horse").await;
    assert_ne!(second.body["session_id"], reply.body["session_id"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;

    let wrong = server.login("alice", "wrong horse").await;
    let unknown = server.login("nobody", "correct horse").await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.text, unknown.text, "identical bodies");

    let guest = server.post("/api/guest", json!({})).await;
    let guest_name = guest.body["username"].as_str().unwrap();
    let reply = server.login(guest_name, "any password").await;
    assert_eq!(
        reply.text, wrong.text,
        "guests have no password to log in with"
    );
}

#[tokio::test]
async fn attempts_past_the_rate_get_429_with_retry_after() {
    let server = TestServer::with_rate(3).await;
    server.register("alice", "correct horse").await;
    server.login("alice", "wrong horse").await;
    server.post("/api/guest", json!({})).await;

    let reply = server.login("alice", "correct horse").await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");

    // Malformed attempts count too, refresh is limited as well, and logout
    // is not limited.
    let reply = server
        .post_raw("/api/register", Some("application/json"), "{")
        .await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let reply = server.refresh("not-a-refresh-token").await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let reply = server.logout(None).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn guests_are_created_and_recognised_by_their_device() {
    let server = TestServer::start().await;

    // No body: the server picks the device secret and returns it.
    let first = server.post_raw("/api/guest", None, "").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let device_id = first.body["device_id"].as_str().unwrap().to_owned();
    assert_eq!(device_id.len(), 64);
    let username = first.body["username"].as_str().unwrap();
    assert!(
        username.starts_with("guest-") && username.len() == 14,
        "{username}"
    );
    let identity = server
        .auth
        .authenticate(first.body["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(identity.user_id, uuid(&first.body["user_id"]));
    assert_eq!(identity.name, username);

    // The same device logs into the same account, with a new session.
    let again = server
        .post("/api/guest", json!({"device_id": device_id}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["user_id"], first.body["user_id"]);
    assert_eq!(again.body["username"], first.body["username"]);
    assert_ne!(again.body["session_id"], first.body["session_id"]);

    // A client-chosen device secret makes another account, and is echoed.
    let own = "my-phone-secret-0123456789";
    let other = server.post("/api/guest", json!({"device_id": own})).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    assert_eq!(other.body["device_id"], own);
    assert_ne!(other.body["user_id"], first.body["user_id"]);
    let twice = server.post("/api/guest", json!({"device_id": own})).await;
    assert_eq!(twice.body["user_id"], other.body["user_id"]);

    let reply = server
        .post("/api/guest", json!({"device_id": "too-short"}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_device_id");
}

#[tokio::test]
async fn logout_revokes_the_session_everywhere() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;
    let login = server.login("alice", "correct horse").await;
    let other = server.login("alice", "correct horse").await;
    let token = login.body["token"].as_str().unwrap();
    let session_id = uuid(&login.body["session_id"]);
    let mut control = server.bus.subscribe_control();

    let reply = server.logout(Some(&format!("Bearer {token}"))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);

    let event = tokio::time::timeout(Duration::from_secs(5), control.recv())
        .await
        .expect("a control event")
        .unwrap();
    assert_eq!(event, ControlEvent::SessionRevoked { session_id });
    assert!(matches!(
        server.auth.authenticate(token).await,
        Err(AuthError::InvalidToken)
    ));
    // Other sessions of the account are untouched.
    let other_token = other.body["token"].as_str().unwrap();
    assert!(server.auth.authenticate(other_token).await.is_ok());

    // The revoked token cannot log out again.
    let reply = server.logout(Some(&format!("Bearer {token}"))).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn logout_needs_a_valid_bearer_token() {
    let server = TestServer::start().await;
    for authorization in [
        None,
        Some("Bearer"),
        Some("Basic YWxpY2U6cGFzc3dvcmQ="),
        Some("Bearer not.a.token"),
        Some("Bearer eyJhbGciOiJub25lIn0.e30."),
    ] {
        let reply = server.logout(authorization).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
}

#[tokio::test]
async fn tokens_for_dead_or_foreign_sessions_are_refused() {
    let server = TestServer::start().await;
    let alice = uuid(&server.register("alice", "correct horse").await.body["user_id"]);
    let bob = uuid(&server.register("bob", "battery staple").await.body["user_id"]);
    // Tokens signed exactly as the service signs them, naming sessions made here.
    let secret = Secret::new(server.config.jwt_secret.clone().unwrap());
    let tokens = Tokens::new(&secret, Duration::from_secs(900));
    let token_for = |sub: Uuid, sid: Uuid| {
        tokens
            .sign(&tokens.claims(sub, sid, "alice", &[Role::Player]))
            .unwrap()
    };
    let session = |user_id: Uuid, expires_at_ms: i64| Session {
        id: Uuid::now_v7(),
        user_id,
        created_at_ms: now_ms() - 1000,
        expires_at_ms,
        revoked: false,
    };

    let live = session(alice, now_ms() + 60_000);
    let hash = |session: &Session| RefreshToken::generate(session.id).hash;
    server
        .store
        .create_session(&live, &hash(&live))
        .await
        .unwrap();
    let identity = server.auth.authenticate(&token_for(alice, live.id)).await;
    assert_eq!(
        identity.unwrap().session_id,
        live.id,
        "the control case works"
    );

    let expired = session(alice, now_ms() - 1);
    server
        .store
        .create_session(&expired, &hash(&expired))
        .await
        .unwrap();
    let bobs = session(bob, now_ms() + 60_000);
    server
        .store
        .create_session(&bobs, &hash(&bobs))
        .await
        .unwrap();
    for (sub, sid) in [
        (alice, expired.id),
        (alice, bobs.id),
        (alice, Uuid::now_v7()),
    ] {
        let result = server.auth.authenticate(&token_for(sub, sid)).await;
        assert!(matches!(result, Err(AuthError::InvalidToken)), "{result:?}");
    }
}

#[tokio::test]
async fn a_store_outage_is_503_without_database_details() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;
    let login = server.login("alice", "correct horse").await;
    let (token, refresh) = tokens_of(&login);
    server.sqlite.close().await;

    for reply in [
        server.login("alice", "correct horse").await,
        server.register("bob", "battery staple").await,
        server.post("/api/guest", json!({})).await,
        server.refresh(&refresh).await,
        server.logout(Some(&format!("Bearer {token}"))).await,
    ] {
        assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        let text = reply.text.to_lowercase();
        assert!(!text.contains("sqlite") && !text.contains("pool"), "{text}");
    }
    let result = server.auth.authenticate(&token).await;
    assert!(matches!(result, Err(AuthError::Store(_))), "{result:?}");
}

/// The access and refresh tokens of a login or refresh reply.
fn tokens_of(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    (
        reply.body["token"].as_str().unwrap().to_owned(),
        reply.body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn refresh_tokens_rotate_and_spent_ones_stop_working() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;
    let login = server.login("alice", "correct horse").await;
    let session_id = uuid(&login.body["session_id"]);
    let (_, first) = tokens_of(&login);
    assert!(first.starts_with(&format!("{session_id}.")), "{first}");

    let reply = server.refresh(&first).await;
    let (access, second) = tokens_of(&reply);
    assert_ne!(second, first);
    assert_eq!(uuid(&reply.body["session_id"]), session_id);
    assert_eq!(reply.body["username"], "alice");
    assert!(reply.body["expires_at"].as_i64().unwrap() > now_ms());
    let identity = server.auth.authenticate(&access).await.unwrap();
    assert_eq!(identity.session_id, session_id);
    assert_eq!(identity.roles, vec![Role::Player]);

    // The new one works in turn, once.
    let (_, third) = tokens_of(&server.refresh(&second).await);
    assert_ne!(third, second);
    let (_, fourth) = tokens_of(&server.refresh(&third).await);
    assert!(server.auth.authenticate(&access).await.is_ok());
    let reply = server.refresh(&first).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        reply.headers["www-authenticate"], "Bearer",
        "spent long ago: refused, and nothing else happens"
    );
    assert!(server.auth.authenticate(&access).await.is_ok());
    tokens_of(&server.refresh(&fourth).await);
}

#[tokio::test]
async fn a_spent_refresh_token_used_again_revokes_the_session() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;
    let login = server.login("alice", "correct horse").await;
    let other = server.login("alice", "correct horse").await;
    let session_id = uuid(&login.body["session_id"]);
    let (first_access, first) = tokens_of(&login);
    let (access, second) = tokens_of(&server.refresh(&first).await);
    let mut control = server.bus.subscribe_control();

    // Whoever comes second with `first`, thief or owner, ends the session.
    let reply = server.refresh(&first).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    let event = tokio::time::timeout(Duration::from_secs(5), control.recv())
        .await
        .expect("a control event, as on logout")
        .unwrap();
    assert_eq!(event, ControlEvent::SessionRevoked { session_id });
    for token in [&first_access, &access] {
        assert!(matches!(
            server.auth.authenticate(token).await,
            Err(AuthError::InvalidToken)
        ));
    }
    let reply = server.refresh(&second).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    assert!(
        server
            .store
            .session(session_id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // The account's other sessions are untouched.
    let (other_access, other_refresh) = tokens_of(&other);
    assert!(server.auth.authenticate(&other_access).await.is_ok());
    tokens_of(&server.refresh(&other_refresh).await);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_have_one_winner() {
    let server = TestServer::start().await;
    let guest = server.post("/api/guest", json!({})).await;
    let session_id = uuid(&guest.body["session_id"]);
    let (_, token) = tokens_of(&guest);
    let replies = futures_util::future::join_all((0..8).map(|_| server.refresh(&token))).await;
    let won: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(won.len(), 1, "exactly one refresh spends the token");
    for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    // The losers presented a token that was spent by then, which is what a
    // stolen copy looks like: the session is over, so a client must never
    // refresh twice with one token.
    assert!(
        server
            .store
            .session(session_id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    let (_, next) = tokens_of(won[0]);
    let reply = server.refresh(&next).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn malformed_unknown_and_guessed_refresh_tokens_are_refused_harmlessly() {
    let server = TestServer::start().await;
    let guest = server.post("/api/guest", json!({})).await;
    let session_id = uuid(&guest.body["session_id"]);
    let (access, token) = tokens_of(&guest);
    let guessed = RefreshToken::generate(session_id).token;
    let unknown = RefreshToken::generate(Uuid::now_v7()).token;
    for bad in [
        "",
        "garbage",
        &access,
        &format!("{session_id}."),
        &format!("{session_id}.{}", &token[37..70]),
        &unknown,
        &guessed,
    ] {
        let reply = server.refresh(bad).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let reply = server
        .post_raw("/api/refresh", Some("application/json"), "{}")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");

    // Knowing a session's id is not enough to end it.
    assert!(server.auth.authenticate(&access).await.is_ok());
    tokens_of(&server.refresh(&token).await);
}

#[tokio::test]
async fn logged_out_or_expired_sessions_cannot_refresh() {
    let server = TestServer::start().await;
    let guest = server.post("/api/guest", json!({})).await;
    let (access, token) = tokens_of(&guest);
    let reply = server.logout(Some(&format!("Bearer {access}"))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let reply = server.refresh(&token).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");

    let user_id = uuid(&guest.body["user_id"]);
    let expired = Session {
        id: Uuid::now_v7(),
        user_id,
        created_at_ms: now_ms() - 10_000,
        expires_at_ms: now_ms() - 1,
        revoked: false,
    };
    let refresh = RefreshToken::generate(expired.id);
    server
        .store
        .create_session(&expired, &refresh.hash)
        .await
        .unwrap();
    let reply = server.refresh(&refresh.token).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
}

// ---------------------------------------------------------------------------
// Teams.
// ---------------------------------------------------------------------------

impl TestServer {
    async fn register_in(&self, username: &str, team: Value) -> Reply {
        self.post(
            "/api/register",
            json!({"username": username, "password": "correct horse", "team": team}),
        )
        .await
    }
}

/// The team a reply names, and that the store has for its account.
async fn team_of(server: &TestServer, reply: &Reply) -> String {
    assert!(reply.status.is_success(), "{}", reply.text);
    let team = reply.body["team"]
        .as_str()
        .unwrap_or_else(|| panic!("no team in {}", reply.text))
        .to_owned();
    let stored = server
        .store
        .user_by_id(uuid(&reply.body["user_id"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.team.as_deref(), Some(team.as_str()), "as stored");
    team
}

#[tokio::test]
async fn a_chosen_team_is_kept_and_every_reply_names_it() {
    let server = TestServer::start().await;
    let registered = server.register_in("alice", json!("blue")).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text
    );
    assert_eq!(team_of(&server, &registered).await, "blue");

    let login = server.login("alice", "correct horse").await;
    assert_eq!(team_of(&server, &login).await, "blue");
    let (_, refresh_token) = tokens_of(&login);
    let refreshed = server.refresh(&refresh_token).await;
    assert_eq!(team_of(&server, &refreshed).await, "blue");

    // A new guest joins the team it asks for; the device's account keeps it.
    let guest = server.post("/api/guest", json!({"team": "blue"})).await;
    assert_eq!(team_of(&server, &guest).await, "blue");
    let device_id = guest.body["device_id"].as_str().unwrap();
    let again = server
        .post("/api/guest", json!({"device_id": device_id, "team": "red"}))
        .await;
    assert_eq!(again.body["user_id"], guest.body["user_id"]);
    assert_eq!(
        team_of(&server, &again).await,
        "blue",
        "an existing account keeps its team"
    );
}

#[tokio::test]
async fn without_a_choice_new_accounts_take_turns_from_the_first_team() {
    let server = TestServer::start().await;
    let mut teams = Vec::new();
    // `"team": null` is the same as no team.
    for i in 0..2 {
        let reply = server.register_in(&format!("null{i}"), Value::Null).await;
        teams.push(team_of(&server, &reply).await);
    }
    for i in 0..2 {
        let reply = server
            .register(&format!("player{i}"), "correct horse")
            .await;
        teams.push(team_of(&server, &reply).await);
    }
    for _ in 0..2 {
        let reply = server.post_raw("/api/guest", None, "").await;
        teams.push(team_of(&server, &reply).await);
    }
    assert_eq!(teams, ["red", "blue", "red", "blue", "red", "blue"]);

    // A chosen team counts: after two more reds, blue comes twice.
    for i in 0..2 {
        let reply = server.register_in(&format!("red{i}"), json!("red")).await;
        assert_eq!(team_of(&server, &reply).await, "red");
    }
    let mut next = Vec::new();
    for i in 0..3 {
        let reply = server.register(&format!("late{i}"), "correct horse").await;
        next.push(team_of(&server, &reply).await);
    }
    assert_eq!(next, ["blue", "blue", "red"], "the smallest team first");
}

#[tokio::test]
async fn an_unknown_team_is_refused_with_the_valid_ones() {
    let server = TestServer::start().await;
    for team in ["green", "", "RED"] {
        let reply = server.register_in("alice", json!(team)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_team");
        assert_eq!(
            reply.body["message"], "team must be one of: red, blue",
            "{}",
            reply.text
        );
        let reply = server.post("/api/guest", json!({"team": team})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_team");
    }
    let reply = server
        .post_raw(
            "/api/register",
            Some("application/json"),
            r#"{"username":"alice","password":"correct horse","team":7}"#,
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_json");

    // Nothing was created: the name is free and no guest exists.
    assert_eq!(server.store.user_by_name("alice").await.unwrap(), None);
    let registered = server.register_in("alice", json!("red")).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(server.sqlite.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1, "only alice, no refused guest");
}
