//! Backups: a dump taken by `scripts/backup` brings a dropped database back
//! through `scripts/restore` exactly, row for row and position for position;
//! old dumps are deleted by age and nothing else is; and missing settings, an
//! unreachable server, a failing dump and files that are not dumps end with a
//! clear message, a non-zero exit and no half-written file.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
use util::pg::{admin_url, pg_bin, with_database, TestDatabase};
use uuid::Uuid;

/// The PostgreSQL migrations, embedded as the server embeds them.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Players seeded by `seed`; each has a position in both worlds.
const PLAYERS: usize = 150;

/// `scripts/<name>`, with none of the backup settings of the environment the
/// tests run in, so that each test passes exactly the ones it means.
fn script(name: &str) -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let mut command = Command::new(path);
    for setting in ["DATABASE_URL", "BACKUP_DIR", "BACKUP_KEEP_DAYS", "PG_BIN"] {
        command.env_remove(setting);
    }
    command
}

/// Run a script to the end; its output.
fn run(command: &mut Command) -> Output {
    command.output().expect("the script starts")
}

/// Assert that a script succeeded; its stdout.
#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the script failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Assert that a script failed with a message containing `message`.
#[track_caller]
fn failed_saying(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the script succeeded, expected it to fail with {message:?}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "expected {message:?} in the error, got: {stderr}"
    );
}

/// Back up the database of `url` into `dir`; the new dump's path, which the
/// script prints.
#[track_caller]
fn backup(url: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let output = run(script("backup")
        .arg("--url")
        .arg(url)
        .arg("--dir")
        .arg(dir)
        .args(extra));
    let dump = PathBuf::from(succeeded(&output).trim());
    assert_eq!(dump.parent(), Some(dir), "the dump is written into --dir");
    assert!(dump.is_file(), "{} exists", dump.display());
    dump
}

/// Whether the test server has a database of this name.
async fn database_exists(name: &str) -> bool {
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    admin.close().await.ok();
    exists
}

/// A fresh database with the PostgreSQL migrations applied.
async fn migrated_database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    MIGRATOR.run(&pool).await.expect("the migrations apply");
    (db, pool)
}

/// Fill a migrated database with every kind of row the game keeps: accounts
/// with roles, sessions and profiles; two worlds with areas (MultiPolygons),
/// flags and captures; and a position for every player in both worlds, at
/// coordinates with all their digits, so that any rounding shows.
async fn seed(pool: &PgPool) {
    let users: Vec<Uuid> = (0..PLAYERS).map(|_| Uuid::now_v7()).collect();
    let names: Vec<String> = (0..PLAYERS).map(|i| format!("player{i}")).collect();
    sqlx::query(
        "INSERT INTO users (id, username, device_hash)
         SELECT id, name, md5(name) FROM UNNEST($1::uuid[], $2::text[]) AS u (id, name)",
    )
    .bind(&users)
    .bind(&names)
    .execute(pool)
    .await
    .unwrap();
    let statements = [
        "UPDATE users SET password_hash = 'argon2-hash', device_hash = NULL
         WHERE username IN ('player0', 'player1')",
        "INSERT INTO user_roles (user_id, role_id) SELECT id, 1 FROM users",
        "INSERT INTO user_roles (user_id, role_id) SELECT id, 2 FROM users WHERE username = 'player0'",
        "INSERT INTO sessions (id, user_id, expires_at)
         SELECT gen_random_uuid(), id, now() + interval '1 day' FROM users",
        "INSERT INTO player_profiles (user_id, display_name, epoch)
         SELECT id, 'Player ' || username, 3 FROM users",
    ];
    for statement in statements {
        sqlx::query(statement).execute(pool).await.unwrap();
    }

    let worlds = [Uuid::now_v7(), Uuid::now_v7()];
    for (world, name) in worlds.iter().zip(["amsterdam", "arena"]) {
        sqlx::query(
            "INSERT INTO worlds (id, name, min_lon, min_lat, max_lon, max_lat, center, movement_mode)
             VALUES ($1, $2, 4.8, 52.3, 5.0, 52.4, ST_SetSRID(ST_MakePoint(4.9, 52.37), 4326), 'input')",
        )
        .bind(world)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO areas (id, world_id, name, kind, geom, properties) VALUES
         ($1, $3, 'canal', 'blocked', ST_GeomFromText(
             'MULTIPOLYGON(((4.890 52.370, 4.895 52.370, 4.895 52.372, 4.890 52.372, 4.890 52.370)),
                           ((4.900 52.374, 4.903 52.374, 4.903 52.376, 4.900 52.374)))', 4326), '{}'),
         ($2, $3, 'square', 'speed_limit', ST_GeomFromText(
             'MULTIPOLYGON(((4.8925 52.3728, 4.8935 52.3728, 4.8935 52.3735, 4.8925 52.3728)))', 4326),
          '{\"max_speed_mps\": 2.5}')",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(worlds[0])
    .execute(pool)
    .await
    .unwrap();
    let flags = [Uuid::now_v7(), Uuid::now_v7()];
    for (i, flag) in flags.iter().enumerate() {
        sqlx::query(
            "INSERT INTO world_objects (id, world_id, kind, name, geom, properties, version)
             VALUES ($1, $2, 'flag', $3, ST_SetSRID(ST_MakePoint($4, $5), 4326), '{\"team\": \"red\"}', 2)",
        )
        .bind(flag)
        .bind(worlds[0])
        .bind(format!("flag {i}"))
        .bind(4.891_234_567_890_123 + i as f64 * 0.001)
        .bind(52.371_234_567_890_12)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO flag_captures (id, world_id, object_id, user_id, team)
         SELECT gen_random_uuid(), $1, $2, id, 'red' FROM users WHERE username IN ('player2', 'player3')",
    )
    .bind(worlds[0])
    .bind(flags[0])
    .execute(pool)
    .await
    .unwrap();

    let mut position_users = Vec::new();
    let mut position_worlds = Vec::new();
    let (mut lons, mut lats, mut headings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut epochs, mut seqs) = (Vec::new(), Vec::new());
    for (i, user) in users.iter().enumerate() {
        for (w, world) in worlds.iter().enumerate() {
            // Irrational steps give coordinates that use every bit of an f64.
            let t = (i * 2 + w) as f64;
            position_users.push(*user);
            position_worlds.push(*world);
            lons.push(4.9 + (t * std::f64::consts::FRAC_1_SQRT_2).sin() * 0.05);
            lats.push(52.37 + (t * std::f64::consts::E).cos() * 0.03);
            headings.push((t * 7.3) as f32 % 360.0);
            epochs.push(1 + (i % 5) as i64);
            seqs.push((i * 31 + w) as i64);
        }
    }
    sqlx::query(
        "INSERT INTO player_positions (user_id, world_id, geom, heading, epoch, seq)
         SELECT u, w, ST_SetSRID(ST_MakePoint(lon, lat), 4326), h, e, s
         FROM UNNEST($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::float4[],
                     $6::int8[], $7::int8[]) AS p (u, w, lon, lat, h, e, s)",
    )
    .bind(&position_users)
    .bind(&position_worlds)
    .bind(&lons)
    .bind(&lats)
    .bind(&headings)
    .bind(&epochs)
    .bind(&seqs)
    .execute(pool)
    .await
    .unwrap();
}

/// A position as the game reads it back.
type Position = (Uuid, Uuid, f64, f64, f32, i64, i64);

/// What a restore must bring back unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Every table of the `public` schema (partitions, `_sqlx_migrations` and
    /// PostGIS's `spatial_ref_sys` included), with its row count and a digest
    /// of its rows' text, which covers every column.
    tables: Vec<(String, i64, String)>,
    /// Every position, with its coordinates as PostGIS returns them.
    positions: Vec<Position>,
}

impl Snapshot {
    async fn take(pool: &PgPool) -> Self {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut tables = Vec::new();
        for name in names {
            let (count, digest): (i64, String) = sqlx::query_as(&format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')
                 FROM \"{name}\" AS t"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            tables.push((name, count, digest));
        }
        let positions = sqlx::query_as(
            "SELECT user_id, world_id, ST_X(geom), ST_Y(geom), heading, epoch, seq
             FROM player_positions ORDER BY user_id, world_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        Self { tables, positions }
    }

    /// The row count of a table.
    #[track_caller]
    fn count(&self, table: &str) -> i64 {
        self.tables
            .iter()
            .find(|(name, ..)| name == table)
            .unwrap_or_else(|| panic!("no table {table} in {:?}", self.tables))
            .1
    }
}

#[tokio::test]
async fn a_dropped_database_is_restored_exactly_from_its_backup() {
    let (db, pool) = migrated_database().await;
    seed(&pool).await;
    let before = Snapshot::take(&pool).await;
    pool.close().await;
    // The seed reached every table, so that the comparison below has
    // something to lose.
    assert_eq!(before.positions.len(), 2 * PLAYERS);
    for table in [
        "users",
        "user_roles",
        "sessions",
        "player_profiles",
        "worlds",
        "areas",
        "world_objects",
        "flag_captures",
        "flag_captures_default",
        "player_positions",
    ] {
        assert!(before.count(table) > 0, "{table} was seeded");
    }

    let dir = tempfile::tempdir().unwrap();
    let dump = backup(&db.url, dir.path(), &[]);
    let file_name = dump.file_name().unwrap().to_str().unwrap();
    let stamp = file_name
        .strip_prefix(&format!("meridian-{}-", db.name))
        .and_then(|rest| rest.strip_suffix(".dump"))
        .unwrap_or_else(|| panic!("unexpected dump name {file_name}"));
    assert!(
        stamp.len() == 16 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z'),
        "the dump is stamped with the UTC time: {file_name}"
    );

    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    assert!(!database_exists(&db.name).await);

    let output = run(script("restore").arg("--url").arg(&db.url).arg(&dump));
    succeeded(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("created database"),
        "restore says it created the missing database"
    );

    let pool = db.pool().await;
    let after = Snapshot::take(&pool).await;
    assert_eq!(after.tables, before.tables);
    assert_eq!(after.positions, before.positions);

    // The restored database is fully migrated: every migration is recorded
    // with its checksum, and running them again changes nothing.
    let applied: Vec<(i64, bool, Vec<u8>)> =
        sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i64, bool, Vec<u8>)> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, true, m.checksum.to_vec()))
        .collect();
    assert_eq!(applied, expected);
    MIGRATOR
        .run(&pool)
        .await
        .expect("the migrations accept the restored database");
    assert_eq!(Snapshot::take(&pool).await, after);
    pool.close().await;
}

#[tokio::test]
async fn restore_refuses_a_database_that_already_has_tables() {
    let (db, pool) = migrated_database().await;
    seed(&pool).await;
    let before = Snapshot::take(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = backup(&db.url, dir.path(), &[]);

    let output = run(script("restore").arg("--url").arg(&db.url).arg(&dump));
    failed_saying(&output, "already has");
    assert_eq!(Snapshot::take(&pool).await, before);
    pool.close().await;
}

/// Create `path` with a modification time `days` days ago.
fn write_aged(path: &Path, days: u64) {
    std::fs::write(path, b"an older file").unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(days * 24 * 60 * 60))
        .unwrap();
}

#[tokio::test]
async fn backup_deletes_this_databases_dumps_older_than_the_retention_and_nothing_else() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: String| dir.path().join(name);
    let old = path(format!("meridian-{}-20261101T000000Z.dump", db.name));
    let old_partial = path(format!(
        ".meridian-{}-20261101T000000Z.dump.partial",
        db.name
    ));
    let recent = path(format!("meridian-{}-20261119T000000Z.dump", db.name));
    let other_database = path("meridian-other-20261101T000000Z.dump".into());
    let unstamped = path(format!("meridian-{}-old.dump", db.name));
    let notes = path("notes.txt".into());
    for file in [&old, &old_partial, &other_database, &unstamped, &notes] {
        write_aged(file, 10);
    }
    write_aged(&recent, 2);

    let dump = backup(&db.url, dir.path(), &["--keep-days", "7"]);
    assert!(!old.exists(), "a 10-day-old dump is deleted");
    assert!(
        !old_partial.exists(),
        "a killed backup's 10-day-old partial file is deleted"
    );
    for kept in [&recent, &other_database, &unstamped, &notes, &dump] {
        assert!(kept.exists(), "{} is kept", kept.display());
    }

    // BACKUP_KEEP_DAYS=0 keeps every dump.
    let dir = tempfile::tempdir().unwrap();
    let ancient = dir
        .path()
        .join(format!("meridian-{}-20251101T000000Z.dump", db.name));
    write_aged(&ancient, 400);
    let output = run(script("backup")
        .env("DATABASE_URL", &db.url)
        .env("BACKUP_DIR", dir.path())
        .env("BACKUP_KEEP_DAYS", "0"));
    succeeded(&output);
    assert!(ancient.exists(), "with 0 days nothing is deleted");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// The entries of a directory, or none if it does not exist.
fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn backup_refuses_missing_settings_and_an_unreachable_database_clearly() {
    let help = run(script("backup").arg("--help"));
    assert!(succeeded(&help).contains("--keep-days"));

    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");

    let output = run(script("backup").arg("--dir").arg(&backups));
    failed_saying(&output, "set DATABASE_URL or pass --url");

    for days in ["a week", "-1", "7.5", ""] {
        let output = run(script("backup")
            .args(["--url", &db.url, "--keep-days", days])
            .arg("--dir")
            .arg(&backups));
        failed_saying(&output, "whole number of days");
    }

    let nobody = format!("postgres://meridian@{}/postgres", util::free_addr());
    let output = run(script("backup")
        .args(["--url", &nobody])
        .arg("--dir")
        .arg(&backups));
    failed_saying(&output, "cannot connect to the database");

    let missing = with_database(&admin_url(), "meridian_no_such_database");
    let output = run(script("backup")
        .args(["--url", &missing])
        .arg("--dir")
        .arg(&backups));
    failed_saying(&output, "does not exist");

    assert_eq!(
        entries(&backups),
        Vec::<PathBuf>::new(),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_failed_dump_leaves_no_file() {
    let db = TestDatabase::create().await;
    // A pg_dump that writes part of its file and then fails, as one does when
    // the disk fills or the server goes away mid-dump.
    let bin = tempfile::tempdir().unwrap();
    let pg_dump = bin.path().join("pg_dump");
    std::fs::write(
        &pg_dump,
        "#!/bin/sh\n\
         for arg; do case $arg in --file=*) printf 'PGDMP half' > \"${arg#--file=}\";; esac; done\n\
         echo 'pg_dump: error: the disk is full' >&2\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&pg_dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(pg_bin("psql"), bin.path().join("psql")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let output = run(script("backup")
        .env("PG_BIN", bin.path())
        .args(["--url", &db.url])
        .arg("--dir")
        .arg(dir.path()));
    failed_saying(&output, "pg_dump failed; no dump was written");
    assert!(output.stdout.is_empty(), "no dump path is printed");
    assert_eq!(entries(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn restore_refuses_a_missing_file_or_one_that_is_not_a_dump() {
    let name = format!("meridian_test_{}", Uuid::now_v7().simple());
    let url = with_database(&admin_url(), &name);
    let dir = tempfile::tempdir().unwrap();

    let output = run(script("restore")
        .args(["--url", &url])
        .arg(dir.path().join("missing.dump")));
    failed_saying(&output, "no such dump file");

    let garbage = dir.path().join("garbage.dump");
    std::fs::write(&garbage, "this is not a dump\n".repeat(100)).unwrap();
    let output = run(script("restore").args(["--url", &url]).arg(&garbage));
    failed_saying(&output, "is not a custom-format dump");

    let output = run(script("restore").arg(&garbage));
    failed_saying(&output, "set DATABASE_URL or pass --url");

    assert!(
        !database_exists(&name).await,
        "a refused restore creates no database"
    );
}

#[test]
fn the_migrator_holds_the_postgres_migrations_and_not_the_sqlite_ones() {
    let versions = |dir: &str| -> Vec<i64> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut versions: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let version = name.strip_suffix(".up.sql")?.split('_').next()?;
                Some(version.parse().unwrap())
            })
            .collect();
        versions.sort_unstable();
        versions
    };
    let embedded: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    assert_eq!(embedded, versions("../migrations"));
    let sqlite = versions("../migrations/sqlite");
    assert!(!sqlite.is_empty());
    assert!(embedded.iter().all(|v| !sqlite.contains(v)));
}
