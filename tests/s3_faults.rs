//! The S3 destination through the fault-injecting proxy: servers that
//! refuse, forget, stall, cut connections and misreport, one at a time and
//! all together. Every file must arrive once with the right content, and
//! nothing may be acknowledged without proof.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{assert_same_tree, make_library, write_photo, write_video};
use crate::proxy::{Fault, Proxy, Request, has_param};
use crate::s3_server::{KEY_ID, S3Server, SECRET, assert_receipts_hold, backup, s3_env_at, spawn_backup, under_prefix};

/// Fails the `n`-th request (from 0) that `matches`, once.
fn nth(n: usize, matches: impl Fn(&Request) -> bool + Send + Sync + 'static, fault: Fault) -> crate::proxy::Script {
    let seen = Arc::new(AtomicUsize::new(0));
    Box::new(
        move |request| {
            if matches(request) && seen.fetch_add(1, Ordering::SeqCst) == n { fault.clone() } else { Fault::Pass }
        },
    )
}

/// Regression: one 503 or 429 on the first request of a one-shot run (the
/// destination check) ended the run with exit 75 and no retry, even when
/// `Retry-After` was 2 s.
#[test]
fn a_503_with_retry_after_on_the_first_request_is_waited_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let slow_down = Fault::Answer { status: 503, code: "SlowDown", retry_after: Some(2) };
    let proxy = Proxy::start(&server.endpoint, nth(0, |_| true, slow_down));
    let env = s3_env_at(&proxy.endpoint, "");
    let media = make_library(&env.source, 3, 2_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], media.len(), "{summary}");
    let seen = proxy.seen();
    assert_eq!(seen[0].fault, "answer");
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(2), "Retry-After was not waited out: {gap:?}");
}

/// Regression: a multipart upload the server no longer knew (404
/// `NoSuchUpload` on a part) failed the job for good with "check the access
/// key" instead of starting the upload again.
#[test]
fn an_upload_the_server_forgot_is_started_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let forgot = Fault::Answer { status: 404, code: "NoSuchUpload", retry_after: None };
    let proxy = Proxy::start(&server.endpoint, nth(1, Request::is_part, forgot));
    let env = s3_env_at(&proxy.endpoint, "");
    let video = write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 4);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.objects()[Path::new("backup/clip.mp4")], video);
    let creates = proxy.seen().iter().filter(|s| s.method == "POST" && has_param(&s.target, "uploads")).count();
    assert_eq!(creates, 2, "the upload was started again");
    assert_receipts_hold(&env, &server);
}

/// Changes the `ETag` in a `CompleteMultipartUpload` answer to another one
/// of the same shape (as a server that stored something else would report).
fn wrong_etag(answer: &mut [u8]) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let Some(start) = text.find("<ETag>") else { return };
    let dash = text[start..].find('-').map_or(text.len(), |d| start + d);
    for byte in &mut answer[start + "<ETag>".len()..dash] {
        if byte.is_ascii_hexdigit() {
            *byte = if *byte == b'0' { b'1' } else { b'0' };
        }
    }
}

/// Regression: a failed check after completing a multipart upload left the
/// object in place, and the retry found it "already present" by its
/// metadata and acknowledged it without proof.
#[test]
fn a_failed_check_after_completion_is_not_taken_for_an_upload_already_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let proxy = Proxy::start(&server.endpoint, nth(0, Request::is_complete, Fault::Rewrite(wrong_etag)));
    let env = s3_env_at(&proxy.endpoint, "");
    let video = write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 5);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 0, "{summary}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
    let completions = proxy.seen().iter().filter(|s| s.method == "POST" && s.target.contains("uploadId=")).count();
    assert_eq!(completions, 2, "the doubtful object was removed and sent again");
    assert_eq!(server.objects()[Path::new("backup/clip.mp4")], video);
    assert_receipts_hold(&env, &server);
}

/// Regression: a stalled S3 request ignored pause (cancellation was only
/// looked at between body chunks), so the upload stayed "running" until
/// the server answered or the timeout passed.
#[test]
fn pause_stops_an_upload_stalled_on_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let proxy = Proxy::start(&server.endpoint, nth(0, Request::is_part, Fault::Stall(Duration::from_mins(10))));
    let env = s3_env_at(&proxy.endpoint, "timeout = \"10m\"\n");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("settle = \"300ms\"\n{config}")).expect("config");
    write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 6);
    let daemon = env.start_daemon_with(&[("TEST_S3_KEY", KEY_ID), ("TEST_S3_SECRET", SECRET)]);
    daemon.wait_until(Duration::from_secs(30), "a part is stalled on the server", || {
        proxy.seen().iter().any(|s| s.fault == "stall")
    });
    assert_eq!(env.count_jobs("running"), 1);
    assert!(env.run(["pause"]).status.success());
    daemon.wait_until(Duration::from_secs(30), "the stalled upload stops and waits, uncharged", || {
        env.count_jobs("queued") == 1 && env.count_jobs("running") == 0
    });
    let attempts: i64 = env.catalog().query_row("SELECT attempts FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0);
    assert!(env.run(["resume"]).status.success());
    daemon
        .wait_until(Duration::from_mins(1), "the upload finishes after resume", || env.count_jobs("acknowledged") == 1);
}

/// About a fifth of all requests fail: 500s, 503s and 429s with
/// `Retry-After`, connections reset while the body is sent, stalls longer
/// than the client's timeout. Every file still arrives intact, nothing
/// fails for good, and every `Retry-After` is waited out.
#[test]
fn every_file_arrives_while_a_fifth_of_requests_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    // PHOTOSYNC_TEST_SEED tries other faults.
    let seed = std::env::var("PHOTOSYNC_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_202);
    let rng = std::sync::Mutex::new(fastrand::Rng::with_seed(seed));
    let script: crate::proxy::Script = Box::new(move |_| {
        let mut rng = rng.lock().expect("rng");
        if rng.u8(0..100) >= 20 {
            return Fault::Pass;
        }
        match rng.u8(0..5) {
            0 => Fault::Answer { status: 500, code: "InternalError", retry_after: None },
            1 => Fault::Answer { status: 503, code: "SlowDown", retry_after: Some(1) },
            2 => Fault::Answer { status: 429, code: "TooManyRequests", retry_after: Some(1) },
            3 => Fault::ResetMidBody,
            _ => Fault::Stall(Duration::from_secs(3)),
        }
    });
    let proxy = Proxy::start(&server.endpoint, script);
    let env = s3_env_at(&proxy.endpoint, "timeout = \"1s\"\n");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replace("[retry]\n", "[retry]\nattempts_per_run = 12\n")).expect("config");
    let mut media = make_library(&env.source, 40, 20_000);
    for (i, name) in ["Videos/long_a.mp4", "Videos/long_b.mp4"].into_iter().enumerate() {
        let rel = PathBuf::from(name);
        media.insert(rel.clone(), write_video(&env.source.join(&rel), 11 * 1024 * 1024 + i, 40 + i as u64));
    }
    media.insert(PathBuf::from("late.jpg"), write_photo(&env.source.join("late.jpg"), 1_000, 41));

    let out = spawn_backup(&env, &["backup", "--json"]).wait_with_output().expect("backup");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(0), "{summary}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_same_tree(&server.objects(), &under_prefix(&media));
    assert_receipts_hold(&env, &server);

    let requests = proxy.seen();
    let faults = requests.iter().filter(|s| s.fault != "pass").count();
    assert!(faults * 100 >= requests.len() * 10, "{faults} of {} requests were faulted", requests.len());
    for (i, asked) in requests.iter().enumerate().filter(|(_, s)| s.retry_after.is_some()) {
        let wait = Duration::from_secs(asked.retry_after.unwrap_or_default());
        if let Some(next) = requests[i + 1..].iter().find(|s| s.operation() == asked.operation()) {
            assert!(
                next.at - asked.at >= wait,
                "{} came back after {:?}, not {wait:?}",
                asked.operation(),
                next.at - asked.at
            );
        }
    }
}

/// The daemon killed (-9) twenty times at random moments while it uploads a
/// few hundred photos and some multipart videos to S3: in the end every
/// content is in the bucket exactly once, the catalog is intact, and no
/// multipart upload is left open, on the server or in the catalog.
#[test]
fn twenty_kill_9s_during_an_s3_upload_lose_and_double_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env_at(&server.endpoint, "");
    let config = std::fs::read_to_string(&env.config).expect("config");
    // Slow enough that the kills land mid-upload.
    let config = config.replace("[policy]\n", "[policy]\nbandwidth = \"8MiB\"\n");
    std::fs::write(&env.config, format!("settle = \"0s\"\n{config}")).expect("config");
    let mut media = make_library(&env.source, 250, 30_000);
    for i in 0..3 {
        let rel = PathBuf::from(format!("Videos/long_{i}.mp4"));
        media.insert(rel.clone(), write_video(&env.source.join(&rel), 12 * 1024 * 1024 + i, 60 + i as u64));
    }
    let vars = [("TEST_S3_KEY", KEY_ID), ("TEST_S3_SECRET", SECRET)];
    // PHOTOSYNC_TEST_SEED tries other moments.
    let seed = std::env::var("PHOTOSYNC_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_202);
    let mut rng = fastrand::Rng::with_seed(seed);
    for kill in 0..20 {
        let daemon = env.start_daemon_with(&vars);
        // A random moment to kill at (not a wait for anything to happen).
        std::thread::sleep(Duration::from_millis(rng.u64(20..600)));
        daemon.signal("KILL");
        assert_eq!(daemon.wait(Duration::from_secs(10)), None, "kill {kill} (seed {seed})");
    }
    let acknowledged = env.count_jobs("acknowledged");
    assert!(acknowledged < media.len() as i64, "the kills landed before the end ({acknowledged} done)");

    let daemon = env.start_daemon_with(&vars);
    daemon.wait_until(Duration::from_mins(3), "every file is uploaded", || {
        env.count_jobs("acknowledged") == media.len() as i64
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(30)), Some(0));

    assert_same_tree(&server.objects(), &under_prefix(&media));
    assert_receipts_hold(&env, &server);
    let conn = env.catalog();
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(verdict, "ok");
    let open: i64 = conn.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).expect("q");
    assert_eq!(open, 0, "no multipart upload is left in the catalog");
    let on_server: Vec<String> = std::fs::read_dir(&server.root)
        .expect("server root")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".upload_id-"))
        .collect();
    assert!(on_server.is_empty(), "multipart uploads left open on the server: {on_server:?}");
}

/// Regression: one 403 on the bucket check at the start (a key that may
/// write but not list, a clock a little off) failed every job for good.
#[test]
fn a_403_on_the_bucket_check_does_not_fail_every_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let denied = Fault::Answer { status: 403, code: "AccessDenied", retry_after: None };
    let proxy = Proxy::start(&server.endpoint, nth(0, |r| r.method == "HEAD" && !r.target.contains("/backup"), denied));
    let env = s3_env_at(&proxy.endpoint, "");
    let media = make_library(&env.source, 3, 2_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], media.len(), "{summary}");
    assert_eq!(proxy.seen()[0].fault, "answer", "the bucket check was refused");
}

/// Regression: a run could end with exit 75 while the retry time of the
/// work it deferred had already passed (here the server asked for 3 s).
#[test]
fn a_job_due_again_within_moments_is_not_left_for_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let busy = Fault::Answer { status: 503, code: "SlowDown", retry_after: Some(3) };
    let proxy = Proxy::start(&server.endpoint, nth(0, |r| r.method == "PUT", busy));
    let env = s3_env_at(&proxy.endpoint, "");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replace("[retry]\n", "[retry]\nattempts_per_run = 1\n")).expect("config");
    write_photo(&env.source.join("a.jpg"), 3_000, 1);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
}

/// Hides the server's echo of `x-amz-checksum-sha256`, as from a server
/// that does not check checksums (same length, so the answer stays valid).
fn no_checksum_echo(answer: &mut [u8]) {
    let needle = b"x-amz-checksum-sha256";
    if let Some(at) = answer.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)) {
        answer[at..at + needle.len()].copy_from_slice(b"x-amz-checksum-hidden");
        ECHOES_HIDDEN.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many echoes [`no_checksum_echo`] hid.
static ECHOES_HIDDEN: AtomicUsize = AtomicUsize::new(0);

/// A server that does not vouch for the SHA-256 it was sent: the receipt is
/// proven afterwards (the file's MD5 against the `ETag`) instead.
#[test]
fn a_put_the_server_does_not_vouch_for_is_proven_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let proxy = Proxy::start(
        &server.endpoint,
        Box::new(|r: &Request| if r.method == "PUT" { Fault::Rewrite(no_checksum_echo) } else { Fault::Pass }),
    );
    let env = s3_env_at(&proxy.endpoint, "");
    let media = make_library(&env.source, 3, 4_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], media.len(), "{summary}");
    assert_same_tree(&server.objects(), &under_prefix(&media));
    assert_receipts_hold(&env, &server);
    assert_eq!(ECHOES_HIDDEN.load(Ordering::SeqCst), media.len(), "the server's echoes were hidden");
}
