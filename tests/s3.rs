//! The S3 destination against a real S3 server on 127.0.0.1 (`s3s-fs`, see
//! `s3_server`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{make_library, quote, stderr, wait_until, write_video};
use crate::s3_server::{
    BUCKET, KEY_ID, S3Server, SECRET, assert_receipts_hold, backup, kill_backup_after_parts, parts_recorded, s3_env,
    spawn_backup, under_prefix,
};

#[test]
fn small_and_multipart_uploads_arrive_intact_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let mut media = make_library(&env.source, 6, 30_000);
    let big = PathBuf::from("Videos/long.mp4");
    media.insert(big.clone(), write_video(&env.source.join(&big), 12 * 1024 * 1024 + 123, 77));

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], media.len());
    crate::harness::assert_same_tree(&server.objects(), &under_prefix(&media));
    assert_eq!(server.parts_received(), vec![1, 2, 3], "the 12 MiB file went up in three 5 MiB parts");
    let versions: i64 = env
        .catalog()
        .query_row("SELECT COUNT(*) FROM jobs WHERE receipt_version IS NOT NULL", [], |r| r.get(0))
        .expect("query");
    assert_eq!(versions, media.len() as i64, "every receipt keeps the ETag");
    let left: i64 = env.catalog().query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).expect("q");
    assert_eq!(left, 0, "finished uploads leave no multipart record");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 0);
}

#[test]
fn an_edited_photo_gets_a_new_key_and_the_old_object_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let photo = env.source.join("IMG_1.JPG");
    let original = crate::harness::write_photo(&photo, 4_000, 1);
    assert_eq!(backup(&env, SECRET).0, 0);
    let edited = crate::harness::write_photo(&photo, 4_500, 2);
    assert_eq!(backup(&env, SECRET).0, 0);
    let objects = server.objects();
    assert_eq!(objects.len(), 2, "{:?}", objects.keys());
    assert_eq!(objects[Path::new("backup/IMG_1.JPG")], original);
    assert!(objects.values().any(|v| *v == edited));
}

#[test]
fn bad_credentials_fail_permanently_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    make_library(&env.source, 2, 1_000);
    let (code, summary) = backup(&env, "wrong-secret");
    assert_eq!(code, 1, "{summary}");
    let reason = summary["failures"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("403"), "{reason}");
    assert!(server.objects().is_empty());
}

#[test]
fn a_missing_bucket_is_a_permanent_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config").replace("bucket = \"photos\"", "bucket = \"nope\"");
    fs::write(&env.config, config).expect("config");
    make_library(&env.source, 1, 1_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.to_string().contains("404"), "{summary}");
}

#[test]
fn an_unreachable_server_defers_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    drop(server);
    make_library(&env.source, 2, 1_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 75, "transient: try later: {summary}");
    assert_eq!(summary["failed"], 0);
}

#[test]
fn a_killed_multipart_upload_resumes_without_resending_stored_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config =
        fs::read_to_string(&env.config).expect("config").replace("part_size = \"5MiB\"", "part_size = \"8MiB\"");
    fs::write(&env.config, config).expect("config");
    let big = PathBuf::from("clip.mp4");
    let content = write_video(&env.source.join(&big), 200 * 1024 * 1024, 5);
    let parts_total = content.len().div_ceil(8 * 1024 * 1024) as u32;

    kill_backup_after_parts(&env, 5);
    let recorded: Vec<u32> = env
        .catalog()
        .prepare("SELECT number FROM session_pieces ORDER BY number")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert!(recorded.len() < parts_total as usize, "killed half-way");
    let before = server.parts_received().len();

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    let resent: Vec<u32> = server.parts_received()[before..].to_vec();
    assert!(resent.iter().all(|n| !recorded.contains(n)), "stored parts {recorded:?} were sent again: {resent:?}");
    let all: std::collections::BTreeSet<u32> = recorded.iter().chain(&resent).copied().collect();
    assert_eq!(all.len(), parts_total as usize, "every part was sent");
    assert_eq!(server.objects()[&Path::new("backup").join(&big)], content, "the object is identical");
}

#[test]
fn the_open_upload_of_a_deleted_file_is_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let big = env.source.join("gone.mp4");
    write_video(&big, 100 * 1024 * 1024, 6);
    // Another photo stays: a source that empties completely looks unmounted.
    let kept = crate::harness::write_photo(&env.source.join("kept.jpg"), 2_000, 7);
    kill_backup_after_parts(&env, 2);
    fs::remove_file(&big).expect("delete the source");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["cancelled"], 1, "{summary}");
    let open: i64 = env.catalog().query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).expect("q");
    assert_eq!(open, 0, "the abandoned upload was aborted and forgotten");
    let objects = server.objects();
    assert_eq!(objects.keys().collect::<Vec<_>>(), [Path::new("backup/kept.jpg")]);
    assert_eq!(objects[Path::new("backup/kept.jpg")], kept);
}

/// Regression: two sources holding the same relative path (different
/// videos above the multipart threshold) ended as one object with one
/// source's bytes, both jobs acknowledged; the other video was nowhere.
#[test]
fn two_sources_with_the_same_path_keep_both_videos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let second = dir.path().join("second-source");
    let env = s3_env(&server, &format!("\n[[source]]\npath = {}\n", quote(&second)));
    let a = write_video(&env.source.join("DCIM/clip.mp4"), 7 * 1024 * 1024, 1);
    let b = write_video(&second.join("DCIM/clip.mp4"), 7 * 1024 * 1024 + 5, 2);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let objects = server.objects();
    assert_eq!(objects.len(), 2, "{:?}", objects.keys());
    assert!(objects.values().any(|v| *v == a) && objects.values().any(|v| *v == b), "both videos are stored");
    assert_receipts_hold(&env, &server);
}

/// Regression: a video edited in place during a multipart upload was
/// acknowledged with its scan-time SHA-256 while the object held a mix of
/// old and new bytes; the original content was nowhere. The edit here even
/// keeps the file's time, so only the bytes tell.
#[test]
fn a_video_edited_during_its_multipart_upload_is_never_acknowledged_as_the_scanned_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"8MiB\"\n")).expect("config");
    let video = env.source.join("clip.mp4");
    let original = write_video(&video, 40 * 1024 * 1024, 3);
    let mtime = fs::metadata(&video).expect("stat").modified().expect("mtime");

    let child = spawn_backup(&env, &["backup", "--json"]);
    wait_until(Duration::from_mins(1), "two parts are sent", || parts_recorded(&env) >= 2);
    // Edit the last part, which has not been sent yet, in place.
    let mut edited = original.clone();
    let tail = original.len() - 1024 * 1024;
    edited[tail..].copy_from_slice(&crate::harness::noise(1024 * 1024, 99));
    {
        use std::os::unix::fs::FileExt as _;
        let file = fs::File::options().write(true).open(&video).expect("open");
        file.write_all_at(&edited[tail..], tail as u64).expect("edit in place");
        file.set_modified(mtime).expect("keep the time");
    }
    let out = child.wait_with_output().expect("backup ends");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(75), "the edited file waits for the next scan: {summary}\n{}", stderr(&out));
    assert_eq!(env.count_jobs("acknowledged"), 0, "nothing is acknowledged as the scanned version");
    assert!(server.objects().is_empty(), "no object of mixed bytes: {:?}", server.objects().keys());
    let open: i64 = env.catalog().query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).expect("q");
    assert_eq!(open, 0, "the spoilt upload was aborted");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.objects()[Path::new("backup/clip.mp4")], edited, "the edited version is what is stored");
    assert_receipts_hold(&env, &server);
}

/// Regression: an object with the same content already at the key, written
/// by another tool (no photosync metadata), was not recognised, and a
/// second, hash-suffixed copy was stored.
#[test]
fn an_identical_object_written_by_another_tool_is_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let photo = crate::harness::write_photo(&env.source.join("IMG_1.JPG"), 30_000, 1);
    let video = write_video(&env.source.join("clip.mp4"), 6 * 1024 * 1024, 2);
    // As rclone would have left them: plain objects, no metadata of ours.
    for (name, content) in [("IMG_1.JPG", &photo), ("clip.mp4", &video)] {
        crate::harness::write(&server.root.join(BUCKET).join("backup").join(name), content);
    }
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 2, "{summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(server.objects().len(), 2, "{:?}", server.objects().keys());
    assert_receipts_hold(&env, &server);
}

/// Regression: S3 keys were read while the config loaded, so `photosync
/// jobs` and `status` failed for a user without the service's secrets.
#[test]
fn jobs_need_no_s3_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let out = env.run(["jobs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(crate::harness::stdout(&out).contains("No jobs"), "{}", crate::harness::stdout(&out));
}

/// Regression: S3 keys were read once, when the config loaded, so a running
/// daemon never picked up rotated or refreshed credentials.
#[test]
fn a_daemon_picks_up_rotated_keys_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let credentials = env.dir.path().join("credentials");
    let keys = |secret: &str| {
        fs::write(&credentials, format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {secret}\n"))
            .expect("credentials");
    };
    keys("an-old-secret");
    let config = fs::read_to_string(&env.config).expect("config").replace(
        "access_key_id_env = \"TEST_S3_KEY\"\nsecret_access_key_env = \"TEST_S3_SECRET\"\n",
        &format!("credentials_file = {}\n", quote(&credentials)),
    );
    fs::write(&env.config, format!("settle = \"300ms\"\n{config}")).expect("config");
    let daemon = env.start_daemon();
    crate::harness::write_photo(&env.source.join("a.jpg"), 2_000, 1);
    daemon.wait_until(Duration::from_secs(30), "the upload is refused", || env.count_jobs("failed") == 1);

    keys(SECRET);
    assert!(env.run(["retry", "--failed"]).status.success());
    daemon.wait_until(Duration::from_secs(30), "the new keys are used", || env.count_jobs("acknowledged") == 1);
}
