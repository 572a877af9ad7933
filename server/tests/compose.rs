//! `docker-compose.yml` and the `Dockerfile`, checked without Docker (which
//! cannot run in CI): the services a cluster needs, their health checks and
//! start order, distinct ports and shard ids, and that every setting passed
//! to a shard is one `meridian serve` knows.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn compose() -> Mapping {
    let text = std::fs::read_to_string(format!("{ROOT}/docker-compose.yml")).unwrap();
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML");
    // `<<: *shard` merges, as Compose does.
    value.apply_merge().expect("merge keys resolve");
    value
        .get("services")
        .and_then(Value::as_mapping)
        .expect("a services map")
        .clone()
}

fn service<'a>(services: &'a Mapping, name: &str) -> &'a Value {
    services
        .get(name)
        .unwrap_or_else(|| panic!("service {name} is missing"))
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = at
            .get(*key)
            .unwrap_or_else(|| panic!("{path:?}: {key} is missing"));
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not text"))
}

fn healthcheck(value: &Value, name: &str) -> String {
    let test = value
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .unwrap_or_else(|| panic!("{name} has no healthcheck"));
    match test {
        Value::String(s) => s.clone(),
        Value::Sequence(parts) => parts
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(" "),
        other => panic!("{name}: unexpected healthcheck {other:?}"),
    }
}

fn depends_on(value: &Value, on: &str) -> String {
    text(value, &["depends_on", on, "condition"]).to_owned()
}

/// The environment variables `meridian serve` reads, from its own help.
fn serve_env_vars() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect()
}

const SHARDS: [&str; 2] = ["shard-a", "shard-b"];

#[test]
fn the_services_of_a_cluster_are_there_with_health_checks() {
    let services = compose();
    let postgis = service(&services, "postgis");
    assert!(text(postgis, &["image"]).starts_with("postgis/postgis:"));
    assert!(healthcheck(postgis, "postgis").contains("pg_isready"));
    assert!(postgis.get("volumes").is_some(), "postgis keeps its data");
    let redis = service(&services, "redis");
    assert!(text(redis, &["image"]).starts_with("redis:"));
    assert!(healthcheck(redis, "redis").contains("redis-cli ping"));
    assert!(redis.get("volumes").is_some(), "redis keeps its data");

    let migrate = service(&services, "migrate");
    assert_eq!(depends_on(migrate, "postgis"), "service_healthy");
    let command: Vec<&str> = migrate["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["migrate", "run"]);
    assert!(text(migrate, &["environment", "DATABASE_URL"]).contains("@postgis:5432/"));
}

#[test]
fn two_shards_start_after_the_migration_with_their_own_ids_and_ports() {
    let services = compose();
    let known = serve_env_vars();
    let mut ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for name in SHARDS {
        let shard = service(&services, name);
        assert_eq!(
            depends_on(shard, "migrate"),
            "service_completed_successfully"
        );
        assert_eq!(depends_on(shard, "redis"), "service_healthy");
        assert!(healthcheck(shard, name).contains("/readyz"));
        let environment = shard["environment"].as_mapping().unwrap();
        for key in environment.keys() {
            let key = key.as_str().unwrap();
            assert!(
                known.contains(key),
                "{name} sets {key}, which meridian serve does not read (it reads {known:?})"
            );
        }
        assert!(text(shard, &["environment", "DATABASE_URL"]).contains("@postgis:5432/"));
        assert_eq!(
            text(shard, &["environment", "REDIS_URL"]),
            "redis://redis:6379"
        );
        assert!(text(shard, &["environment", "JWT_SECRET"]).starts_with("${JWT_SECRET:?"));
        assert_eq!(
            text(shard, &["environment", "NO_MIGRATE"]),
            "true",
            "the migrate service migrates, once"
        );
        ids.insert(text(shard, &["environment", "SHARD_ID"]).to_owned());
        for port in shard["ports"].as_sequence().unwrap() {
            let port = port.as_str().unwrap();
            let (host, container) = port.rsplit_once(':').unwrap();
            assert!(
                host_ports.insert(host.to_owned()),
                "{port}: host port used twice"
            );
            if container == "9100" {
                assert!(
                    host.starts_with("127.0.0.1:"),
                    "{name}: the ops port stays on loopback ({port})"
                );
            }
        }
    }
    assert_eq!(ids.len(), SHARDS.len(), "every shard has its own SHARD_ID");

    let loadtest = service(&services, "loadtest");
    let profiles = loadtest["profiles"].as_sequence().unwrap();
    assert_eq!(profiles, &[Value::from("loadtest")], "bots only on request");
    let command: Vec<&str> = loadtest["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in SHARDS {
        assert!(
            command.contains(&format!("ws://{name}:7000/ws").as_str()),
            "the bots spread over {name}"
        );
    }
}

#[test]
fn the_dockerfile_builds_the_binaries_it_ships() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a slim runtime stage");
    assert!(dockerfile.contains("--locked"));
    for binary in ["meridian", "meridian-loadtest", "meridian-baseline"] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} is shipped"
        );
    }
    assert!(dockerfile.contains("USER meridian"), "not root");
    assert!(dockerfile.contains("ENTRYPOINT [\"meridian\"]"));
    let ignore = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
