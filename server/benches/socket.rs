//! Benchmarks of the game socket's two halves (`net::socket`) against
//! tokio-tungstenite's `WebSocketStream`, which axum's `WebSocket` wraps,
//! over the same kind of loopback TCP connection and with the same limits.
//!
//! * `socket_out/{writer,tungstenite}`: 1,000 binary frames of 600 bytes
//!   (an `Update` with a few dozen moved neighbours), each sent and flushed
//!   (one write each, as the fan-out's one frame per client and tick) while
//!   the peer reads and discards them.
//! * `socket_in/{frames,tungstenite}`: 1,000 masked 40-byte binary frames (a
//!   `Move` each) written by the peer in one go and read one by one.
//!
//! The kernel's loopback work is the same in both and is most of each figure;
//! the difference is what the user-space layers cost.

use axum::extract::ws::Message;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use meridian_server::net::socket::{self, Frames, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as TsMessage;
use tokio_tungstenite::WebSocketStream;

const FRAMES: usize = 1_000;
const UPDATE_BYTES: usize = 600;
const MOVE_BYTES: usize = 40;

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(1024)
}

/// A connected pair on loopback: (server side, client side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let server = accepted.unwrap().0;
    server.set_nodelay(true).unwrap();
    (server, client.unwrap())
}

/// A client that reads and discards everything until the socket closes.
fn drain(mut client: TcpStream) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
    });
}

/// `FRAMES` masked binary frames of `MOVE_BYTES`, as a client sends them.
fn masked_moves() -> Vec<u8> {
    let mut out = Vec::new();
    let payload = [7u8; MOVE_BYTES];
    for i in 0..FRAMES {
        let mask = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes();
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            mask: Some(mask),
            ..FrameHeader::default()
        };
        header.format(MOVE_BYTES as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(j, b)| b ^ mask[j % 4]));
    }
    out
}

fn socket_out(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let update = Bytes::from(vec![3u8; UPDATE_BYTES]);
    let mut group = c.benchmark_group("socket_out");
    group.throughput(Throughput::Elements(FRAMES as u64));

    let mut writer: Writer = rt.block_on(async {
        let (server, client) = pair().await;
        drain(client);
        socket::split(server, &[], config()).0
    });
    group.bench_function("writer", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..FRAMES {
                    writer.send(Message::Binary(update.clone())).await.unwrap();
                }
            });
        });
    });

    let mut stream = rt.block_on(async {
        let (server, client) = pair().await;
        drain(client);
        WebSocketStream::from_raw_socket(server, Role::Server, Some(config())).await
    });
    group.bench_function("tungstenite", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..FRAMES {
                    stream
                        .send(TsMessage::Binary(update.clone()))
                        .await
                        .unwrap();
                }
            });
        });
    });
    group.finish();
}

fn socket_in(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let moves = Bytes::from(masked_moves());
    let mut group = c.benchmark_group("socket_in");
    group.throughput(Throughput::Elements(FRAMES as u64));

    let (mut frames, mut client): (Frames, TcpStream) = rt.block_on(async {
        let (server, client) = pair().await;
        (socket::split(server, &[], config()).1, client)
    });
    group.bench_function("frames", |b| {
        b.iter(|| {
            rt.block_on(async {
                let write = client.write_all(&moves);
                let read = async {
                    for _ in 0..FRAMES {
                        let frame = frames.next().await.unwrap().unwrap();
                        assert!(matches!(frame, Message::Binary(ref b) if b.len() == MOVE_BYTES));
                    }
                };
                let (written, ()) = tokio::join!(write, read);
                written.unwrap();
            });
        });
    });

    let (mut stream, mut client) = rt.block_on(async {
        let (server, client) = pair().await;
        let stream = WebSocketStream::from_raw_socket(server, Role::Server, Some(config())).await;
        (stream, client)
    });
    group.bench_function("tungstenite", |b| {
        b.iter(|| {
            rt.block_on(async {
                let write = client.write_all(&moves);
                let read = async {
                    for _ in 0..FRAMES {
                        let frame = stream.next().await.unwrap().unwrap();
                        assert!(matches!(frame, TsMessage::Binary(ref b) if b.len() == MOVE_BYTES));
                    }
                };
                let (written, ()) = tokio::join!(write, read);
                written.unwrap();
            });
        });
    });
    group.finish();
}

criterion_group!(benches, socket_out, socket_in);
criterion_main!(benches);
