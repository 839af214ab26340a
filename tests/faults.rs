//! Bad input and a failing destination: clear errors, exit codes, and the
//! rest of the work still done.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Env, make_library, tree};

fn chown_root(path: &std::path::Path) {
    let status = Command::new("chown").arg("0:0").arg(path).status().expect("chown");
    assert!(status.success());
}

#[test]
fn unreadable_file_exits_1_naming_it_while_the_rest_upload() {
    let mut env = Env::new();
    let media = make_library(&env.source, 5, 3_000);
    assert!(env.run_as_unprivileged(), "setpriv is needed to drop root privileges");
    let bad = env.source.join("DCIM/100CANON/IMG_0003.JPG");
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o000)).expect("chmod 000");

    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let failure = &summary["failures"][0];
    assert_eq!(failure["path"], bad.display().to_string());
    assert!(failure["reason"].as_str().is_some_and(|r| r.contains("ermission denied")), "{failure}");
    assert_eq!(summary["uploaded"], media.len() - 1);
    assert_eq!(tree(&env.dest).len(), media.len() - 1);

    // Once readable, the next run picks it up and succeeds.
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 1);
}

#[test]
fn unwritable_destination_retries_then_leaves_jobs_in_retry_wait() {
    let mut env = Env::new();
    let media = make_library(&env.source, 8, 2_000);
    assert!(env.run_as_unprivileged(), "setpriv is needed to drop root privileges");
    if crate::harness::is_root() {
        chown_root(&env.dest);
    }
    fs::set_permissions(&env.dest, fs::Permissions::from_mode(0o555)).expect("read-only destination");

    let (code, summary) = env.backup();
    assert_eq!(code, 75, "transient failures defer, they do not fail: {summary}");
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["uploaded"], 0);
    assert_eq!(summary["deferred"], media.len());
    let deferrals = summary["deferrals"].as_array().expect("deferrals");
    assert!(
        deferrals.iter().any(|d| d["reason"].as_str().is_some_and(|r| r.contains("ermission denied"))),
        "{summary}"
    );
    let conn = env.catalog();
    let (waiting, min_attempts): (i64, i64) = conn
        .query_row("SELECT COUNT(*), MIN(attempts) FROM jobs WHERE state = 'retry_wait'", [], |r| {
            Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
        })
        .expect("query");
    assert!(waiting >= 1, "{:?}", env.job_states());
    assert!(min_attempts >= 3, "each was tried attempts_per_run times within the run");
    let due_later: i64 = conn
        .query_row("SELECT COUNT(*) FROM jobs WHERE state = 'retry_wait' AND next_attempt_at > updated_at", [], |r| {
            r.get(0)
        })
        .expect("query");
    assert_eq!(due_later, waiting, "every waiting job has a backoff time in the future");
    drop(conn);

    // The next run honours the backoff: nothing is retried early.
    fs::set_permissions(&env.dest, fs::Permissions::from_mode(0o777)).expect("writable again");
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert_eq!(summary["uploaded"], media.len() as i64 - waiting, "only jobs never tried go now");

    // `retry` makes them due now.
    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(tree(&env.dest).len(), media.len());
}

#[test]
fn missing_destination_folder_is_deferred_and_never_created() {
    let env = Env::new();
    make_library(&env.source, 3, 1_000);
    fs::remove_dir(&env.dest).expect("unmount");
    let (code, summary): (i32, Value) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary["deferrals"][0]["reason"].as_str().is_some_and(|r| r.contains("does not exist")), "{summary}");
    assert!(!env.dest.exists(), "an unmounted destination must not be created");
    fs::create_dir(&env.dest).expect("mount");
    assert_eq!(env.backup().0, 0);
}
