//! What users and their scripts see must not drift by accident: old catalogs
//! still load, the starter config and the JSON shapes are pinned.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::harness::{Env, stderr, write_photo};

/// A catalog written by schema version 1, with a job in each state.
const CATALOG_V1: &str = include_str!("fixtures/catalog-v1.sql");

/// `photosync init` output with the paths replaced by placeholders.
const STARTER_CONFIG: &str = include_str!("fixtures/starter-config.toml");

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_version_1_catalog_still_lists_and_retries() {
    let env = Env::new();
    fs::create_dir_all(&env.state).expect("state");
    let conn = rusqlite::Connection::open(env.state.join("catalog.sqlite")).expect("create");
    conn.execute_batch(CATALOG_V1).expect("load fixture");
    drop(conn);

    let out = env.run(["jobs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let states: Vec<&str> =
        jobs.as_array().expect("array").iter().map(|j| j["state"].as_str().expect("state")).collect();
    // Listing brings the catalog up to date (the queries need what later
    // migrations add). Job 5 was cancelled by an older photosync because
    // its file was missing for a moment; its file is still recorded at its
    // path, so the upgrade queues it again rather than never back that
    // photo up.
    assert_eq!(states, ["acknowledged", "retry_wait", "failed", "queued", "queued"]);
    assert_eq!(jobs[1]["next_attempt_at"], "2026-11-18T11:06:40.000Z");
    assert_eq!(jobs[0]["receipt_key"], "DCIM/IMG_0003.JPG");

    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(["jobs", "--state", "queued", "--json"]);
    let queued: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<i64> = queued.as_array().expect("array").iter().map(|j| j["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, [2, 3, 4, 5], "failed and retry_wait jobs were queued again, and the cancelled one revived");
    assert_eq!(queued[3]["last_error"], "the file was deleted before it was uploaded");
}

#[test]
fn starter_config_matches_the_snapshot() {
    let env = Env::new();
    fs::remove_file(&env.config).expect("rm");
    // A laptop's power supplies, so the policy written is the same on any machine.
    let power = env.dir.path().join("power");
    fs::create_dir_all(power.join("BAT0")).expect("battery");
    fs::write(power.join("BAT0/type"), "Battery\n").expect("type");
    let out = env.run([
        "init".to_owned(),
        "--source".into(),
        env.source.display().to_string(),
        "--destination".into(),
        env.dest.display().to_string(),
        "--power-supply-dir".into(),
        power.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let source = fs::canonicalize(&env.source).expect("canonical source");
    let dest = fs::canonicalize(&env.dest).expect("canonical dest");
    let written = fs::read_to_string(&env.config)
        .expect("config")
        .replace(&source.display().to_string(), "@SOURCE@")
        .replace(&dest.display().to_string(), "@DESTINATION@");
    assert_eq!(written, STARTER_CONFIG);
}

#[test]
fn json_shapes_are_stable() {
    let env = Env::new();
    write_photo(&env.source.join("a.jpg"), 1_000, 1);
    let (_, summary) = env.backup();
    assert_eq!(
        keys(&summary),
        set(&[
            "discovered",
            "new",
            "uploaded",
            "already_present",
            "failed",
            "deferred",
            "cancelled",
            "bytes_uploaded",
            "files_read",
            "seconds",
            "failures",
            "deferrals",
            "skipped",
            "exit_code",
        ])
    );
    let out = env.run(["jobs", "--json"]);
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        keys(&jobs[0]),
        set(&[
            "id",
            "state",
            "attempts",
            "destination",
            "path",
            "size",
            "waiting_on",
            "next_attempt_at",
            "error",
            "last_error",
            "receipt_key",
            "acknowledged_only",
            "updated_at",
            "group",
        ])
    );
}

/// The shape of a JSON value: every string, number and boolean replaced by
/// its type's name, arrays by the shape of their first element.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => Value::from("string"),
        Value::Number(_) => Value::from("number"),
        Value::Bool(_) => Value::from("bool"),
        Value::Null => Value::Null,
    }
}

/// `status --json` is what scripts read: its shape is pinned in
/// `tests/fixtures/status-shape.json`. Set `PHOTOSYNC_UPDATE_SNAPSHOTS=1`
/// to write the file anew after a deliberate change (and bump the protocol
/// version if old clients would break).
#[test]
fn status_json_matches_its_snapshot() {
    let env = Env::new();
    env.write_config("settle = \"300ms\"\n");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[retry]\n", "[retry]\nmax_attempts = 1\n")).expect("config");
    fs::write(env.dest.join("DCIM"), b"in the way").expect("a file where a folder must go");
    write_photo(&env.source.join("DCIM/IMG_1.JPG"), 1_000, 1);
    let daemon = env.start_daemon();
    daemon.wait_until(std::time::Duration::from_secs(30), "the upload fails", || env.count_jobs("failed") == 1);
    assert!(env.run(["pause"]).status.success());
    write_photo(&env.source.join("b.jpg"), 1_000, 2);
    daemon.wait_until(std::time::Duration::from_secs(30), "the new photo is held", || {
        env.status()["scheduler"]["holds"].as_array().is_some_and(|h| !h.is_empty())
    });
    let actual = serde_json::to_string_pretty(&shape(&env.status())).expect("json") + "\n";
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/status-shape.json");
    if std::env::var_os("PHOTOSYNC_UPDATE_SNAPSHOTS").is_some() {
        fs::write(&fixture, &actual).expect("write the snapshot");
    }
    let expected = fs::read_to_string(&fixture).expect("the snapshot");
    assert_eq!(actual, expected, "status --json changed shape; see the doc comment");
}
