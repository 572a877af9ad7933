//! Behind a load balancer: with `TRUSTED_PROXIES` naming it, the per-address
//! limits count the clients it forwards for (`X-Forwarded-For`), each on its
//! own; without it, or from anyone else, the header changes nothing. And
//! failed logins are limited per account whatever addresses they come from,
//! while logins that succeed cost nothing.

mod util;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use util::TestServer;

const RATE: u32 = 3;

/// POST a JSON body to the game port with an `X-Forwarded-For` header,
/// from the loopback address `from`; returns the status and the body.
async fn post_from(
    server: &TestServer,
    from: &str,
    forwarded_for: Option<&str>,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let tcp = connect_from(server.game, from).await;
    let body = body.to_string();
    let forwarded = forwarded_for.map_or(String::new(), |f| format!("X-Forwarded-For: {f}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{forwarded}\r\n{body}",
        server.game,
        body.len()
    );
    let (status, _, text) = exchange(tcp, &request, true).await;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A WebSocket upgrade attempt with `X-Forwarded-For: forwarded_for` from
/// 127.0.0.1; returns the status and the socket, left open.
async fn upgrade_for(game: SocketAddr, forwarded_for: &str) -> (u16, TcpStream) {
    let tcp = connect_from(game, "127.0.0.1").await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {game}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: meridian.v1.json\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n"
    );
    let (status, tcp, _) = exchange(tcp, &request, false).await;
    (status, tcp)
}

async fn connect_from(game: SocketAddr, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(game).await.unwrap()
}

/// Send `request`; read the status line (and, with `to_end`, everything
/// until the server closes).
async fn exchange(mut tcp: TcpStream, request: &str, to_end: bool) -> (u16, TcpStream, String) {
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut text = Vec::new();
    if to_end {
        tcp.read_to_end(&mut text).await.unwrap();
    } else {
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        text.extend_from_slice(&head);
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, tcp, text)
}

async fn guest(server: &TestServer, forwarded_for: &str) -> u16 {
    post_from(
        server,
        "127.0.0.1",
        Some(forwarded_for),
        "/api/guest",
        serde_json::json!({}),
    )
    .await
    .0
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.login_rate_per_min = RATE;
        c.max_connections_per_address = 2;
    })
    .await;

    // The account API: one client's allowance is its own.
    for _ in 0..RATE {
        assert_eq!(guest(&server, "203.0.113.1").await, 200);
    }
    let (status, body) = post_from(
        &server,
        "127.0.0.1",
        Some("203.0.113.1"),
        "/api/guest",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(guest(&server, "203.0.113.2").await, 200);
    // The client cannot slip past by writing another address before the
    // one the proxy appended; a port on the hop changes nothing either.
    assert_eq!(guest(&server, "198.51.100.50, 203.0.113.1").await, 429);
    assert_eq!(guest(&server, "203.0.113.1:40000").await, 429);

    // The socket cap: two sockets per forwarded client, however many the
    // proxy holds in all.
    let (a1, _s1) = upgrade_for(server.game, "203.0.113.5").await;
    let (a2, _s2) = upgrade_for(server.game, "203.0.113.5").await;
    let (a3, _s3) = upgrade_for(server.game, "203.0.113.5").await;
    let (b1, _s4) = upgrade_for(server.game, "203.0.113.6").await;
    assert_eq!((a1, a2, a3, b1), (101, 101, 429, 101));
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forge_its_address() {
    // 127.0.0.1 is trusted; 127.0.0.2 is not, and nothing is trusted on the
    // second server.
    let trusting = TestServer::start_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.login_rate_per_min = RATE;
    })
    .await;
    for i in 0..RATE {
        let forged = format!("203.0.113.{}", 10 + i);
        let (status, _) = post_from(
            &trusting,
            "127.0.0.2",
            Some(&forged),
            "/api/guest",
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = post_from(
        &trusting,
        "127.0.0.2",
        Some("203.0.113.99"),
        "/api/guest",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 429, "127.0.0.2 escaped its limit with a header");
    trusting.stop().await;

    let plain = TestServer::start_with(|c| c.login_rate_per_min = RATE).await;
    for i in 0..RATE {
        assert_eq!(guest(&plain, &format!("203.0.113.{}", 20 + i)).await, 200);
    }
    assert_eq!(guest(&plain, "203.0.113.99").await, 429);
    plain.stop().await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_account_across_addresses() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.login_rate_per_min = RATE;
    })
    .await;
    let account = serde_json::json!({ "username": "target", "password": "correct horse battery" });
    let (status, body) = post_from(
        &server,
        "127.0.0.1",
        Some("198.51.100.1"),
        "/api/register",
        account.clone(),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Guesses from ever new addresses: each address has its allowance, the
    // account has one too, and it runs out.
    let wrong = serde_json::json!({ "username": "target", "password": "wrong guess 1234" });
    let mut statuses = Vec::new();
    for i in 0..=RATE {
        let from = format!("203.0.113.{}", 100 + i);
        let (status, body) = post_from(
            &server,
            "127.0.0.1",
            Some(&from),
            "/api/login",
            wrong.clone(),
        )
        .await;
        statuses.push((
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let refused = statuses.pop().unwrap();
    assert!(
        statuses
            .iter()
            .all(|(s, e)| *s == 401 && e == "invalid_credentials"),
        "{statuses:?}"
    );
    assert_eq!(refused, (429, "rate_limited".to_owned()));
    // The same account under another case is the same account to the limit.
    let upper = serde_json::json!({ "username": "TARGET", "password": "wrong guess 1234" });
    let (status, _) = post_from(
        &server,
        "127.0.0.1",
        Some("203.0.113.200"),
        "/api/login",
        upper,
    )
    .await;
    assert_eq!(status, 429);

    // While it is held, so is its owner: the price of holding guessers.
    let (status, _) = post_from(
        &server,
        "127.0.0.1",
        Some("198.51.100.1"),
        "/api/login",
        account,
    )
    .await;
    assert_eq!(status, 429);

    // Another account is not held up by it.
    let other = serde_json::json!({ "username": "bystander", "password": "wrong guess 1234" });
    let (status, body) = post_from(
        &server,
        "127.0.0.1",
        Some("203.0.113.201"),
        "/api/login",
        other,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_credentials"))
    );
    server.stop().await;
}
