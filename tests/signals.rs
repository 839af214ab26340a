//! SIGTERM and SIGINT stop a backup cleanly: running jobs go back to the
//! queue uncharged, the exit code is 130, and the next run finishes the work.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, tree, wait_until};

fn stop_with(signal: &str) {
    let env = Env::new();
    env.one_slow_batch_at_a_time();
    let media = make_library(&env.source, 400, 96_000);
    let child = env.command(["backup", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let acknowledged = || {
        rusqlite::Connection::open_with_flags(
            env.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM jobs WHERE state = 'acknowledged'", [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0)
    };
    wait_until(Duration::from_mins(1), "some uploads are done", || acknowledged() >= 20);
    let status = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{signal} → exit 130");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary printed on the way out");
    assert_eq!(summary["exit_code"], 130);
    let by_state = env.job_states();
    assert_eq!(by_state.get("running"), None, "no job left running: {by_state:?}");
    let charged: i64 =
        env.catalog().query_row("SELECT COALESCE(SUM(attempts), 0) FROM jobs", [], |r| r.get(0)).expect("query");
    assert_eq!(charged, 0, "interrupted jobs are not charged an attempt");

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_same_tree(&tree(&env.dest), &media);
}

#[test]
fn sigterm_stops_cleanly_and_the_next_run_finishes() {
    stop_with("TERM");
}

#[test]
fn sigint_stops_cleanly_and_the_next_run_finishes() {
    stop_with("INT");
}
