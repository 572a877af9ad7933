//! Bad input over real WebSockets: malformed, unknown, oversized and
//! mistyped frames, bad tokens and subprotocols, floods, idle and silent
//! sockets, a second login and a client that stops reading. Each gets its
//! documented error code, close code or HTTP status, and a bystander connected
//! to the same shard at the same time keeps being served.
//!
//! What a client sees, case by case:
//!
//! | case | client sees |
//! |---|---|
//! | malformed JSON / bincode, JSON `NaN` | `Error { malformed }`, socket stays open |
//! | unknown message type | `Error { unknown_type }`, socket stays open |
//! | frame of exactly `MAX_FRAME_BYTES` | decoded: `Error { malformed }`, open |
//! | frame over `MAX_FRAME_BYTES` | `Error { too_large }`, close 1009 |
//! | wrong frame type (binary on JSON, text on bincode) | `Error { wrong_frame_type }`, open; before `Hello`: then close 1008 |
//! | `Hello` on a socket authenticated by header | `Error { unexpected_message }`, open |
//! | missing token (`Hello` with an empty token) | `Error { unauthenticated }`, close 1008 |
//! | expired / forged / tampered / `alg: none` / garbage / revoked token | by header: HTTP 401; by `Hello`: `Error { unauthenticated }`, close 1008 |
//! | logout of a connected session | `Kicked { session_revoked }`, close 4004 |
//! | unknown or no subprotocol | HTTP 400 |
//! | flood of pings | `Error { rate_limited }`s, then `Kicked { protocol_abuse }`, close 4002 |
//! | idle joined socket | `Kicked { idle }`, close 4001 |
//! | socket that never authenticates | after 5 s `Error { unauthenticated }`, close 4000 |
//! | second login of the same account | the first gets `Kicked { logged_in_elsewhere }`, close 4003; the second takes over the entity |
//! | client that stops reading for 5 s | stays connected; when it reads again it catches up to current state |

mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use meridian_protocol::{
    close, limits, ClientMessage, Encoding, ErrorCode, KickReason, LonLat, ServerMessage,
};
use meridian_server::auth::secret::Secret;
use meridian_server::auth::token::{Claims, Tokens};
use meridian_server::Config;
use tokio_tungstenite::tungstenite::{self, Message};
use util::{offset, Client, Closed, TestServer, CENTER};

const BOTH: [Encoding; 2] = [Encoding::Bincode, Encoding::Json];

/// A shard whose account API does not rate-limit the many guest logins here.
async fn start() -> TestServer {
    TestServer::start_with(|c| c.login_rate_per_min = 100_000).await
}

/// A player in `arena` that must keep being served while others misbehave.
async fn bystander(server: &TestServer, encoding: Encoding) -> Client {
    server
        .guest_player("arena", offset(CENTER, 5.0, 5.0), encoding)
        .await
}

/// Send a one-metre move and wait for the server to acknowledge it: the
/// shard's reader, tick and writer are all still serving this client.
async fn assert_served(client: &mut Client) {
    let to = offset(client.position, 1.0, 0.0);
    let seq = client.move_to(to).await;
    client.acked(seq).await;
    client.position = to;
}

/// The next message that is not world state (`Update`, `AreaEvent`), or how
/// the socket closed.
async fn next_event(client: &mut Client) -> Result<ServerMessage, Closed> {
    loop {
        match client.next().await {
            Ok(ServerMessage::Update(_) | ServerMessage::AreaEvent { .. }) => continue,
            other => return other,
        }
    }
}

async fn expect_error(client: &mut Client, want: ErrorCode, what: &str) {
    match next_event(client).await {
        Ok(ServerMessage::Error { code, .. }) => assert_eq!(code, want, "{what}"),
        other => panic!("{what}: expected Error {{ {want:?} }}, got {other:?}"),
    }
}

async fn expect_close(client: &mut Client, want: u16, what: &str) {
    assert_eq!(next_event(client).await, Err(Closed::Code(want)), "{what}");
}

async fn expect_kicked(client: &mut Client, want: KickReason, close_code: u16, what: &str) {
    match next_event(client).await {
        Ok(ServerMessage::Kicked { reason, .. }) => assert_eq!(reason, want, "{what}"),
        other => panic!("{what}: expected Kicked {{ {want:?} }}, got {other:?}"),
    }
    expect_close(client, close_code, what).await;
}

/// A ping is answered: the socket is open and its reader still running.
async fn expect_open(client: &mut Client, what: &str) {
    client
        .send(&ClientMessage::Ping {
            client_time_ms: 4242,
        })
        .await;
    match next_event(client).await {
        Ok(ServerMessage::Pong { client_time_ms, .. }) => assert_eq!(client_time_ms, 4242),
        other => panic!("{what}: expected the socket open (Pong), got {other:?}"),
    }
}

/// Bytes in a frame of the other type than this encoding uses.
fn wrong_frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    if encoding.is_text() {
        Message::Binary(bytes.into())
    } else {
        Message::Text(String::from_utf8(bytes).unwrap().into())
    }
}

/// Bytes in this encoding's frame type.
fn frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    if encoding.is_text() {
        Message::Text(String::from_utf8(bytes).unwrap().into())
    } else {
        Message::Binary(bytes.into())
    }
}

#[tokio::test]
async fn malformed_frames_get_malformed_and_the_socket_stays_open() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    for encoding in BOTH {
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        let ping = encoding.encode(&ClientMessage::Ping { client_time_ms: 1 });
        let bad: Vec<(&str, Vec<u8>)> = match encoding {
            Encoding::Json => vec![
                ("truncated", br#"{"Move":"#.to_vec()),
                ("not JSON", b"hello server".to_vec()),
                (
                    "NaN literal",
                    br#"{"Move":{"seq":1,"lon":NaN,"lat":52.37,"heading":0,"accuracy_m":null,"fix_time_ms":null}}"#
                        .to_vec(),
                ),
                ("wrong field type", br#"{"Ping":{"client_time_ms":"soon"}}"#.to_vec()),
                ("two messages in one", br#"{"Ping":{"client_time_ms":1},"Move":{}}"#.to_vec()),
                ("empty", Vec::new()),
            ],
            Encoding::Bincode => vec![
                ("truncated Move", vec![1]),
                // 254 announces a u128, which cannot be a u64.
                ("bad integer", vec![2, 254]),
                ("trailing bytes", [ping.as_slice(), &[0]].concat()),
                ("invalid UTF-8 in a string", vec![0, 2, 0xC3, 0x28, 0, 0]),
                ("empty", Vec::new()),
            ],
        };
        for (what, bytes) in bad {
            c.socket.send(frame(encoding, bytes)).await.unwrap();
            expect_error(
                &mut c,
                ErrorCode::Malformed,
                &format!("{encoding:?} {what}"),
            )
            .await;
        }
        expect_open(&mut c, &format!("{encoding:?}")).await;
        assert_served(&mut c).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_message_types_get_unknown_type_and_the_socket_stays_open() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Json).await;
    for encoding in BOTH {
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        let bad: Vec<Vec<u8>> = match encoding {
            Encoding::Json => vec![
                br#"{"Teleport":{}}"#.to_vec(),
                br#"{"Teleport":{"lon":0,"lat":0}}"#.to_vec(),
            ],
            // 6 is the first index past `Chat`; 251 announces a u16 varint
            // (10 000).
            Encoding::Bincode => vec![vec![200], vec![6, 1, 2, 3], vec![251, 0x10, 0x27]],
        };
        for bytes in bad {
            let what = format!("{encoding:?} {bytes:?}");
            c.socket.send(frame(encoding, bytes)).await.unwrap();
            expect_error(&mut c, ErrorCode::UnknownType, &what).await;
        }
        expect_open(&mut c, &format!("{encoding:?}")).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_gets_too_large_and_close_1009() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    for encoding in BOTH {
        let what = format!("{encoding:?}");
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        // Garbage of the sizes around the limit: `1` bytes decode as a Move
        // followed by trailing bytes in bincode; `x` is not JSON.
        let filler = if encoding.is_text() { b'x' } else { 1 };
        // Exactly at the limit the frame is read and decoded.
        c.socket
            .send(frame(encoding, vec![filler; limits::MAX_FRAME_BYTES]))
            .await
            .unwrap();
        expect_error(&mut c, ErrorCode::Malformed, &what).await;
        expect_open(&mut c, &what).await;
        // One byte more is refused before decoding, and the socket closed:
        // the rest of an oversized frame is never read.
        c.socket
            .send(frame(encoding, vec![filler; limits::MAX_FRAME_BYTES + 1]))
            .await
            .unwrap();
        expect_error(&mut c, ErrorCode::TooLarge, &what).await;
        expect_close(&mut c, close::TOO_BIG, &what).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn frames_of_the_wrong_type_get_wrong_frame_type() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Json).await;
    for encoding in BOTH {
        let what = format!("{encoding:?}");
        let other = match encoding {
            Encoding::Json => Encoding::Bincode,
            Encoding::Bincode => Encoding::Json,
        };
        let ping = other.encode(&ClientMessage::Ping { client_time_ms: 1 });
        // Joined: refused, and the socket stays open.
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        c.socket
            .send(wrong_frame(encoding, ping.clone()))
            .await
            .unwrap();
        expect_error(&mut c, ErrorCode::WrongFrameType, &what).await;
        expect_open(&mut c, &what).await;
        // Before `Hello` the first frame must authenticate, so it is closed.
        let mut c = Client::connect(server.game, encoding, None, None)
            .await
            .unwrap();
        c.socket.send(wrong_frame(encoding, ping)).await.unwrap();
        expect_error(&mut c, ErrorCode::WrongFrameType, &what).await;
        expect_close(&mut c, close::AUTH_FAILED, &what).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn hello_after_header_authentication_is_unexpected() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    for encoding in BOTH {
        let what = format!("{encoding:?}");
        let (_, token) = server.guest(None).await;
        let mut c = Client::connect(server.game, encoding, Some(&token), None)
            .await
            .unwrap();
        c.welcome().await;
        c.send(&ClientMessage::Hello {
            token,
            world: None,
            resume: None,
        })
        .await;
        expect_error(&mut c, ErrorCode::UnexpectedMessage, &what).await;
        expect_open(&mut c, &what).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Refused at the upgrade with HTTP 401 when sent by header, and with
/// `Error { unauthenticated }` and close 1008 when sent in `Hello`.
async fn expect_refused_token(server: &TestServer, token: &str, what: &str) {
    match Client::connect(server.game, Encoding::Json, Some(token), None).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401, "{what} by header");
        }
        Err(other) => panic!("{what} by header: expected HTTP 401, got {other}"),
        Ok(_) => panic!("{what} by header: the upgrade was accepted"),
    }
    for encoding in BOTH {
        let what = format!("{what} by Hello in {encoding:?}");
        let mut c = Client::hello(server.game, encoding, token, None, None).await;
        expect_error(&mut c, ErrorCode::Unauthenticated, &what).await;
        expect_close(&mut c, close::AUTH_FAILED, &what).await;
    }
}

#[tokio::test]
async fn missing_expired_forged_tampered_and_unsigned_tokens_are_refused() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    // The shard's own signer, from the secret `Config::for_tests` configures.
    let secret = Config::for_tests(PathBuf::new()).jwt_secret.unwrap();
    let tokens = Tokens::new(&Secret::new(secret.as_bytes()), Duration::from_secs(900));
    let (user_id, token) = server.guest(None).await;
    let (other_id, _) = server.guest(None).await;
    let claims = tokens
        .verify(&token)
        .expect("the shard signs with this secret");
    assert_eq!(claims.sub, user_id);

    // Missing: a `Hello` with no token and nothing to resume.
    for encoding in BOTH {
        let what = format!("missing token in {encoding:?}");
        let mut c = Client::hello(server.game, encoding, "", None, None).await;
        expect_error(&mut c, ErrorCode::Unauthenticated, &what).await;
        expect_close(&mut c, close::AUTH_FAILED, &what).await;
    }

    let expired = Claims {
        iat: now_s() - 3600,
        exp: now_s() - 60,
        ..claims.clone()
    };
    expect_refused_token(&server, &tokens.sign(&expired).unwrap(), "expired").await;

    // The right key id, the wrong key.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(tokens.kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    expect_refused_token(&server, &forged, "forged").await;

    // Someone else's account id, with the original signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = serde_json::to_value(&claims).unwrap();
    payload["sub"] = other_id.to_string().into();
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    expect_refused_token(&server, &tampered, "tampered").await;

    let none = serde_json::json!({ "alg": "none", "typ": "JWT", "kid": tokens.kid() });
    let claims_json = serde_json::to_value(&claims).unwrap();
    let unsigned = format!("{}.{}.", b64(&none), b64(&claims_json));
    expect_refused_token(&server, &unsigned, "alg none").await;

    expect_refused_token(&server, "not-a-token", "garbage").await;

    // The same claims, re-signed with a future expiry by the right key, are
    // accepted: each refusal above is for the one thing that was changed.
    let fresh = Claims {
        exp: now_s() + 600,
        ..expired
    };
    let mut c = Client::connect(
        server.game,
        Encoding::Json,
        Some(&tokens.sign(&fresh).unwrap()),
        None,
    )
    .await
    .unwrap();
    c.welcome().await;
    assert_eq!(c.player_id, user_id);
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn logout_refuses_the_token_and_kicks_its_socket() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Json).await;
    for encoding in BOTH {
        let what = format!("revoked in {encoding:?}");
        let (_, token) = server.guest(None).await;
        let mut c = Client::connect(server.game, encoding, Some(&token), None)
            .await
            .unwrap();
        c.welcome().await;
        assert_eq!(server.post_bearer("/api/logout", &token).await, 204);
        expect_kicked(
            &mut c,
            KickReason::SessionRevoked,
            close::SESSION_REVOKED,
            &what,
        )
        .await;
        expect_refused_token(&server, &token, &what).await;
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_or_missing_subprotocol_is_refused_with_400() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    let (_, token) = server.guest(None).await;
    for subprotocol in [Some("meridian.v2.json"), Some("json"), None] {
        let what = format!("subprotocol {subprotocol:?}");
        // Even with a valid token: the encoding must be known first.
        match Client::connect_raw(server.game, subprotocol, Some(&token), None).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 400, "{what}");
                if let Some(body) = response.body() {
                    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
                    assert_eq!(body["error"], "unsupported_subprotocol", "{what}");
                }
            }
            Err(other) => panic!("{what}: expected HTTP 400, got {other}"),
            Ok(_) => panic!("{what}: the upgrade was accepted"),
        }
    }
    // Offering a future version first and ours second picks ours.
    let socket = Client::connect_raw(
        server.game,
        Some("meridian.v2.json, meridian.v1.json"),
        Some(&token),
        None,
    )
    .await
    .unwrap();
    let mut c = Client::wrap(socket, Encoding::Json);
    c.welcome().await;
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn a_ping_flood_is_rate_limited_then_kicked_for_abuse() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    for encoding in BOTH {
        let what = format!("flood in {encoding:?}");
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        // 500 pings as fast as the socket takes them. The server may close
        // the socket before all are written; that is the point.
        for i in 0..500 {
            let ping = encoding.encode(&ClientMessage::Ping { client_time_ms: i });
            if c.socket.feed(frame(encoding, ping)).await.is_err() {
                break;
            }
        }
        let _ = c.socket.flush().await;
        let (mut pongs, mut limited) = (0, 0);
        loop {
            match next_event(&mut c).await {
                Ok(ServerMessage::Pong { .. }) => pongs += 1,
                Ok(ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }) => limited += 1,
                Ok(ServerMessage::Kicked { reason, .. }) => {
                    assert_eq!(reason, KickReason::ProtocolAbuse, "{what}");
                    break;
                }
                other => {
                    panic!("{what}: unexpected {other:?} after {pongs} pongs, {limited} limited")
                }
            }
        }
        expect_close(&mut c, close::PROTOCOL_ABUSE, &what).await;
        // The default rate is 30/s with a burst of 60: the burst is answered,
        // then refusals, and the 21st refusal within 10 s disconnects.
        assert!((55..=70).contains(&pongs), "{what}: {pongs} pongs");
        assert_eq!(limited, 20, "{what}: rate-limited errors before the kick");
    }
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_kicked_while_an_active_one_is_served() {
    const IDLE: Duration = Duration::from_millis(800);
    let server = TestServer::start_with(|c| {
        c.login_rate_per_min = 100_000;
        c.idle_timeout = IDLE;
    })
    .await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The bystander moves every 200 ms, so it is never idle.
    let active = tokio::spawn(async move {
        let mut stopped = stopped;
        let mut served = 0;
        loop {
            assert_served(&mut by).await;
            served += 1;
            tokio::select! {
                _ = &mut stopped => return served,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    for encoding in BOTH {
        let what = format!("idle in {encoding:?}");
        let mut c = server.guest_player("arena", CENTER, encoding).await;
        let welcomed = Instant::now();
        expect_kicked(&mut c, KickReason::Idle, close::IDLE, &what).await;
        let after = welcomed.elapsed();
        assert!(
            after >= IDLE - Duration::from_millis(100) && after < IDLE * 3,
            "{what}: kicked after {after:?}"
        );
    }
    stop.send(()).unwrap();
    let served = active
        .await
        .expect("the active client was served throughout");
    assert!(served >= 5, "the active client was served {served} times");
    server.stop().await;
}

#[tokio::test]
async fn a_socket_that_never_authenticates_is_closed_after_5_s() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Json).await;
    let addr = server.game;
    let silent = |encoding| async move {
        let what = format!("silent {encoding:?}");
        let connected = Instant::now();
        let mut c = Client::connect(addr, encoding, None, None).await.unwrap();
        match c.next_within(Duration::from_secs(10)).await {
            Ok(ServerMessage::Error { code, .. }) => {
                assert_eq!(code, ErrorCode::Unauthenticated, "{what}");
            }
            other => panic!("{what}: expected Error {{ unauthenticated }}, got {other:?}"),
        }
        assert_eq!(
            c.next_within(Duration::from_secs(2)).await,
            Err(Closed::Code(close::AUTH_TIMEOUT)),
            "{what}"
        );
        let after = connected.elapsed();
        assert!(
            after >= Duration::from_secs(4) && after <= Duration::from_secs(7),
            "{what}: closed after {after:?}"
        );
    };
    tokio::join!(silent(Encoding::Bincode), silent(Encoding::Json), async {
        // Served while the silent sockets wait.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_served(&mut by).await;
    });
    assert_served(&mut by).await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_login_of_the_same_account_takes_the_entity_over() {
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    let device = format!("device-{}", uuid::Uuid::now_v7().simple());
    let (user_id, first_token) = server.guest(Some(&device)).await;
    let (same_user, second_token) = server.guest(Some(&device)).await;
    let (_, third_token) = server.guest(Some(&device)).await;
    assert_eq!(user_id, same_user);
    assert_ne!(first_token, second_token, "two logins, two sessions");

    let mut first = Client::connect(server.game, Encoding::Bincode, Some(&first_token), None)
        .await
        .unwrap();
    first.welcome().await;
    assert_served(&mut first).await;
    // By header, in the other encoding.
    let mut second = Client::connect(server.game, Encoding::Json, Some(&second_token), None)
        .await
        .unwrap();
    second.welcome().await;
    expect_kicked(
        &mut first,
        KickReason::LoggedInElsewhere,
        close::LOGGED_IN_ELSEWHERE,
        "first login",
    )
    .await;
    assert_eq!(second.player_id, user_id);
    assert_eq!(second.entity_id, first.entity_id, "the same entity");
    assert_served(&mut second).await;
    // By `Hello`, taking over again.
    let mut third = Client::hello(server.game, Encoding::Bincode, &third_token, None, None).await;
    third.welcome().await;
    expect_kicked(
        &mut second,
        KickReason::LoggedInElsewhere,
        close::LOGGED_IN_ELSEWHERE,
        "second login",
    )
    .await;
    assert_eq!(third.entity_id, first.entity_id, "the same entity");
    assert_served(&mut third).await;
    assert_served(&mut by).await;
    server.stop().await;
}

/// A player that walks to and fro near `home` every 50 ms, reading (and
/// discarding) everything the server sends it, until told to stop; then it
/// makes one last move to `rest` and reports when the server has acked it.
struct Neighbour {
    entity: u32,
    rest: LonLat,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Neighbour {
    async fn start(server: &TestServer, home: LonLat, rest: LonLat) -> Self {
        let client = server.guest_player("fast", home, Encoding::Bincode).await;
        let entity = client.entity_id;
        let (mut tx, mut rx) = client.socket.split();
        let acked = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&acked);
        let notify = Arc::new(tokio::sync::Notify::new());
        let notified = Arc::clone(&notify);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = rx.next().await {
                if let Message::Binary(bytes) = frame {
                    if let Ok(ServerMessage::Update(u)) = Encoding::Bincode.decode_server(&bytes) {
                        seen.fetch_max(u.ack_seq, Ordering::Relaxed);
                        notified.notify_waiters();
                    }
                }
            }
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let done = tokio::spawn(async move {
            let mut seq = 0;
            let mut step = |to: LonLat| {
                seq += 1;
                let frame = Encoding::Bincode.encode(&ClientMessage::Move {
                    seq,
                    lon: to.lon,
                    lat: to.lat,
                    heading: 90.0,
                    accuracy_m: None,
                    fix_time_ms: None,
                });
                (seq, Message::Binary(frame.into()))
            };
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0u32.. {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                // A triangle wave of ±4 m east of home, 1 m per step.
                let east = f64::from((i % 16).abs_diff(8)) - 4.0;
                let (_, frame) = step(offset(home, east, 0.0));
                tx.send(frame).await.unwrap();
            }
            let (last, frame) = step(rest);
            tx.send(frame).await.unwrap();
            let wait = async {
                while acked.load(Ordering::Relaxed) < last {
                    tokio::time::timeout(Duration::from_millis(100), notify.notified())
                        .await
                        .ok();
                }
            };
            tokio::time::timeout(WAIT_ACK, wait)
                .await
                .expect("the resting move was acked");
        });
        Self {
            entity,
            rest,
            stop,
            done,
        }
    }
}

const WAIT_ACK: Duration = Duration::from_secs(5);

/// What a client knows of its neighbours: entity id → quantized position.
type View = HashMap<u32, (i32, i32)>;

fn apply(view: &mut View, message: &ServerMessage) {
    if let ServerMessage::Update(u) = message {
        for id in &u.left {
            view.remove(id);
        }
        for e in &u.entered {
            view.insert(e.state.id, (e.state.lon_e7, e.state.lat_e7));
        }
        for s in &u.moved {
            view.insert(s.id, (s.lon_e7, s.lat_e7));
        }
    }
}

/// A client stops reading for 5 s while 30 neighbours within 100 m move
/// every 50 ms. It is not dropped (the writer holds one frame at a time and
/// only gives up after `WRITE_TIMEOUT`, 10 s, blocked), and when it reads
/// again its view converges to where the neighbours are now.
///
/// Measured on loopback: much of what is sent during the pause sits in the
/// kernel's socket buffers (the server's send buffer is bounded at 64 KiB,
/// the client's receive buffer grows on loopback), so the server's writer
/// barely blocks within 5 s and nothing accumulates in the server process.
/// A client that never reads is dropped after `WRITE_TIMEOUT` blocked, with
/// memory flat: `slow_consumers.rs`.
#[tokio::test]
async fn a_client_that_stops_reading_catches_up_to_current_state() {
    const NEIGHBOURS: usize = 30;
    let server = start().await;
    let mut by = bystander(&server, Encoding::Bincode).await;
    let mut a = server.guest_player("fast", CENTER, Encoding::Json).await;
    let mut neighbours = Vec::new();
    for i in 0..NEIGHBOURS {
        let angle = (i as f64 / NEIGHBOURS as f64) * std::f64::consts::TAU;
        let r = 30.0 + 2.0 * i as f64;
        let home = offset(CENTER, r * angle.cos(), r * angle.sin());
        neighbours.push(Neighbour::start(&server, home, offset(home, 0.0, 3.0)).await);
    }
    let mut view = View::new();
    while view.len() < NEIGHBOURS {
        apply(&mut view, &a.next().await.unwrap());
    }
    // A stops reading while its neighbours walk; the bystander is served.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_served(&mut by).await;
    // The neighbours come to rest, each at a spot it never visited before.
    let mut rest = View::new();
    for n in neighbours {
        n.stop.send(()).unwrap();
        n.done.await.unwrap();
        let at = meridian_protocol::EntityState::quantize(n.entity, n.rest, 0.0, 0.0);
        rest.insert(n.entity, (at.lon_e7, at.lat_e7));
    }
    // A reads again and soon sees everyone where they are now.
    let resumed = Instant::now();
    let at_rest = |view: &View| {
        rest.iter().all(|(id, at)| {
            view.get(id)
                .is_some_and(|v| (v.0 - at.0).abs() <= 1 && (v.1 - at.1).abs() <= 1)
        })
    };
    while !at_rest(&view) {
        match a.next().await {
            Ok(message) => apply(&mut view, &message),
            Err(closed) => panic!("the slow reader was disconnected: {closed:?}"),
        }
    }
    let caught_up = resumed.elapsed();
    assert!(
        caught_up < Duration::from_secs(2),
        "caught up after {caught_up:?}"
    );
    assert_eq!(view.len(), NEIGHBOURS, "nobody extra or missing: {view:?}");
    assert_served(&mut a).await;
    assert_served(&mut by).await;
    server.stop().await;
}
