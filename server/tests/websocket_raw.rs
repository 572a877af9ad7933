//! RFC 6455 violations sent over a raw TCP socket (no WebSocket library on
//! the client side, so the frames can be wrong on purpose): unmasked client
//! frames, reserved bits, fragmented and oversized control frames, invalid
//! UTF-8, bad close codes, a frame and a fragmented message over the limit.
//! Each gets a close frame with the right code, the shard stays up, and its
//! connection count goes back to zero.

mod util;

use std::time::Duration;

use meridian_protocol::limits::MAX_FRAME_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::{TestServer, CENTER};

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as a client would write it: `mask` `None` leaves it unmasked
/// (which a client must never do).
fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= 0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A well-formed masked frame.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some(MASK), payload)
}

/// A raw, upgraded connection of a logged-in player.
struct Raw {
    tcp: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    async fn open(server: &TestServer) -> Self {
        let (user_id, token) = server.guest(None).await;
        server.place(user_id, "arena", CENTER).await;
        let mut tcp = TcpStream::connect(server.game).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: meridian.v1.json\r\nAuthorization: Bearer {token}\r\n\r\n",
            server.game
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Self {
            tcp,
            buffer: Vec::new(),
        };
        let head = raw.read_until_blank_line().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // The Welcome arrives: the player is in.
        let (opcode, payload) = raw.next_frame().await.expect("a Welcome");
        assert_eq!(opcode, OPCODE_TEXT);
        assert!(payload.starts_with(b"{\"Welcome\""), "{payload:?}");
        raw
    }

    async fn read_until_blank_line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            self.fill().await.expect("the upgrade answer");
        }
    }

    /// Read more bytes; `None` at EOF.
    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
            .await
            .expect("the server answers within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Some(())
    }

    /// The next frame from the server (never masked): opcode and payload;
    /// `None` at EOF.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload, used)) = parse(&self.buffer) {
                self.buffer.drain(..used);
                return Some((opcode, payload));
            }
            self.fill().await?;
        }
    }

    /// Send `bytes`, then read until the server's close frame; returns its code.
    async fn violate(&mut self, bytes: &[u8]) -> Option<u16> {
        // The server may close before it has read all of a large frame.
        let _ = self.tcp.write_all(bytes).await;
        while let Some((opcode, payload)) = self.next_frame().await {
            if opcode == OPCODE_CLOSE {
                return payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]]));
            }
        }
        None
    }
}

/// A whole frame at the start of `bytes`: (opcode, payload, bytes used).
fn parse(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, start) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            4,
        ),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(raw) as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(start..start + len)?.to_vec();
    Some((b0 & 0x0f, payload, start + len))
}

/// The shard's open connections, from `/metrics`.
async fn connections(server: &TestServer) -> f64 {
    server.metric("meridian_connections").await
}

async fn connections_drop_to_zero(server: &TestServer, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = connections(server).await;
        if open == 0.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {open} connections still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_closed_with_the_rfc_6455_code() {
    let server = TestServer::start().await;
    let big = vec![b'x'; MAX_FRAME_BYTES + 1];
    let half = vec![b'x'; MAX_FRAME_BYTES / 2 + 1];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "an unmasked client frame",
            frame(
                true,
                0,
                OPCODE_TEXT,
                None,
                br#"{"Ping":{"client_time_ms":1}}"#,
            ),
            1002,
        ),
        (
            "reserved bits without an extension",
            frame(
                true,
                0b100,
                OPCODE_TEXT,
                Some(MASK),
                br#"{"Ping":{"client_time_ms":1}}"#,
            ),
            1002,
        ),
        (
            "a fragmented control frame",
            masked(false, OPCODE_PING, b"ping"),
            1002,
        ),
        (
            "a control frame over 125 bytes",
            masked(true, OPCODE_PING, &[b'p'; 126]),
            1002,
        ),
        ("an unknown opcode", masked(true, 0x3, b"?"), 1002),
        (
            "a continuation with nothing to continue",
            masked(true, OPCODE_CONTINUATION, b"x"),
            1002,
        ),
        (
            "invalid UTF-8 in a text frame",
            masked(true, OPCODE_TEXT, &[b'{', 0xff, 0xfe, b'}']),
            1007,
        ),
        (
            "a close frame with a reserved code",
            masked(true, OPCODE_CLOSE, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "a close frame with a code below 1000",
            masked(true, OPCODE_CLOSE, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "a frame over the limit",
            masked(true, OPCODE_BINARY, &big),
            1009,
        ),
        (
            "a fragmented message over the limit",
            [
                masked(false, OPCODE_TEXT, &half),
                masked(true, OPCODE_CONTINUATION, &half),
            ]
            .concat(),
            1009,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut raw = Raw::open(&server).await;
        assert_eq!(
            connections(&server).await,
            1.0,
            "{what}: the player is connected"
        );
        let code = raw.violate(&bytes).await;
        assert_eq!(code, Some(want), "{what}: closed with {code:?}, not {want}");
        drop(raw);
        connections_drop_to_zero(&server, what).await;
    }
    // The shard is unharmed: a player still gets in and is welcomed.
    let raw = Raw::open(&server).await;
    drop(raw);
    connections_drop_to_zero(&server, "a well-behaved player").await;
}
