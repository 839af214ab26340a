//! `photosync daemon` as a real process: live discovery with settle,
//! control commands over the socket, signals, crash recovery, and a socket
//! that survives bad clients.

use std::fs::{self, Permissions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Env, assert_same_tree, make_library, stderr, stdout, tree, wait_until, write_photo};

const PATIENCE: Duration = Duration::from_secs(30);

fn daemon_env(extra: &str) -> Env {
    let env = Env::new();
    env.write_config(&format!("settle = \"300ms\"\n{extra}"));
    env
}

fn acknowledged(env: &Env) -> i64 {
    env.count_jobs("acknowledged")
}

#[test]
fn uploads_what_is_there_then_what_arrives() {
    let env = daemon_env("");
    let media = make_library(&env.source, 6, 5_000);
    let _daemon = env.start_daemon();
    wait_until(PATIENCE, "the existing library is uploaded", || acknowledged(&env) == media.len() as i64);
    let photo = write_photo(&env.source.join("new/IMG_9000.JPG"), 7_000, 9);
    wait_until(PATIENCE, "the new photo is uploaded", || acknowledged(&env) == media.len() as i64 + 1);
    assert_eq!(fs::read(env.dest.join("new/IMG_9000.JPG")).expect("uploaded"), photo);
}

#[test]
fn a_file_copied_in_slowly_is_uploaded_once_and_complete() {
    // A settle time well above the gap between two chunks even when the
    // machine is busy (a gap longer than it would rightly count as settled).
    let env = Env::new();
    env.write_config("settle = \"1s\"\n");
    let _daemon = env.start_daemon();
    let path = env.source.join("slow.mp4");
    let content = crate::harness::noise(400_000, 3);
    let mut header = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    header.extend(&content);
    // The copy itself takes time: a chunk every 100 ms for two seconds,
    // longer than the settle time between the first and last write.
    let mut file = fs::File::create(&path).expect("create");
    for chunk in header.chunks(header.len() / 20 + 1) {
        file.write_all(chunk).expect("write chunk");
        file.sync_data().expect("flush chunk");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(file);
    wait_until(PATIENCE, "the finished file is uploaded", || acknowledged(&env) == 1);
    assert_eq!(fs::read(env.dest.join("slow.mp4")).expect("uploaded"), header);
    let versions: i64 = env.catalog().query_row("SELECT COUNT(*) FROM assets", [], |r| r.get(0)).expect("count assets");
    assert_eq!(versions, 1, "no partial version was ever recorded");
    assert_eq!(tree(&env.dest).len(), 1);
}

/// A pause for a while ends by itself: its end is a wall-clock time the
/// loop turns into a timer afresh on every turn (so a sleep cannot stretch
/// it). Until then the photo waits in the queue, held by the pause.
#[test]
fn a_timed_pause_ends_by_itself() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let out = env.run(["pause", "--for", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    write_photo(&env.source.join("a.jpg"), 3_000, 1);
    wait_until(PATIENCE, "the photo is found", || env.count_jobs("queued") + acknowledged(&env) == 1);
    let status = env.status();
    assert_eq!(
        (env.count_jobs("queued"), status["state"].as_str()),
        (1, Some("paused")),
        "held by the pause: {status}"
    );
    assert_eq!(status["scheduler"]["holds"][0]["reason"], "paused by user", "{status}");
    wait_until(PATIENCE, "the photo is uploaded once the pause ends", || acknowledged(&env) == 1);
    assert_eq!(env.status()["state"], "idle", "the pause is over");
}

#[test]
fn pause_holds_new_work_and_resume_releases_it() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let out = env.run(["pause", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    write_photo(&env.source.join("a.jpg"), 3_000, 1);
    wait_until(PATIENCE, "the photo is discovered and held", || {
        let status = env.status();
        status["scheduler"]["holds"].as_array().is_some_and(|h| h.iter().any(|h| h["jobs"] == 1))
    });
    let status = env.status();
    assert_eq!(status["state"], "paused");
    assert!(status["reason"].as_str().is_some_and(|r| r.starts_with("paused by user until")), "{status}");
    assert_eq!(env.count_jobs("queued"), 1);
    assert!(!env.dest.join("a.jpg").exists());

    let out = env.run(["resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(PATIENCE, "the photo is uploaded after resume", || acknowledged(&env) == 1);
    let attempts: i64 = env.catalog().query_row("SELECT attempts FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0);
}

#[test]
fn a_failed_job_is_retried_on_request() {
    // One attempt only, so the first failure is final.
    let env = daemon_env("");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[retry]\n", "[retry]\nmax_attempts = 1\n")).expect("config");
    // The destination cannot create the folder `DCIM`: a file has that name.
    fs::write(env.dest.join("DCIM"), b"in the way").expect("blocker");
    write_photo(&env.source.join("DCIM/IMG_1.JPG"), 2_000, 1);
    let _daemon = env.start_daemon();
    wait_until(PATIENCE, "the upload fails", || env.count_jobs("failed") == 1);
    let failed = env.run(["jobs", "--state", "failed", "--json"]);
    let jobs: Value = serde_json::from_slice(&failed.stdout).expect("jobs json");
    assert!(jobs[0]["error"].as_str().is_some_and(|e| e.contains("DCIM")), "{jobs}");
    let status = env.status();
    assert!(!status["scheduler"]["recent_errors"].as_array().expect("errors").is_empty(), "{status}");

    fs::remove_file(env.dest.join("DCIM")).expect("remove blocker");
    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Queued 1 job"), "{}", stdout(&out));
    wait_until(PATIENCE, "the retried job succeeds", || acknowledged(&env) == 1);
}

#[test]
fn status_json_has_a_stable_shape() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let status = env.status();
    let keys = |v: &Value| v.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&status),
        [
            "keeping_awake_until",
            "last_scan",
            "pid",
            "reason",
            "scanning",
            "scheduler",
            "skipped",
            "started_at",
            "state",
            "version",
            "watching"
        ]
    );
    assert_eq!(
        keys(&status["scheduler"]),
        [
            "backlog",
            "budget",
            "counts",
            "held_by",
            "holds",
            "next_retry",
            "paused",
            "quotas",
            "recent_errors",
            "totals",
            "uploads"
        ]
    );
    assert_eq!(status["state"], "idle");
    assert_eq!(status["watching"], true);
}

#[test]
fn sigterm_exits_0_and_removes_the_socket() {
    let env = daemon_env("");
    let daemon = env.start_daemon();
    daemon.signal("TERM");
    assert_eq!(daemon.wait(PATIENCE), Some(0));
    assert!(!env.socket().exists());
    let out = env.run(["status"]);
    assert_eq!(out.status.code(), Some(3), "no daemon: exit 3");
}

#[test]
fn sighup_reloads_the_config() {
    let env = daemon_env("");
    let daemon = env.start_daemon();
    let second_dest = env.dir.path().join("dest2");
    fs::create_dir(&second_dest).expect("dest2");
    let config = fs::read_to_string(&env.config).expect("config");
    let second = crate::harness::quote(&second_dest);
    let config = format!("{config}\n[[destination]]\nname = \"second\"\ntype = \"folder\"\npath = {second}\n");
    fs::write(&env.config, config).expect("write config");
    write_photo(&env.source.join("a.jpg"), 1_000, 1);
    daemon.signal("HUP");
    wait_until(PATIENCE, "the photo reaches the new destination", || second_dest.join("a.jpg").exists());
    fs::write(&env.config, "not = [valid").expect("break config");
    daemon.signal("HUP");
    wait_until(PATIENCE, "the bad reload is reported", || daemon.log().contains("configuration not reloaded"));
    // The CLI cannot read the broken file either, so ask over the socket directly.
    wait_until(PATIENCE, "the daemon serves on with the old config", || {
        UnixStream::connect(env.socket()).is_ok_and(|mut stream| {
            stream.write_all(&frame(json!({"type": "hello", "version": 1}).to_string().as_bytes())).expect("hello");
            read_reply(&mut stream);
            stream.write_all(&frame(br#"{"type":"status"}"#)).expect("status");
            read_reply(&mut stream)["type"] == "status"
        })
    });
}

#[test]
fn kill_9_then_restart_recovers_with_nothing_lost_or_doubled() {
    let env = daemon_env("");
    let media = make_library(&env.source, 300, 96_000);
    let mut daemon = env.start_daemon();
    wait_until(PATIENCE, "uploads are under way", || acknowledged(&env) >= 30 && env.count_jobs("running") > 0);
    assert!(daemon.is_running());
    daemon.signal("KILL");
    assert_eq!(daemon.wait(PATIENCE), None, "killed by the signal");
    assert!(env.socket().exists(), "a kill -9 leaves a stale socket");

    let _daemon = env.start_daemon();
    wait_until(PATIENCE, "every file is uploaded", || acknowledged(&env) == media.len() as i64);
    assert_same_tree(&tree(&env.dest), &media);
    let verdict: String = env.catalog().query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(verdict, "ok");
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let out = env.run(["daemon"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("another photosync process"), "{}", stderr(&out));
    assert!(env.run(["status"]).status.success(), "the first daemon is unaffected");
}

#[test]
fn backup_while_the_daemon_runs_goes_through_it() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let media = make_library(&env.source, 5, 2_000);
    // Let the files settle so the daemon's scan takes them.
    wait_until(PATIENCE, "the files are older than the settle time", || {
        media.keys().all(|rel| {
            fs::metadata(env.source.join(rel))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_millis(400)))
        })
    });
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["discovered"], media.len());
    assert_eq!(summary["deferred"], 0);
    assert_same_tree(&tree(&env.dest), &media);
}

/// One length-framed JSON message.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).expect("small").to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn read_reply(stream: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("reply length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("reply body");
    serde_json::from_slice(&body).expect("reply JSON")
}

#[test]
fn garbage_and_oversized_frames_get_errors_and_the_daemon_keeps_serving() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();

    let mut stream = UnixStream::connect(env.socket()).expect("connect");
    stream.write_all(&frame(br#"{"type":"status"}"#)).expect("send");
    assert_eq!(read_reply(&mut stream)["code"], "version_mismatch", "hello must come first");

    let mut stream = UnixStream::connect(env.socket()).expect("connect");
    stream.write_all(&frame(json!({"type": "hello", "version": 999}).to_string().as_bytes())).expect("send");
    assert_eq!(read_reply(&mut stream)["code"], "version_mismatch");

    let mut stream = UnixStream::connect(env.socket()).expect("connect");
    stream.write_all(&frame(json!({"type": "hello", "version": 1}).to_string().as_bytes())).expect("send");
    assert_eq!(read_reply(&mut stream)["type"], "hello");
    stream.write_all(&frame(b"\xff\xfe not json")).expect("send garbage");
    assert_eq!(read_reply(&mut stream)["code"], "bad_request");
    stream.write_all(&frame(br#"{"type":"format_disk"}"#)).expect("send unknown");
    assert_eq!(read_reply(&mut stream)["code"], "bad_request");
    stream.write_all(&frame(br#"{"type":"status"}"#)).expect("send status");
    assert_eq!(read_reply(&mut stream)["type"], "status", "the connection survives bad frames");
    stream.write_all(&u32::MAX.to_be_bytes()).expect("send huge length");
    assert_eq!(read_reply(&mut stream)["code"], "too_large");

    let mut stream = UnixStream::connect(env.socket()).expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send http");
    drop(stream);

    assert!(env.run(["status"]).status.success(), "the daemon still serves");
}

/// Runs `photosync status` as the unprivileged user `nobody`, with this
/// environment's config and runtime folder.
fn status_as_nobody(env: &crate::harness::Env) -> std::process::Output {
    assert!(crate::harness::is_root(), "acting as another user needs root (CI runs the tests as root)");
    fs::set_permissions(env.dir.path(), Permissions::from_mode(0o755)).expect("chmod dir");
    fs::set_permissions(&env.config, Permissions::from_mode(0o644)).expect("chmod config");
    let bin = env.dir.path().join("photosync-for-nobody");
    fs::copy(crate::harness::BIN, &bin).expect("copy binary");
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .arg("status")
        .env("PHOTOSYNC_CONFIG", &env.config)
        .env("PHOTOSYNC_RUNTIME_DIR", env.runtime_dir())
        .output()
        .expect("run status as nobody")
}

/// Regression: another user's `photosync status` exited 1 (documented: 3).
#[test]
fn a_client_of_another_user_is_refused() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    // Open the way to the socket so only the daemon's own check stands.
    fs::set_permissions(env.runtime_dir(), Permissions::from_mode(0o755)).expect("chmod dir");
    fs::set_permissions(env.socket(), Permissions::from_mode(0o666)).expect("chmod socket");
    let out = status_as_nobody(&env);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("belongs to another user"), "{}", stderr(&out));
    assert!(env.run(["status"]).status.success(), "its owner is still served");
}

/// Regression: a user who may not enter another user's runtime folder got
/// exit 1 and "Permission denied" three times over.
#[test]
fn a_socket_another_user_may_not_reach_is_exit_3_said_once() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    let out = status_as_nobody(&env);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let said = stderr(&out).to_lowercase();
    assert_eq!(said.matches("permission denied").count(), 1, "{said}");
}

#[test]
fn pause_stops_an_upload_in_flight_without_charging_it() {
    // A bandwidth limit keeps the upload running long enough to catch it.
    let env = daemon_env("");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"2MiB\"\n")).expect("config");
    let _daemon = env.start_daemon();
    let content = crate::harness::write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 8);
    wait_until(PATIENCE, "the upload is under way", || {
        env.status()["scheduler"]["uploads"][0]["bytes_done"].as_u64().is_some_and(|b| b > 0)
    });
    let asked = std::time::Instant::now();
    assert!(env.run(["pause"]).status.success());
    let job = || -> (String, String, i64) {
        env.catalog()
            .query_row("SELECT state, COALESCE(waiting_on, ''), attempts FROM jobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("job")
    };
    wait_until(PATIENCE, "the upload stops", || job().0 == "queued");
    assert!(asked.elapsed() < Duration::from_secs(2), "stopped {:?} after pause", asked.elapsed());
    assert_eq!(job(), ("queued".into(), "paused".into(), 0));
    assert!(!env.dest.join("clip.mp4").exists(), "nothing half-written is published");

    assert!(env.run(["resume"]).status.success());
    wait_until(PATIENCE, "the upload completes after resume", || job().0 == "acknowledged");
    assert_eq!(job().2, 0, "no attempt charged");
    assert_eq!(fs::read(env.dest.join("clip.mp4")).expect("uploaded"), content);
}

/// Regression: a file touched without a content change (new mtime, same
/// bytes) after its job was queued stayed "changed after the scan" until the
/// daemon restarted.
#[test]
fn a_touched_file_is_uploaded_without_a_restart() {
    let env = daemon_env("");
    let _daemon = env.start_daemon();
    assert!(env.run(["pause"]).status.success());
    let photo = env.source.join("a.jpg");
    let content = write_photo(&photo, 3_000, 1);
    wait_until(PATIENCE, "the photo is queued", || env.count_jobs("queued") == 1);
    let later = std::time::SystemTime::now() + Duration::from_mins(1);
    fs::File::options().write(true).open(&photo).expect("open").set_modified(later).expect("touch");
    // Discovery records the new stat (same content: no new version).
    wait_until(PATIENCE, "the touch is recorded", || {
        let mtime: i64 = env.catalog().query_row("SELECT mtime_ns FROM files", [], |r| r.get(0)).expect("stat cache");
        mtime / 1_000_000_000 == later.duration_since(std::time::UNIX_EPOCH).expect("epoch").as_secs() as i64
    });
    assert!(env.run(["resume"]).status.success());
    wait_until(PATIENCE, "the photo is uploaded", || acknowledged(&env) == 1);
    assert_eq!(fs::read(env.dest.join("a.jpg")).expect("uploaded"), content);
}

/// Runs photosync with `args`, killing it if it has not finished within `timeout`.
fn run_within(env: &crate::harness::Env, args: &[&str], timeout: Duration) -> std::process::Output {
    let mut child = env
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("photosync {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Regression: control connections that had said hello were never timed
/// out or capped; about a thousand idle clients left `status` unanswered and
/// scans failing with "Too many open files".
#[test]
fn a_thousand_idle_clients_do_not_keep_status_from_answering() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(4096);
    assert!(wanted >= 1300, "the test needs 1,300 open files (hard limit {:?})", limit.maximum);
    setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: limit.maximum }).expect("raise the limit");

    let env = daemon_env("");
    // The usual limit of a session: 1,024 open files.
    let daemon = env.start_daemon_under(&["prlimit", "--nofile=1024:1024", "--"], &[]);
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let mut stream = UnixStream::connect(env.socket()).expect("connect");
        stream.write_all(&frame(json!({"type": "hello", "version": 1}).to_string().as_bytes())).expect("hello");
        idle.push(stream);
    }
    let out = run_within(&env, &["status"], Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    write_photo(&env.source.join("after.jpg"), 2_000, 1);
    daemon.wait_until(PATIENCE, "a photo is still found and uploaded", || acknowledged(&env) == 1);
    assert!(!daemon.log().contains("Too many open files"), "{}", daemon.log());
    drop(idle);
}

/// Regression: a SIGHUP reload dropped the user's `pause`.
#[test]
fn a_pause_outlives_a_reload() {
    let env = daemon_env("");
    let daemon = env.start_daemon();
    assert!(env.run(["pause"]).status.success());
    daemon.signal("HUP");
    daemon.wait_until(PATIENCE, "the reload is done", || daemon.log().contains("configuration reloaded"));
    daemon.wait_until(PATIENCE, "the daemon answers again", || env.run(["status"]).status.success());
    assert_eq!(env.status()["state"], "paused");
    write_photo(&env.source.join("a.jpg"), 1_000, 1);
    daemon.wait_until(PATIENCE, "the photo is queued, not uploaded", || env.count_jobs("queued") == 1);
    assert_eq!(acknowledged(&env), 0);
}

/// Regression: any catalog error (`SQLITE_BUSY`, a full disk, an I/O error)
/// ended the daemon. Here another process keeps the catalog's write lock
/// past the busy timeout; the daemon waits it out and carries on.
#[test]
fn a_catalog_kept_locked_does_not_end_the_daemon() {
    let env = daemon_env("");
    let mut daemon = env.start_daemon();
    assert!(env.run(["pause"]).status.success());
    let media = make_library(&env.source, 4, 2_000);
    daemon.wait_until(PATIENCE, "the photos are queued", || env.count_jobs("queued") == media.len() as i64);
    let locker = rusqlite::Connection::open(env.state.join("catalog.sqlite")).expect("open the catalog");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
    assert!(env.run(["resume"]).status.success());
    wait_until(Duration::from_mins(1), "the daemon hits the locked catalog", || {
        daemon.log().contains("the catalog failed") || !daemon.is_running()
    });
    assert!(daemon.is_running(), "the daemon ended:\n{}", daemon.log());
    locker.execute_batch("COMMIT").expect("let go");
    drop(locker);
    daemon.wait_until(Duration::from_mins(1), "every photo is uploaded", || acknowledged(&env) == media.len() as i64);
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(env.run(["status"]).status.success());
    assert_same_tree(&tree(&env.dest), &media);
}
