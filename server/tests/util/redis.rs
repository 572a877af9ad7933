//! A private Redis for one test: a `redis-server` child process on a free
//! loopback port, without persistence, that the test can stop and start again
//! on the same port to play an outage. Killed when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// How long `redis-server` may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` of this test's own.
pub struct RedisServer {
    /// The loopback port, kept across restarts.
    port: u16,
    /// Its working directory (it writes nothing there, having no persistence).
    dir: tempfile::TempDir,
    /// The process while it runs.
    child: Option<Child>,
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("meridian-redis-")
            .tempdir()
            .unwrap();
        let mut server = Self {
            port: super::free_addr().port(),
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// The URL the shard is given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server at once, as a crash would: connections break and every
    /// key is lost (there is no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the process (SIGSTOP) without closing anything: connections and
    /// commands are accepted by the kernel and never answered, as with a
    /// stalled server or a network that drops packets.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Let a frozen server go on (SIGCONT); it answers what it was sent.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the Redis server is running");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our own child,
        // not yet reaped, so it names no other process.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Start (again) on the same port, empty, and wait until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the Redis server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (is the redis-server package installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while !self.answers() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited during startup: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// A new connection, for looking at what the shard wrote.
    pub async fn connection(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test Redis")
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<bool>(&mut self.connection().await)
            .await
            .unwrap()
    }

    /// The key's time to live in milliseconds; Redis answers -2 for a missing
    /// key and -1 for one without expiry.
    pub async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async::<i64>(&mut self.connection().await)
            .await
            .unwrap()
    }

    /// The key's value.
    pub async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection().await)
            .await
            .unwrap()
    }

    /// Set a key (without expiry), to plant a value a test then looks for.
    pub async fn set(&self, key: &str, value: &str) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut self.connection().await)
            .await
            .unwrap();
    }

    /// Delete a key.
    pub async fn del(&self, key: &str) {
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut self.connection().await)
            .await
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        self.stop();
    }
}
