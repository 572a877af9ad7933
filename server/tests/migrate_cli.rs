//! `meridian migrate run|revert|info` against a real PostgreSQL, as an
//! operator would run it before a deployment.

mod util;

use std::process::{Command, Output};

use util::pg::TestDatabase;

fn meridian_migrate(db: &TestDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the meridian binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn count(text: &str, state: &str) -> usize {
    text.lines().filter(|l| l.ends_with(state)).count()
}

#[tokio::test]
async fn migrate_lists_applies_reverts_and_refuses_an_edited_migration() {
    let db = TestDatabase::create().await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".up.sql")
        })
        .count();
    assert!(files >= 11, "the migrations folder has the schema");

    let info = stdout(&meridian_migrate(&db, &["info"]));
    assert!(info.starts_with("postgres migrations:"), "{info}");
    assert_eq!(count(&info, "pending"), files, "{info}");
    assert!(
        info.contains("postgis") && info.contains("player positions"),
        "{info}"
    );

    stdout(&meridian_migrate(&db, &["run"]));
    let info = stdout(&meridian_migrate(&db, &["info"]));
    assert_eq!(count(&info, "applied"), files, "{info}");

    // An applied migration whose file changed afterwards (what sqlx sees as a
    // checksum mismatch) is refused by name, by `run` and by `serve` alike.
    let pool = db.pool().await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = (SELECT min(version) FROM _sqlx_migrations)")
        .execute(&pool)
        .await
        .unwrap();
    let refused = meridian_migrate(&db, &["run"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("edited"), "{message}");
    let info = stdout(&meridian_migrate(&db, &["info"]));
    assert_eq!(count(&info, "restore the original file"), 1, "{info}");
    let serve = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "serve",
            "--game-addr",
            "127.0.0.1:0",
            "--ops-addr",
            "127.0.0.1:0",
        ])
        .env("DATABASE_URL", &db.url)
        .env("JWT_SECRET", "migrate-test-secret-0123456789abcdef")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!serve.status.success(), "serve refuses an edited schema");
    assert!(String::from_utf8_lossy(&serve.stderr).contains("edited"));
    sqlx::query("DELETE FROM _sqlx_migrations WHERE checksum = '\\x00'::bytea")
        .execute(&pool)
        .await
        .unwrap();

    // Revert one, then everything; then all up again.
    stdout(&meridian_migrate(&db, &["run"]));
    let reverted = stdout(&meridian_migrate(&db, &["revert"]));
    assert_eq!(reverted.lines().count(), 1, "{reverted}");
    let info = stdout(&meridian_migrate(&db, &["info"]));
    assert_eq!(count(&info, "pending"), 1, "{info}");
    let reverted = stdout(&meridian_migrate(&db, &["revert", "--target", "0"]));
    assert_eq!(reverted.lines().count(), files - 1, "{reverted}");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' \
         AND tablename NOT IN ('_sqlx_migrations', 'spatial_ref_sys')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    stdout(&meridian_migrate(&db, &["run"]));
    let info = stdout(&meridian_migrate(&db, &["info"]));
    assert_eq!(count(&info, "applied"), files, "{info}");
}

#[test]
fn serve_refuses_a_database_url_without_a_jwt_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "serve",
            "--game-addr",
            "127.0.0.1:0",
            "--ops-addr",
            "127.0.0.1:0",
        ])
        .env("DATABASE_URL", "postgres://meridian@127.0.0.1:1/meridian")
        .env_remove("JWT_SECRET")
        .env_remove("MERIDIAN_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("JWT_SECRET") && message.contains("DATABASE_URL"),
        "{message}"
    );
}
