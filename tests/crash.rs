//! kill -9 of a real backup at several points, then a rerun: every file ends
//! up at the destination exactly once with the right content, and the
//! catalog is intact.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, tree};

fn kill_then_rerun(acknowledged_before_kill: i64) {
    let env = Env::new();
    // Enough data that the run is still going when the kill lands.
    let media = make_library(&env.source, 400, 96_000);
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    crate::harness::wait_until(Duration::from_mins(1), "the backup has made progress", || {
        env.count_jobs("acknowledged") >= acknowledged_before_kill && env.count_jobs("running") > 0
    });
    assert!(child.try_wait().expect("try_wait").is_none(), "the backup finished before it could be killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    // A job killed between `succeeded` and `acknowledged` is acknowledged by
    // recovery without another upload, so it counts as done.
    let done_at_kill = env.count_jobs("acknowledged") + env.count_jobs("succeeded");
    assert!(done_at_kill < media.len() as i64, "killed mid-run");

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        summary["uploaded"].as_i64().expect("uploaded") + summary["already_present"].as_i64().expect("present"),
        media.len() as i64 - done_at_kill,
        "the rerun does exactly the jobs that were not acknowledged: {summary}"
    );
    assert_same_tree(&tree(&env.dest), &media);
    let conn = env.catalog();
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(verdict, "ok");
    assert_eq!(env.job_states().get("acknowledged").copied(), Some(media.len() as i64));
}

#[test]
fn kill_9_at_the_first_upload_then_rerun_loses_and_duplicates_nothing() {
    kill_then_rerun(0);
}

#[test]
fn kill_9_mid_backup_then_rerun_loses_and_duplicates_nothing() {
    kill_then_rerun(120);
}
