//! Any bytes as the JSON body of the account API and the admin API, sent to
//! a real shard (embedded store, in this process, on loopback): every answer
//! is a 2xx or a 4xx with a JSON error, never a 5xx, and the shard keeps
//! answering. The first byte picks the route.
#![no_main]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meridian_server::{Config, Server};

const OPS_TOKEN: &str = "fuzz-ops-token-0123456789";

/// Routes that take a JSON body: (port, path, authorised). `/admin/bots` is
/// left out: a valid body there makes thousands of accounts per input.
const ROUTES: &[(Port, &str, bool)] = &[
    (Port::Game, "/api/register", false),
    (Port::Game, "/api/login", false),
    (Port::Game, "/api/guest", false),
    (Port::Game, "/api/refresh", false),
    (Port::Ops, "/admin/areas", true),
    (Port::Ops, "/admin/flags", true),
    (Port::Ops, "/admin/kick", true),
    (Port::Ops, "/admin/broadcast", true),
    (Port::Ops, "/admin/scores/reset", true),
];

#[derive(Clone, Copy)]
enum Port {
    Game,
    Ops,
}

struct Shard {
    game: SocketAddr,
    ops: SocketAddr,
    /// Kept-alive connections, one per port.
    connections: Mutex<[Option<TcpStream>; 2]>,
}

/// One shard for the whole run, on its own runtime thread.
fn shard() -> &'static Shard {
    static SHARD: OnceLock<Shard> = OnceLock::new();
    SHARD.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let dir = tempfile::tempdir().unwrap().keep();
                let mut config = Config::for_tests(dir);
                config.ops_token = Some(OPS_TOKEN.into());
                // Bodies must reach the parsers, not the login rate limit.
                config.login_rate_per_min = u32::MAX / 2;
                let server = Server::bind(config).await.unwrap();
                tx.send((server.game_addr(), server.ops_addr())).unwrap();
                server.serve(std::future::pending()).await.unwrap();
            });
        });
        let (game, ops) = rx.recv().unwrap();
        Shard {
            game,
            ops,
            connections: Mutex::new([None, None]),
        }
    })
}

/// POST `body` to `path`; returns the status.
fn post(shard: &Shard, port: Port, path: &str, token: bool, body: &[u8]) -> u16 {
    let (addr, slot) = match port {
        Port::Game => (shard.game, 0),
        Port::Ops => (shard.ops, 1),
    };
    let mut connections = shard.connections.lock().unwrap();
    for _ in 0..2 {
        let tcp = connections[slot].get_or_insert_with(|| {
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // One request at a time: never wait to coalesce.
            tcp.set_nodelay(true).unwrap();
            tcp
        });
        let auth = if token {
            format!("Authorization: Bearer {OPS_TOKEN}\r\n")
        } else {
            String::new()
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let sent = tcp.write_all(&request);
        if let (Ok(()), Some(status)) = (sent, read_response(tcp)) {
            return status;
        }
        // The server closed the kept-alive connection: open a new one.
        connections[slot] = None;
    }
    panic!("the shard stopped answering {path}");
}

/// Read one response; its status, or `None` if the connection is gone.
fn read_response(tcp: &mut TcpStream) -> Option<u16> {
    let mut reader = BufReader::new(tcp);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(status)
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, body)) = input.split_first() else {
        return;
    };
    let (port, path, token) = ROUTES[usize::from(pick) % ROUTES.len()];
    let status = post(shard(), port, path, token, body);
    assert!(
        status < 500 || status == 503,
        "{path} answered {status} to {:?}",
        String::from_utf8_lossy(body)
    );
});
