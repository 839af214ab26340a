//! kill -9 of a real backup at several points, then a rerun: every file ends
//! up at the destination exactly once with the right content, and the
//! catalog is intact.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, tree, write_photo};

fn kill_then_rerun(acknowledged_before_kill: i64) {
    let env = Env::new();
    // Enough data, slowly enough, that the run is still going when the kill lands.
    env.one_slow_batch_at_a_time();
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

/// Names of the temporary copies below `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temporaries(&path));
        } else if entry.file_name().to_string_lossy().contains(".photosync-") {
            found.push(path);
        }
    }
    found
}

/// A job cut short by kill -9 whose file is deleted before the rerun is
/// cancelled rather than retried, so no retry removes its temporary copy:
/// the cancellation must.
#[test]
fn kill_9_mid_copy_then_delete_the_file_leaves_no_temporary_copy() {
    let env = Env::new();
    // A bandwidth limit keeps the big copy in flight long enough to kill it.
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"16MiB\"\n")).expect("config");
    let big = PathBuf::from("DCIM/big.jpg");
    let small = PathBuf::from("DCIM/small.jpg");
    write_photo(&env.source.join(&big), 48 << 20, 1);
    let expected = BTreeMap::from([(small.clone(), write_photo(&env.source.join(&small), 4096, 2))]);

    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let big_copy = || temporaries(&env.dest).iter().any(|t| t.to_string_lossy().contains(".big.jpg."));
    crate::harness::wait_until(Duration::from_mins(1), "the big file is being copied", big_copy);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(big_copy(), "the kill left the big file's temporary copy");
    fs::remove_file(env.source.join(&big)).expect("delete the big file");

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(temporaries(&env.dest), Vec::<PathBuf>::new(), "the cancelled job's temporary copy is removed");
    assert_same_tree(&tree(&env.dest), &expected);
    assert_eq!(env.count_jobs("cancelled"), 1);
}

/// Regression: a copy cut short started again from zero (and the summary's
/// `bytes_uploaded` counted the whole file), so under repeated
/// interruptions big videos never finished and starved the photos queued
/// behind them. The rerun carries on from the temporary copy.
#[test]
fn kill_9_mid_copy_then_rerun_carries_on_from_the_copy_so_far() {
    let env = Env::new();
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"16MiB\"\n")).expect("config");
    let big = PathBuf::from("DCIM/big.jpg");
    let content = write_photo(&env.source.join(&big), 48 << 20, 1);
    let expected = BTreeMap::from([(big, content.clone())]);

    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let copied_so_far = || temporaries(&env.dest).first().and_then(|t| fs::metadata(t).ok()).map_or(0, |m| m.len());
    crate::harness::wait_until(Duration::from_mins(1), "a third is copied", || copied_so_far() >= 16 << 20);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let kept = copied_so_far();
    assert!(kept < content.len() as u64, "killed mid-copy");

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["bytes_uploaded"], content.len() as u64 - kept, "only the rest was copied: {summary}");
    assert_same_tree(&tree(&env.dest), &expected);
}

/// kill -9 at random moments of a 10,000-file copy (small files go in
/// batches made durable together): after every kill, each file published
/// at the destination holds its photo's content and every acknowledged job's
/// file is there; a last run finishes the rest, and in the end every photo
/// is at the destination exactly once, with nothing uploaded twice and no
/// temporary copy left.
#[test]
fn kill_9_at_random_moments_of_a_10000_file_copy_loses_and_duplicates_nothing() {
    const FILES: usize = 10_000;
    let env = Env::new();
    let mut media = BTreeMap::new();
    for i in 0..FILES {
        let rel = PathBuf::from(format!("DCIM/{:03}CANON/IMG_{i:05}.JPG", 100 + i / 100));
        media.insert(rel.clone(), write_photo(&env.source.join(&rel), 200 + i % 1_000, i as u64));
    }
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for round in 0..8 {
        let acknowledged = env.count_jobs("acknowledged");
        // Somewhere in the next tenth of the library (a few batches), or
        // before the scan has queued anything.
        let target = acknowledged + rng.i64(0..(FILES as i64 / 10));
        let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
        crate::harness::wait_until(Duration::from_mins(2), "the backup reaches the kill point", || {
            env.count_jobs("acknowledged") >= target || child.try_wait().expect("try_wait").is_some()
        });
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        kills += 1;
        // What is published is whole and right; what is acknowledged is there.
        let published = tree(&env.dest);
        for (rel, content) in &published {
            if !rel.to_string_lossy().contains(".photosync-") {
                assert_eq!(media.get(rel), Some(content), "round {round} (seed {seed}): {} is wrong", rel.display());
            }
        }
        for key in env.acknowledged_keys() {
            let rel = PathBuf::from(String::from_utf8(key).expect("utf-8 key"));
            assert!(
                published.contains_key(&rel),
                "round {round} (seed {seed}): {} acknowledged, not there",
                rel.display()
            );
        }
    }
    assert!(kills >= 3, "the backup was killed mid-run several times (seed {seed}): {kills}");
    let done = env.count_jobs("acknowledged") + env.count_jobs("succeeded");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        summary["uploaded"].as_i64().expect("uploaded") + summary["already_present"].as_i64().expect("present"),
        FILES as i64 - done,
        "the last run does exactly the jobs that were not acknowledged (seed {seed}): {summary}"
    );
    assert_eq!(temporaries(&env.dest), Vec::<PathBuf>::new(), "no temporary copy is left (seed {seed})");
    assert_same_tree(&tree(&env.dest), &media);
    let conn = env.catalog();
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(verdict, "ok");
    assert_eq!(env.job_states().get("acknowledged").copied(), Some(FILES as i64));
}
