//! `photosync verify`: receipts proven against what the destinations hold,
//! damage found and, with `--repair`, put right; with and without a daemon.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Env, make_library, stderr, tree, write_video};
use crate::s3_server::{KEY_ID, S3Server, SECRET, backup, s3_env};

fn verify(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend(args);
    let out = env.command(all).env("TEST_S3_KEY", KEY_ID).env("TEST_S3_SECRET", SECRET).output().expect("verify");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out.status.code().expect("code"), report)
}

fn kinds(report: &Value) -> Vec<(String, String)> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| (p["kind"].as_str().expect("kind").to_owned(), p["key"].as_str().expect("key").to_owned()))
        .collect()
}

/// Flips one bit in the middle of a file.
fn flip_a_bit(path: &Path) {
    let mut bytes = fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

#[test]
fn a_flipped_bit_and_a_deleted_copy_in_a_folder_are_found_and_repaired() {
    let env = Env::new();
    let media = make_library(&env.source, 6, 8_000);
    assert_eq!(env.backup().0, 0);
    let (code, report) = verify(&env, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["objects"], media.len());
    assert_eq!(report["held"], media.len());

    flip_a_bit(&env.dest.join("DCIM/100CANON/IMG_0000.JPG"));
    fs::remove_file(env.dest.join("DCIM/101CANON/IMG_0001.JPG")).expect("delete a copy");
    let (code, report) = verify(&env, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        kinds(&report),
        [
            ("corrupt".to_owned(), "DCIM/100CANON/IMG_0000.JPG".to_owned()),
            ("missing".to_owned(), "DCIM/101CANON/IMG_0001.JPG".to_owned())
        ]
    );

    let (code, report) = verify(&env, &["--repair"]);
    assert_eq!(code, 1, "the damage was there: {report}");
    assert_eq!(report["repaired"].as_array().expect("repaired").len(), 2, "{report}");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let (code, report) = verify(&env, &[]);
    assert_eq!(code, 0, "{report}");
    // Every photo is there intact; the changed copy was not overwritten.
    let stored: Vec<Vec<u8>> = tree(&env.dest).into_values().collect();
    for (rel, content) in &media {
        assert!(stored.contains(content), "{} is not at the destination", rel.display());
    }
    assert_eq!(stored.len(), media.len() + 1, "the changed copy stays beside the good one");
}

#[test]
fn an_object_deleted_from_the_bucket_is_found_and_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let media = make_library(&env.source, 4, 5_000);
    let video = write_video(&env.source.join("Videos/long.mp4"), 7 * 1024 * 1024, 3);
    assert_eq!(backup(&env, SECRET).0, 0);
    assert_eq!(verify(&env, &[]).0, 0);

    let gone = server.root.join("photos/backup/DCIM/100CANON/IMG_0000.JPG");
    fs::remove_file(&gone).expect("delete the object");
    let (code, report) = verify(&env, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(kinds(&report), [("missing".to_owned(), "backup/DCIM/100CANON/IMG_0000.JPG".to_owned())]);

    // A bit flipped on the server's disk: its stored checksum still says
    // all is well, so only reading it back tells.
    flip_a_bit(&server.root.join("photos/backup/Videos/long.mp4"));
    let (code, report) = verify(&env, &["--deep", "--repair"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["repaired"].as_array().expect("repaired").len(), 2, "{report}");
    assert_eq!(backup(&env, SECRET).0, 0);
    let (code, report) = verify(&env, &["--deep"]);
    assert_eq!(code, 0, "{report}");
    let objects = server.objects();
    assert_eq!(objects[Path::new("backup/DCIM/100CANON/IMG_0000.JPG")], media[Path::new("DCIM/100CANON/IMG_0000.JPG")]);
    assert!(objects.values().any(|v| *v == video), "a good copy of the video is stored");
}

#[test]
fn a_sample_checks_only_that_many_and_an_unknown_destination_is_a_usage_error() {
    let env = Env::new();
    make_library(&env.source, 5, 2_000);
    assert_eq!(env.backup().0, 0);
    let (code, report) = verify(&env, &["--sample", "2"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["objects"], 2);
    let out = env.run(["verify", "--destination", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no destination is called `nope`"), "{}", stderr(&out));
}

#[test]
fn through_the_daemon_repair_puts_a_deleted_copy_back() {
    let env = Env::new();
    env.write_config("settle = \"300ms\"\n");
    let media = make_library(&env.source, 3, 4_000);
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_secs(30), "the library is uploaded", || {
        env.count_jobs("acknowledged") == media.len() as i64
    });
    let copy: PathBuf = env.dest.join("DCIM/100CANON/IMG_0000.JPG");
    fs::remove_file(&copy).expect("delete a copy");
    let (code, report) = verify(&env, &["--repair"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["repaired"].as_array().expect("repaired").len(), 1, "{report}");
    daemon.wait_until(Duration::from_secs(30), "the daemon uploads it again", || copy.exists());
    daemon.wait_until(Duration::from_secs(30), "and acknowledges it", || {
        env.count_jobs("acknowledged") == media.len() as i64
    });
    assert_eq!(verify(&env, &[]).0, 0);
}
