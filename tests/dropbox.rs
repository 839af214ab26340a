//! The Dropbox destination against the fake Dropbox (`dropbox_server`):
//! signing in with a pasted code, small files in one request, large ones
//! in upload sessions that resume after kill -9, dedup by content hash,
//! names that move aside, rate limits, and a revoked sign-in.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use crate::dropbox_server::{CLIENT_ID, Dropbox, Fault};
use crate::harness::{Env, quote, stdout, wait_until, write_photo, write_video};
use crate::signin;

/// An environment whose one destination is `server`, its grant in a file
/// (no keyring answers: the session bus is absent).
fn dropbox_env(server: &Dropbox) -> Env {
    let env = Env::new();
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\nbase = \"1h\"\nattempts_per_run = 3\nmax_attempts = 8\n\n\
         [policy]\npower_supply_dir = {power}\n\n[[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"dropbox\"\ntype = \"dropbox\"\nclient_id = \"{CLIENT_ID}\"\nfolder = \"/Photos\"\n\
         api_url = \"{url}\"\ncontent_url = \"{url}\"\nauth_url = \"{url}\"\n",
        state = quote(&env.state),
        power = quote(&env.power_supply_dir()),
        source = quote(&env.source),
        url = server.url,
    );
    fs::create_dir_all(env.power_supply_dir()).expect("power folder");
    fs::write(&env.config, text).expect("config");
    env.set_var("DBUS_SESSION_BUS_ADDRESS", &format!("unix:path={}", env.dir.path().join("no-session-bus").display()));
    env
}

/// Where the grant of the destination `dropbox` is kept without a keyring.
fn token_file(env: &Env) -> std::path::PathBuf {
    signin::grant_file(env, "dropbox")
}

/// Signs in as if the user had (a refresh token the fake issued).
fn signed_in(server: &Dropbox, env: &Env) {
    signin::keep_grant(env, "dropbox", &server.grant());
}

/// Runs `photosync auth dropbox` as the user would: opens the address it
/// prints (the fake approves it), pastes the code. Returns its output.
fn sign_in(server: &Dropbox, env: &Env) -> String {
    signin::auth(env, "dropbox", &[], |line| signin::address(line).map(|url| server.approve(&url)))
}

/// Three photos (one with a name far from ASCII) and a video larger than
/// one request, by their path below the source.
fn library(env: &Env) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (i, name) in ["IMG_0001.JPG", "IMG_0002.JPG", "Ærøskøbing 漢字 😀.jpg"].iter().enumerate() {
        let content = write_photo(&env.source.join("DCIM").join(name), 30_000 + i * 1_000, i as u64);
        files.insert(format!("DCIM/{name}"), content);
    }
    files.insert("clip.mp4".into(), write_video(&env.source.join("clip.mp4"), 19 * 1024 * 1024 + 5, 9));
    files
}

/// What the fake holds below `/Photos`, by path below it.
fn stored(server: &Dropbox) -> BTreeMap<String, Vec<u8>> {
    server
        .files()
        .into_iter()
        .filter_map(|(path, bytes)| path.strip_prefix("/Photos/").map(|p| (p.to_owned(), bytes)))
        .collect()
}

/// Sign in with a pasted code (kept in a private file when no keyring
/// answers), then a backup: small files in one request, the video in an
/// upload session, a name past ASCII escaped in the header, and `verify`
/// finds them all; a second machine (another catalog) uploads nothing.
#[test]
fn a_pasted_sign_in_then_every_photo_arrives_and_a_second_machine_uploads_nothing() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    let printed = sign_in(&server, &env);
    assert!(printed.contains("Signed in to Dropbox"), "{printed}");
    let mode = fs::metadata(token_file(&env)).expect("token file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    let refresh: Vec<String> = server.with(|s| s.refresh_tokens.keys().cloned().collect());
    assert!(refresh.iter().all(|t| !printed.contains(t.as_str())), "no token is printed: {printed}");

    let status = env.run(["auth", "dropbox", "--status", "--json"]);
    assert!(status.status.success(), "{}", stdout(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("JSON");
    assert_eq!((status["store"].as_str(), status["grant"].as_str()), (Some("file"), Some("works")), "{status}");
    assert!(refresh.iter().all(|t| !status.to_string().contains(t.as_str())), "no token in --json");

    let files = library(&env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 4, "{summary}");
    assert_eq!(stored(&server), files, "every file, byte for byte");
    let (args, received) = server.with(|s| (s.args_seen.clone(), s.received.clone()));
    assert!(args.iter().all(|a| a.is_ascii()), "every Dropbox-API-Arg is ASCII");
    assert!(received.iter().any(|r| r.route.ends_with("append_v2") && r.len > 0), "the video went in a session");
    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));

    let other = dropbox_env(&server);
    signed_in(&server, &other);
    for (path, content) in &files {
        crate::harness::write(&other.source.join(path), content);
    }
    let writes = server.with(|s| s.writes);
    let (code, summary) = other.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(0), Some(4)), "{summary}");
    assert_eq!(server.with(|s| s.writes), writes, "nothing was written again");
}

/// A name holding other content moves the photo aside; the same content
/// under its name is already present; nothing is overwritten.
#[test]
fn other_content_is_never_overwritten_and_the_same_content_is_already_present() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let same = write_photo(&env.source.join("same.jpg"), 40_000, 1);
    let mine = write_photo(&env.source.join("taken.jpg"), 40_000, 2);
    server.put("/Photos/same.jpg", &same);
    server.put("/photos/TAKEN.JPG", b"someone else's photo");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(1), Some(1)), "{summary}");
    let files = server.files();
    assert_eq!(files["/photos/TAKEN.JPG"], b"someone else's photo", "not overwritten");
    let moved: Vec<&String> = files.keys().filter(|k| k.starts_with("/Photos/taken-")).collect();
    assert_eq!(moved.len(), 1, "moved aside: {:?}", files.keys());
    assert_eq!(files[moved[0]], mine);
}

/// kill -9 while a 200 MB video is half sent, then a rerun: Dropbox is
/// asked where it is (an empty append), no byte it confirmed is sent
/// again, and the file it finishes is identical.
#[test]
fn a_killed_session_upload_resumes_without_resending_confirmed_bytes() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("long.mp4"), 200 * 1024 * 1024, 4);

    kill_mid_session(&server, &env, 40 * 1024 * 1024);
    let before = server.with(|s| s.received.len());
    let confirmed: Vec<(u64, u64)> = server.with(|s| {
        s.received.iter().filter(|r| r.accepted && r.len > 0).map(|r| (r.offset, r.offset + r.len)).collect()
    });

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let after: Vec<_> = server.with(|s| s.received[before..].to_vec());
    assert!(
        after.iter().any(|r| r.route.ends_with("append_v2") && r.len == 0),
        "Dropbox was asked where it is: {after:?}"
    );
    for r in after.iter().filter(|r| r.len > 0) {
        let overlaps = confirmed.iter().any(|&(start, end)| r.offset < end && start < r.offset + r.len);
        assert!(!overlaps, "bytes {}..{} were sent again", r.offset, r.offset + r.len);
    }
    let sent_after: u64 = after.iter().map(|r| r.len).sum();
    assert!(sent_after < content.len() as u64, "the upload resumed rather than started again");
    assert_eq!(stored(&server)["long.mp4"], content, "the file is identical");
}

/// Bytes of upload sessions Dropbox took.
fn accepted(server: &Dropbox) -> u64 {
    server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| r.len).sum())
}

/// Runs a backup and kills it (-9) once Dropbox took `bytes` of a session,
/// while its next chunk is held up (no race with the upload's end).
fn kill_mid_session(server: &Dropbox, env: &Env, bytes: u64) {
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(2), "part of the video is at Dropbox", || accepted(server) >= bytes);
    server.with(|s| s.faults.push_back(Fault::Stall { route: "upload_session/append_v2" }));
    wait_until(Duration::from_mins(1), "the next chunk is held up", || server.with(|s| s.faults.is_empty()));
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// Runs a backup and kills it (-9) while its session's finish is held up.
fn kill_at_the_finish(server: &Dropbox, env: &Env) {
    server.with(|s| s.faults.push_back(Fault::Stall { route: "upload_session/finish" }));
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(1), "the finish is held up", || server.with(|s| s.faults.is_empty()));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// A chunk Dropbox stored whose answer was lost: the next attempt learns
/// Dropbox's offset from `incorrect_offset` and sends every byte once.
#[test]
fn a_lost_answer_to_a_chunk_sends_no_byte_twice() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 30 * 1024 * 1024, 6);
    server.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload_session/append_v2" }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content);
    let received = server.with(|s| s.received.clone());
    let accepted: u64 = received.iter().filter(|r| r.accepted).map(|r| r.len).sum();
    assert_eq!(accepted, content.len() as u64, "Dropbox took every byte once");
    let sent: u64 = received.iter().map(|r| r.len).sum();
    assert_eq!(sent, content.len() as u64, "no byte was sent twice");
    assert!(received.iter().any(|r| r.len == 0 && !r.accepted), "Dropbox was asked where it is: {received:?}");
}

/// A session Dropbox forgot (after a week) starts again from the start,
/// and the file arrives whole.
#[test]
fn an_expired_session_starts_again_cleanly() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 40 * 1024 * 1024, 8);
    kill_mid_session(&server, &env, 8 * 1024 * 1024);
    server.with(crate::dropbox_server::State::expire_sessions);
    let before = server.with(|s| s.received.len());
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content, "the file is identical");
    let after = server.with(|s| s.received[before..].to_vec());
    assert!(after.iter().any(|r| r.route.ends_with("upload_session/start")), "a new session: {after:?}");
}

/// 429 with `Retry-After`: waited out, not failed.
#[test]
fn too_many_write_operations_are_waited_out() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_photo(&env.source.join("a.jpg"), 50_000, 3);
    server.with(|s| s.faults.push_back(Fault::Status { route: "files/upload", status: 429, retry_after: Some(1) }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let uploads = server.with(|s| s.requests.iter().filter(|r| r.ends_with("files/upload")).count());
    assert_eq!(uploads, 2, "refused once, then sent again");
    assert_eq!(stored(&server)["a.jpg"], content);
}

/// A sign-in revoked at Dropbox holds the destination, says what to run,
/// charges no attempt and burns no retry; signing in again lets it go on.
#[test]
fn a_revoked_sign_in_holds_the_destination_until_the_user_signs_in_again() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("first.jpg"), 30_000, 1);
    assert_eq!(env.backup().0, 0);
    server.with(crate::dropbox_server::State::revoke);
    let later = write_photo(&env.source.join("later.jpg"), 30_000, 2);
    let tokens_asked = server.with(|s| s.token_requests);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("sign in again: photosync auth dropbox"), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(server.with(|s| s.token_requests) - tokens_asked, 1, "asked once, not once per retry");
    let attempts: i64 = env.catalog().query_row("SELECT MAX(attempts) FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0, "no attempt was charged");
    let status = env.run(["auth", "dropbox", "--status"]);
    assert_eq!(status.status.code(), Some(1), "{}", stdout(&status));
    assert!(stdout(&status).contains("sign in again"), "{}", stdout(&status));

    sign_in(&server, &env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["later.jpg"], later);
}

/// In the daemon: a sign-in revoked while it runs holds the destination
/// (the reason in `status`, no attempt charged); `photosync auth` tells
/// the daemon, which carries on at once.
#[test]
fn a_sign_in_revoked_while_the_daemon_runs_holds_it_until_auth_tells_it_to_go_on() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("first.jpg"), 30_000, 1);
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_mins(1), "the first photo is uploaded", || env.count_jobs("acknowledged") == 1);
    server.with(crate::dropbox_server::State::revoke);
    let later = write_photo(&env.source.join("later.jpg"), 30_000, 2);
    daemon.wait_until(Duration::from_mins(1), "the destination is held for the sign-in", || {
        env.status()["scheduler"]["holds"].as_array().is_some_and(|holds| {
            holds.iter().any(|h| h["reason"].to_string().contains("sign in again: photosync auth"))
        })
    });
    let attempts: i64 = env.catalog().query_row("SELECT MAX(attempts) FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0, "no attempt was charged");

    let printed = sign_in(&server, &env);
    assert!(printed.contains("The running daemon carries on with it now"), "{printed}");
    daemon.wait_until(Duration::from_secs(30), "the later photo is uploaded", || env.count_jobs("acknowledged") == 2);
    assert_eq!(stored(&server)["later.jpg"], later);
}

/// The answer to a session's finish is lost (Dropbox committed the file):
/// the next attempt finds the file in place and sends nothing again.
#[test]
fn a_lost_answer_to_the_finish_sends_nothing_again() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 20 * 1024 * 1024, 12);
    server.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload_session/finish" }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content);
    assert_eq!(accepted(&server), content.len() as u64, "every byte went once");
    assert_eq!(server.with(|s| s.writes), 1, "one file written");
}

/// Killed while the finish was under way, and meanwhile another file took
/// the name: the session is finished under the next name, no byte sent
/// again, the other file untouched.
#[test]
fn a_name_taken_while_a_session_was_open_moves_the_finish_aside() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 20 * 1024 * 1024, 13);
    kill_at_the_finish(&server, &env);
    server.put("/Photos/clip.mp4", b"another clip");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let files = stored(&server);
    assert_eq!(files["clip.mp4"], b"another clip", "not overwritten");
    let moved: Vec<_> = files.iter().filter(|(name, _)| name.starts_with("clip-")).collect();
    assert_eq!(moved.len(), 1, "{:?}", files.keys());
    assert_eq!(moved[0].1, &content);
    assert_eq!(accepted(&server), content.len() as u64, "no byte was sent again");
}

/// Regression: a finish Dropbox refused leaves the session closed; the
/// next attempt's probe hears `closed`, and the session used to be dropped
/// and the whole video sent again. Now it is finished under the next name.
#[test]
fn a_session_closed_by_a_refused_finish_is_finished_not_sent_again() {
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 20 * 1024 * 1024, 14);
    kill_at_the_finish(&server, &env);
    // The name is taken meanwhile (the finish there is refused, closing the
    // session), and the look-up of the next name fails once.
    server.put("/Photos/clip.mp4", b"another clip");
    server.with(|s| s.faults.push_back(Fault::Status { route: "files/get_metadata", status: 503, retry_after: None }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let files = stored(&server);
    let moved: Vec<_> = files.iter().filter(|(name, _)| name.starts_with("clip-")).collect();
    assert_eq!(moved.len(), 1, "{:?}", files.keys());
    assert_eq!(moved[0].1, &content);
    assert_eq!(accepted(&server), content.len() as u64, "no byte was sent again");
}

/// With a keyring on the session bus (gnome-keyring's Secret Service), the
/// sign-in goes there, not to a file, and backups find it.
#[test]
fn with_a_keyring_the_sign_in_is_kept_there() {
    let bus = crate::keyring::SessionBus::start();
    let server = Dropbox::start();
    let env = dropbox_env(&server);
    env.set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    sign_in(&server, &env);
    assert!(!token_file(&env).exists(), "no token file beside a keyring");
    let status = env.run(["auth", "dropbox", "--status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("JSON");
    assert_eq!((status["store"].as_str(), status["grant"].as_str()), (Some("keyring"), Some("works")), "{status}");
    assert_eq!(status["location"], "oauth:dropbox");
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["a.jpg"], photo);
    let out = env.run(["auth", "dropbox", "--forget"]);
    assert!(stdout(&out).contains("Removed"), "{}", stdout(&out));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "nothing left to upload: {summary}");
    let status = env.run(["auth", "dropbox", "--status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(stdout(&status).contains("not signed in"), "{}", stdout(&status));
}
