//! The per-address connection cap under a connection storm: 5,000 upgrade
//! attempts from one address that already has its `MAX_CONNECTIONS_PER_ADDRESS`
//! sockets open are all refused (429 `too_many_connections`), while a player
//! from another address gets in at once; a slot that closes is free again.
//! And an upgrade request that drips its headers is cut off within 5 s.

mod util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meridian_protocol::Encoding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use util::{offset, Client, TestServer, CENTER};

const CAP: usize = 20;
const ATTEMPTS: usize = 5_000;
const AT_ONCE: usize = 100;

/// The status line's code of one upgrade attempt from this machine's
/// 127.0.0.1, without a token.
async fn attempt(game: SocketAddr) -> u16 {
    let mut tcp = TcpStream::connect(game).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {game}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: meridian.v1.json\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// A player connected from 127.0.0.2 (another address of the loopback).
async fn player_from_elsewhere(server: &TestServer) -> Client {
    let (user_id, token) = server.guest(None).await;
    server
        .place(user_id, "arena", offset(CENTER, 0.0, 30.0))
        .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    Client::connect_over(socket, server.game, Encoding::Json, &token, "arena")
        .await
        .expect("a player from another address is let in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_from_one_address_hits_the_cap_and_others_still_get_in() {
    let server = TestServer::start_with(|c| {
        c.max_connections_per_address = CAP;
        // The held players log in as guests from this one address.
        c.login_rate_per_min = 10_000;
    })
    .await;
    // The address's every slot taken by real players.
    let mut held = Vec::new();
    for i in 0..CAP {
        held.push(
            server
                .guest_player("arena", offset(CENTER, i as f64, 0.0), Encoding::Bincode)
                .await,
        );
    }

    // The storm: every attempt from the full address is refused, quickly,
    // and a player from elsewhere gets in while it rages.
    let game = server.game;
    let storm = tokio::spawn(async move {
        let started = Instant::now();
        let codes: Vec<u16> = futures_util::stream::iter(0..ATTEMPTS)
            .map(|_| attempt(game))
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        (codes, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut elsewhere = player_from_elsewhere(&server).await;
    let let_in = started.elapsed();
    let (codes, took) = storm.await.unwrap();
    println!("{ATTEMPTS} refused attempts in {took:?}; the other address got in after {let_in:?}");
    assert!(
        codes.iter().all(|&c| c == 429),
        "{:?}",
        codes.iter().find(|&&c| c != 429)
    );
    assert!(
        let_in < Duration::from_secs(5),
        "the other player waited {let_in:?}"
    );

    // The held players are still served, and so is the newcomer.
    for client in held.iter_mut().take(3) {
        let seq = client.move_to(offset(client.position, 1.0, 0.0)).await;
        client.acked(seq).await;
    }
    let seq = elsewhere
        .move_to(offset(elsewhere.position, 1.0, 0.0))
        .await;
    elsewhere.acked(seq).await;

    // A slot that closes is free again for the address.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if attempt(game).await == 101 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the refusals were counted.
    let refused = server
        .metric("meridian_connections_refused_total{reason=\"per_address\"}")
        .await;
    assert!(refused >= ATTEMPTS as f64, "{refused} refusals counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_that_drips_its_headers_is_closed_within_5_s() {
    let server = TestServer::start().await;
    let mut player = server
        .guest_player("arena", offset(CENTER, 0.0, 10.0), Encoding::Bincode)
        .await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.game
    );
    // Ten drippers on the game port and one on the ops port, a byte every
    // 300 ms: none finishes its headers in time.
    let mut drips = Vec::new();
    for port in std::iter::repeat_n(server.game, 10).chain([server.ops]) {
        let request = request.clone();
        drips.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut tcp = TcpStream::connect(port).await.unwrap();
            for byte in request.bytes() {
                if tcp.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // Closed by the server: reading ends (EOF or reset).
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
            started.elapsed()
        }));
    }
    // Meanwhile the player plays on.
    for _ in 0..10 {
        let seq = player.move_to(offset(player.position, 0.5, 0.0)).await;
        player.acked(seq).await;
        player.position = offset(player.position, 0.5, 0.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for drip in drips {
        let took = drip.await.unwrap();
        assert!(
            took < Duration::from_millis(6_500),
            "a dripping client was held for {took:?}"
        );
        assert!(
            took >= Duration::from_secs(4),
            "cut off after only {took:?}"
        );
    }
}
