//! The OneDrive destination against the fake Graph and identity platform
//! (`onedrive_server`): the device-code and browser sign-ins, upload
//! sessions of 320 KiB-multiple fragments sent without the token that
//! resume after kill -9, dedup by QuickXorHash, names that move aside,
//! throttling, rotated refresh tokens, and a revoked sign-in.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, quote, stdout, wait_until, write_photo, write_video};
use crate::onedrive_server::{CLIENT_ID, Fault, OneDrive};
use crate::signin;

/// An environment whose one destination is `server`, its grant in a file
/// (no keyring answers: the session bus is absent); fragments of 1280 KiB.
fn onedrive_env(server: &OneDrive) -> Env {
    let env = Env::new();
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\nbase = \"1h\"\nattempts_per_run = 3\nmax_attempts = 8\n\n\
         [policy]\npower_supply_dir = {power}\n\n[[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"onedrive\"\ntype = \"onedrive\"\nclient_id = \"{CLIENT_ID}\"\nfolder = \"/Backup\"\n\
         fragment_size = \"1280KiB\"\ngraph_url = \"{url}/v1.0/\"\nlogin_url = \"{url}/\"\n",
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

/// The refresh token kept in the token file.
fn kept_refresh_token(env: &Env) -> String {
    let text = fs::read_to_string(signin::grant_file(env, "onedrive")).expect("token file");
    let grant: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    grant["refresh_token"].as_str().expect("refresh token").to_owned()
}

/// Signs in as if the user had.
fn signed_in(server: &OneDrive, env: &Env) {
    signin::keep_grant(env, "onedrive", &server.grant());
}

/// Runs `photosync auth onedrive ARGS`, calling `user` with each line it
/// prints until `user` says it acted; returns everything printed.
fn auth(env: &Env, args: &[&str], mut user: impl FnMut(&str) -> bool) -> String {
    signin::auth(env, "onedrive", args, |line| user(line).then(String::new))
}

fn library(env: &Env) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (i, name) in ["IMG_0001.JPG", "IMG_0002.JPG", "what: a day?.jpg"].iter().enumerate() {
        let content = write_photo(&env.source.join("DCIM").join(name), 30_000 + i * 1_000, i as u64);
        files.insert(format!("DCIM/{name}"), content);
    }
    files.insert("clip.mp4".into(), write_video(&env.source.join("clip.mp4"), 5 * 1024 * 1024 + 7, 9));
    files
}

/// What the fake holds below `/Backup`, by path below it.
fn stored(server: &OneDrive) -> BTreeMap<String, Vec<u8>> {
    server
        .files()
        .into_iter()
        .filter_map(|(path, bytes)| path.strip_prefix("/Backup/").map(|p| (p.to_owned(), bytes)))
        .collect()
}

/// The device-code sign-in, then a backup: every file in fragments sent
/// without the access token, a name with `:` and `?` escaped, `verify
/// --deep` reads them back; a second machine uploads nothing.
#[test]
fn a_device_code_sign_in_then_every_photo_arrives_and_a_second_machine_uploads_nothing() {
    let server = OneDrive::start();
    server.with(|s| {
        s.device_interval = 1;
        s.slow_downs = 1;
    });
    let env = onedrive_env(&server);
    let printed = auth(&env, &[], |line| {
        let Some(code) = server.pending_user_code() else { return false };
        if !line.contains(&code) {
            return false;
        }
        server.approve_device(&code);
        true
    });
    assert!(printed.contains("Signed in to OneDrive"), "{printed}");
    let status = env.run(["auth", "onedrive", "--status", "--json"]);
    assert!(status.status.success(), "{}", stdout(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("JSON");
    assert_eq!((status["store"].as_str(), status["grant"].as_str()), (Some("file"), Some("works")), "{status}");

    let files = library(&env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 4, "{summary}");
    let mut expected = files.clone();
    let odd = expected.remove("DCIM/what: a day?.jpg").expect("odd name");
    expected.insert("DCIM/what%3A a day%3F.jpg".into(), odd);
    assert_eq!(stored(&server), expected, "every file, byte for byte");
    let received = server.with(|s| s.received.clone());
    assert!(received.iter().all(|r| !r.authorization), "no fragment carried the token");
    assert!(received.iter().filter(|r| r.accepted).count() > 4, "the video went in several fragments");
    let out = env.run(["verify", "--deep", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));

    let other = onedrive_env(&server);
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

/// The browser sign-in: photosync listens on 127.0.0.1, the browser comes
/// back with the code, and the grant works.
#[test]
fn a_browser_sign_in_comes_back_to_the_loopback_listener() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    let printed = auth(&env, &["--browser"], |line| {
        let Some(url) = signin::address(line) else { return false };
        let redirect = server.approve_browser(&url);
        // Regression: a connection that sends nothing (a browser's spare
        // connection, a port scan) held up the listener for ten minutes.
        let port: u16 = redirect["http://localhost:".len()..].split('/').next().expect("port").parse().expect("port");
        let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let answer = signin::browser_get(&redirect);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("has the answer"), "{answer}");
        true
    });
    assert!(printed.contains("Signed in to OneDrive"), "{printed}");
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 5);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["a.jpg"], photo);
}

/// Microsoft replaces the refresh token at every use: the new one is kept
/// before it is needed, so the next run signs in with it even where the
/// old one no longer works.
#[test]
fn a_rotated_refresh_token_is_kept() {
    let server = OneDrive::start();
    server.with(|s| s.old_refresh_tokens_valid = false);
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let first = kept_refresh_token(&env);
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    assert_eq!(env.backup().0, 0);
    let second = kept_refresh_token(&env);
    assert_ne!(first, second, "the rotated token replaced the old one");
    write_photo(&env.source.join("b.jpg"), 30_000, 2);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server).len(), 2);
}

/// Bytes of upload sessions Graph took.
fn accepted(server: &OneDrive) -> u64 {
    server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| r.len).sum())
}

/// Runs a backup and kills it (-9) once OneDrive took `bytes` of a
/// session, while its next fragment is held up.
fn kill_mid_session(server: &OneDrive, env: &Env, bytes: u64) {
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(2), "part of the video is at OneDrive", || accepted(server) >= bytes);
    server.with(|s| s.faults.push_back(Fault::Stall { route: "upload" }));
    wait_until(Duration::from_mins(1), "the next fragment is held up", || server.with(|s| s.faults.is_empty()));
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// kill -9 while a 200 MB video is half sent, then a rerun: Graph is asked
/// which bytes it expects, no byte it took is sent again, the file is
/// identical.
#[test]
fn a_killed_upload_resumes_where_onedrive_is() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    let config = fs::read_to_string(&env.config).expect("config").replace("1280KiB", "10MiB");
    fs::write(&env.config, config).expect("config");
    signed_in(&server, &env);
    let content = write_video(&env.source.join("long.mp4"), 200 * 1024 * 1024, 4);
    kill_mid_session(&server, &env, 40 * 1024 * 1024);
    let before = server.with(|s| s.received.len());
    let confirmed: Vec<(u64, u64)> =
        server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| (r.start, r.start + r.len)).collect());
    let requests_before = server.with(|s| s.requests.len());

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let requests: Vec<String> = server.with(|s| s.requests[requests_before..].to_vec());
    assert!(requests.iter().any(|r| r.starts_with("GET upload")), "Graph was asked where it is: {requests:?}");
    let after = server.with(|s| s.received[before..].to_vec());
    for r in &after {
        let overlaps = confirmed.iter().any(|&(start, end)| r.start < end && start < r.start + r.len);
        assert!(!overlaps, "bytes {}..{} were sent again", r.start, r.start + r.len);
    }
    assert!(after.iter().map(|r| r.len).sum::<u64>() < content.len() as u64, "resumed, not started again");
    assert_eq!(stored(&server)["long.mp4"], content, "the file is identical");
}

/// A name holding other content moves the photo aside; the same content is
/// already present; nothing is overwritten.
#[test]
fn other_content_is_never_overwritten_and_the_same_content_is_already_present() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let same = write_photo(&env.source.join("same.jpg"), 40_000, 1);
    let mine = write_photo(&env.source.join("taken.jpg"), 40_000, 2);
    server.put("/Backup/same.jpg", &same);
    server.put("/backup/TAKEN.JPG", b"someone else's photo");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(1), Some(1)), "{summary}");
    let files = server.files();
    assert_eq!(files["/backup/TAKEN.JPG"], b"someone else's photo", "not overwritten");
    let moved: Vec<_> = files.iter().filter(|(k, _)| k.to_lowercase().starts_with("/backup/taken-")).collect();
    assert_eq!(moved.len(), 1, "moved aside: {:?}", files.keys());
    assert_eq!(moved[0].1, &mine);
}

/// 429 and 503 with `Retry-After`: waited out, not failed.
#[test]
fn throttling_is_waited_out() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let content = write_photo(&env.source.join("a.jpg"), 50_000, 3);
    server.with(|s| {
        s.faults.push_back(Fault::Status { route: "upload", status: 503, retry_after: Some(1) });
        s.faults.push_back(Fault::Status { route: "createUploadSession", status: 429, retry_after: Some(1) });
    });
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(stored(&server)["a.jpg"], content);
    assert!(server.with(|s| s.faults.is_empty()), "both refusals were met");
}

/// A sign-in Microsoft revoked holds the destination with what to run.
#[test]
fn a_revoked_sign_in_holds_the_destination() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    server.with(crate::onedrive_server::State::revoke);
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("sign in again: photosync auth onedrive"), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

/// A fragment OneDrive took whose answer was lost: the next attempt asks
/// which bytes it expects and sends every byte once.
#[test]
fn a_lost_answer_to_a_fragment_sends_no_byte_twice() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 6 * 1024 * 1024 + 11, 6);
    server.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload" }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content);
    let sent: u64 = server.with(|s| s.received.iter().map(|r| r.len).sum());
    assert_eq!(sent, content.len() as u64, "no byte was sent twice");
    assert!(server.with(|s| s.requests.iter().any(|r| r == "GET upload")), "OneDrive was asked where it is");
}

/// A session OneDrive forgot starts again in a new session, and the file
/// arrives whole.
#[test]
fn an_expired_session_starts_again_cleanly() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 30 * 1024 * 1024, 8);
    kill_mid_session(&server, &env, 5 * 1024 * 1024);
    let first = server.with(|s| s.received[0].session.clone());
    server.with(crate::onedrive_server::State::expire_sessions);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content, "the file is identical");
    let last = server.with(|s| s.received.last().map(|r| r.session.clone()));
    assert_ne!(last, Some(first), "a new session");
}

/// A job whose file was deleted after its upload was cut short is
/// cancelled, and its session deleted at OneDrive (it would block the name).
#[test]
fn the_session_of_a_deleted_file_is_deleted() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let big = env.source.join("gone.mp4");
    write_video(&big, 20 * 1024 * 1024, 6);
    // Another photo stays: a source that empties completely looks unmounted.
    let kept = write_photo(&env.source.join("kept.jpg"), 2_000, 7);
    kill_mid_session(&server, &env, 3 * 1024 * 1024);
    fs::remove_file(&big).expect("delete the source");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["cancelled"], 1, "{summary}");
    assert!(server.with(|s| s.requests.iter().any(|r| r == "DELETE upload")), "the session was deleted");
    assert!(server.with(|s| s.sessions.is_empty()));
    assert_eq!(stored(&server), BTreeMap::from([("kept.jpg".to_owned(), kept)]));
}

/// Where Graph leaves the QuickXorHash out, files are read back: stored,
/// found already present by a second machine, and verified.
#[test]
fn without_hashes_from_graph_files_are_read_back() {
    let server = OneDrive::start();
    server.with(|s| s.omit_hashes = true);
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let photo = write_photo(&env.source.join("a.jpg"), 50_000, 4);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["a.jpg"], photo);
    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let other = onedrive_env(&server);
    signed_in(&server, &other);
    crate::harness::write(&other.source.join("a.jpg"), &photo);
    let (code, summary) = other.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 1, "{summary}");
    let downloads = server.with(|s| s.requests.iter().filter(|r| r.starts_with("GET /download/")).count());
    assert!(downloads >= 3, "stored, verified and found by reading back: {downloads}");
}

/// Regression: a download redirect relative to Graph's address (as HTTP
/// allows) failed `verify --deep` ("relative URL without a base").
#[test]
fn a_relative_download_redirect_is_followed() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("a.jpg"), 20_000, 9);
    assert_eq!(env.backup().0, 0);
    let out = env.run(["verify", "--deep", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(server.with(|s| s.requests.iter().any(|r| r.starts_with("GET /download/"))), "read back");
}

/// Regression: a session that held every byte without committing them (a
/// refused last fragment, a full drive) was resumed with a 0-byte
/// fragment, which Graph refuses: the job failed for good. Now the session
/// is deleted and the file sent again.
#[test]
fn a_session_holding_every_byte_uncommitted_starts_again() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, 21);
    kill_mid_session(&server, &env, 2 * 1024 * 1024);
    // Graph holds all of it, uncommitted.
    server.with(|s| {
        let session = s.sessions.values_mut().next().expect("the session");
        session.bytes.clone_from(&content);
        session.total = Some(content.len() as u64);
    });
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content);
    assert!(server.with(|s| s.requests.iter().any(|r| r == "DELETE upload")), "the stuck session was deleted");
}

/// Regression: an upload address whose own authorization expired (401, as
/// work and school drives answer after a day) failed the job for good. Now
/// the session starts again.
#[test]
fn an_upload_address_that_expired_starts_a_new_session() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 4 * 1024 * 1024, 22);
    server.with(|s| s.faults.push_back(Fault::Status { route: "upload", status: 401, retry_after: None }));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stored(&server)["clip.mp4"], content);
    let created = server.with(|s| s.requests.iter().filter(|r| r.ends_with(":/createUploadSession")).count());
    assert_eq!(created, 2, "a new session after the dead one");
    assert!(server.with(|s| s.requests.iter().any(|r| r == "DELETE upload")), "the dead one was let go");
}

/// Tokens and upload addresses (capabilities) never reach the output, even
/// with every crate's debug log on.
#[test]
fn no_token_or_upload_address_is_printed() {
    let server = OneDrive::start();
    let env = onedrive_env(&server);
    signed_in(&server, &env);
    write_video(&env.source.join("clip.mp4"), 3 * 1024 * 1024, 23);
    server.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload" }));
    // Every crate's debug log, the HTTP client's too.
    env.set_var("RUST_LOG", "debug");
    let out = env.run(["backup", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let printed = format!("{}{}", stdout(&out), crate::harness::stderr(&out));
    assert!(printed.contains("DEBUG"), "the debug log was on: {printed}");
    let secrets: Vec<String> = server.with(|s| {
        let mut all: Vec<String> = s.refresh_tokens.keys().chain(s.access_tokens.keys()).cloned().collect();
        all.push("tempauth".into());
        all
    });
    for secret in secrets {
        assert!(!printed.contains(&secret), "{secret} was printed");
    }
}
