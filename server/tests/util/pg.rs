//! PostgreSQL for the integration tests: a fresh database per test in the
//! server that `scripts/test` starts (`TEST_DATABASE_URL`, a superuser), and a
//! private cluster that a test can stop and start to play an outage.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Where Debian puts the PostgreSQL 15 server programs.
pub fn pg_bin(program: &str) -> PathBuf {
    let dir = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(program)
}

/// The superuser URL of the test server. Panics with the fix when unset: these
/// tests need a real PostgreSQL, which `scripts/test` starts.
#[must_use]
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway \
         PostgreSQL with PostGIS and sets it",
    )
}

/// Replace the database name (the URL's path) of a PostgreSQL URL.
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| {
        i + 3 + base[i + 3..].find('/').unwrap_or(base.len() - i - 3)
    });
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// An empty database of its own in the test server, for one test.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it as the superuser.
    pub url: String,
}

impl TestDatabase {
    /// Create an empty database with a unique name.
    pub async fn create() -> Self {
        Self::create_in(&admin_url()).await
    }

    /// Create an empty database in the server of `admin_url`.
    pub async fn create_in(admin_url: &str) -> Self {
        let name = format!("meridian_test_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        admin.close().await.ok();
        Self {
            url: with_database(admin_url, &name),
            name,
        }
    }

    /// A small pool on it, for checking what the server wrote.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

/// A PostgreSQL cluster of one test's own, in a temporary directory on a free
/// port, so that the test can stop and start it. Stopped when dropped.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    /// Set when running as root: initdb and postgres refuse root, so they run
    /// as the `postgres` user.
    as_postgres: bool,
}

impl PgCluster {
    /// Create the cluster and start it.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("meridian-pg-")
            .tempdir()
            .unwrap();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let port = super::free_addr().port();
        let cluster = Self {
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data_dir();
        let log = cluster.dir.path().join("initdb.log");
        let output = cluster
            .command(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "meridian", "--auth=trust", "-E", "UTF8"])
            .output()
            .expect("initdb runs (is postgresql-15 installed?)");
        std::fs::write(&log, &output.stdout).ok();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.resume();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: PathBuf) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        self.command(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("pg_ctl runs")
    }

    /// Start (again) on the same port and wait until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let output = self.pg_ctl(&[
            "-w",
            "-s",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "start",
        ]);
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop at once, as a crash or a pulled cable would: open connections break.
    pub fn halt(&self) {
        let output = self.pg_ctl(&["-w", "-s", "-m", "immediate", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The superuser URL of database `postgres`.
    #[must_use]
    pub fn admin_url(&self) -> String {
        format!("postgres://meridian@127.0.0.1:{}/postgres", self.port)
    }

    /// Wait until the server answers, up to `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while PgConnection::connect(&self.admin_url()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test PostgreSQL did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-s", "-m", "immediate", "stop"]);
        }
    }
}
