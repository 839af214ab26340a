//! The Google Photos destination against the fake Library API and OAuth
//! endpoints (`google_server`): the browser sign-in with the client
//! secret, resumable uploads that resume after kill -9, media items in an
//! album made once, honest receipts, 429s with Google's floor, the daily
//! quota as a hold, and a revoked sign-in.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::google_server::{CLIENT_ID, CLIENT_SECRET, Fault, Google};
use crate::harness::{Env, quote, stdout, wait_until, write_photo, write_video};
use crate::signin;

/// An environment whose one destination is `server` (chunks of 1 MiB, a
/// 1 s floor after a 429 instead of Google's 30 s).
fn google_env(server: &Google) -> Env {
    let env = Env::new();
    let url = &server.url;
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\nbase = \"1h\"\nattempts_per_run = 3\nmax_attempts = 8\n\n\
         [policy]\npower_supply_dir = {power}\n\n[[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"photos\"\ntype = \"googlephotos\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_env = \"TEST_GOOGLE_SECRET\"\nchunk_size = \"1MiB\"\nrate_limit_wait = \"1s\"\n\
         api_url = \"{url}/\"\nupload_url = \"{url}/v1/uploads\"\nauth_url = \"{url}/o/oauth2/v2/auth\"\n\
         token_url = \"{url}/token\"\n",
        state = quote(&env.state),
        power = quote(&env.power_supply_dir()),
        source = quote(&env.source),
    );
    fs::create_dir_all(env.power_supply_dir()).expect("power folder");
    fs::write(&env.config, text).expect("config");
    env.set_var("DBUS_SESSION_BUS_ADDRESS", &format!("unix:path={}", env.dir.path().join("no-session-bus").display()));
    env.set_var("TEST_GOOGLE_SECRET", CLIENT_SECRET);
    env
}

/// Adds `top` keys to the config's top level and `destination` keys to the
/// destination.
fn configure(env: &Env, top: &str, destination: &str) {
    let config = fs::read_to_string(&env.config).expect("config");
    let config = config.replacen("[retry]", &format!("{top}\n[retry]"), 1) + destination + "\n";
    fs::write(&env.config, config).expect("config");
}

/// Requests whose method and path start with `prefix`.
fn requests(server: &Google, prefix: &str) -> usize {
    server.with(|s| s.requests.iter().filter(|r| r.starts_with(prefix)).count())
}

fn signed_in(server: &Google, env: &Env) {
    signin::keep_grant(env, "photos", &server.grant());
}

/// `photosync auth photos`: the browser (played by the fake) comes back to
/// photosync's listener with the code.
fn sign_in(server: &Google, env: &Env) -> String {
    signin::auth(env, "photos", &[], |line| {
        let url = signin::address(line)?;
        let answer = signin::browser_get(&server.approve_browser(&url));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        Some(String::new())
    })
}

/// The browser sign-in, then photos and a video (in chunks) become media
/// items in the album `photosync`, made once even by a second process;
/// receipts say Google acknowledged them; `verify` finds them.
#[test]
fn a_browser_sign_in_then_every_photo_is_a_media_item_in_one_album() {
    let server = Google::start();
    let env = google_env(&server);
    let printed = sign_in(&server, &env);
    assert!(printed.contains("Signed in to Google Photos"), "{printed}");
    let mut files = BTreeMap::new();
    for i in 0..3 {
        let name = format!("IMG_{i:04}.JPG");
        files.insert(name.clone(), write_photo(&env.source.join(&name), 40_000 + i * 1_000, i as u64));
    }
    files.insert("clip.mp4".to_owned(), write_video(&env.source.join("clip.mp4"), 5 * 1024 * 1024 + 3, 7));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 4, "{summary}");
    assert_eq!(server.files(), files, "every file, byte for byte");
    let (albums, items) = server.with(|s| (s.albums.clone(), s.items.clone()));
    assert_eq!(albums.values().collect::<Vec<_>>(), ["photosync"]);
    assert!(items.values().all(|i| i.albums.len() == 1), "every item is in the album");
    let chunks = server.with(|s| s.received.iter().filter(|r| r.len > 0).count());
    assert!(chunks > 6, "the video went up in chunks: {chunks}");
    let versions: Vec<String> = env
        .catalog()
        .prepare("SELECT receipt_version FROM jobs")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert!(versions.iter().all(|v| v == "google-acknowledged"), "{versions:?}");
    let jobs = stdout(&env.run(["jobs", "--state", "acknowledged"]));
    assert_eq!(jobs.matches("acknowledged by the service as").count(), 4, "not called verified: {jobs}");
    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));

    // A new run (a new process, nothing remembered) finds the album.
    write_photo(&env.source.join("later.jpg"), 30_000, 9);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.with(|s| s.albums.len()), 1, "no second album");
}

/// kill -9 while a 200 MB video is half sent: Google is asked how much it
/// holds (`query`), no byte it took is sent again, the item is identical.
#[test]
fn a_killed_upload_resumes_from_what_google_holds() {
    let server = Google::start();
    let env = google_env(&server);
    let config =
        fs::read_to_string(&env.config).expect("config").replace("chunk_size = \"1MiB\"", "chunk_size = \"8MiB\"");
    fs::write(&env.config, config).expect("config");
    signed_in(&server, &env);
    let content = write_video(&env.source.join("long.mp4"), 200 * 1024 * 1024, 4);
    let accepted = || server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| r.len).sum::<u64>());
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(2), "part of the video is at Google", || accepted() >= 40 * 1024 * 1024);
    server.with(|s| s.faults.push_back(Fault::Stall { route: "upload" }));
    wait_until(Duration::from_mins(1), "the next chunk is held up", || server.with(|s| s.faults.is_empty()));
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let before = server.with(|s| s.received.len());
    let confirmed: Vec<(u64, u64)> =
        server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| (r.offset, r.offset + r.len)).collect());

    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let after = server.with(|s| s.received[before..].to_vec());
    let session = server.with(|s| s.received[0].session.clone());
    assert!(after.iter().all(|r| r.session == session), "the same session carried on");
    for r in &after {
        let overlaps = confirmed.iter().any(|&(start, end)| r.offset < end && start < r.offset + r.len);
        assert!(!overlaps, "bytes {}..{} were sent again", r.offset, r.offset + r.len);
    }
    assert!(after.iter().map(|r| r.len).sum::<u64>() < content.len() as u64, "resumed, not started again");
    assert_eq!(server.files()["long.mp4"], content, "the item is identical");
}

/// Many uploads at once share their `batchCreate`s: at most 50 items per
/// request, one request at a time, each item's result read on its own (a
/// refused one fails alone); small files go up in one request each, and
/// `verify` asks about 50 media items per request.
#[test]
fn media_items_are_made_in_shared_batches_one_request_at_a_time() {
    let server = Google::start();
    let env = google_env(&server);
    configure(&env, "max_concurrent = 60", "batch_wait = \"30s\"");
    signed_in(&server, &env);
    let mut files = BTreeMap::new();
    for i in 0..120 {
        let name = if i % 40 == 7 { format!("BAD_{i:04}.JPG") } else { format!("IMG_{i:04}.JPG") };
        files.insert(name.clone(), write_photo(&env.source.join(&name), 2_000 + i, i as u64));
    }
    server.with(|s| s.refuse_names.push("BAD_".to_owned()));
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["failed"].as_u64()), (Some(117), Some(3)), "{summary}");
    assert!(summary.to_string().contains("unsupported media"), "{summary}");
    files.retain(|name, _| !name.starts_with("BAD_"));
    assert_eq!(server.files(), files, "every other file, byte for byte");
    let (batches, most_at_once) = server.with(|s| (s.batches.clone(), s.most_creating));
    assert_eq!(batches.iter().sum::<usize>(), 120, "each token asked about once: {batches:?}");
    assert!(batches.iter().all(|&n| n <= 50), "{batches:?}");
    assert!(batches.len() <= 20, "tokens share their requests: {batches:?}");
    assert_eq!(most_at_once, 1, "one batchCreate at a time");
    assert_eq!(requests(&server, "POST /v1/uploads"), 120, "one request per small file");
    assert_eq!(requests(&server, "POST upload"), 0, "no upload session for a small file");

    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(requests(&server, "GET /v1/mediaItems:batchGet"), 3, "117 items, 50 per request");
    assert_eq!(requests(&server, "GET /v1/mediaItems/"), 0, "none asked about alone");
    let gone: Vec<String> = server.with(|s| s.items.keys().take(2).cloned().collect());
    server.with(|s| gone.iter().for_each(|id| drop(s.items.remove(id))));
    let out = env.run(["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let missing: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["kind"] == "missing")
        .map(|p| p["key"].as_str().expect("key"))
        .collect();
    assert_eq!(missing.len(), 2, "{report}");
    assert!(gone.iter().all(|id| missing.contains(&id.as_str())), "{gone:?} {missing:?}");
}

/// One item that spoils a shared `batchCreate` (a 400 for the whole
/// request) fails alone: the others are asked about one by one and made.
#[test]
fn one_spoiling_item_does_not_fail_its_whole_batch() {
    let server = Google::start();
    let env = google_env(&server);
    configure(&env, "max_concurrent = 8", "");
    signed_in(&server, &env);
    for i in 0..7 {
        write_photo(&env.source.join(format!("IMG_{i}.JPG")), 10_000 + i, i as u64);
    }
    write_photo(&env.source.join("SPOILER.JPG"), 12_345, 99);
    server.with(|s| s.spoiling_names.push("SPOILER".to_owned()));
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["failed"].as_u64()), (Some(7), Some(1)), "{summary}");
    assert_eq!(server.with(|s| s.items.len()), 7);
}

/// Paused while their media items were being asked for (two photos in one
/// batch: one job sends it, the other waits for its answer): each answer
/// is waited for rather than thrown away (asking again with a used token
/// would fail the photo as "Google may hold it already").
#[test]
fn a_pause_during_a_batch_create_keeps_its_answers() {
    let server = Google::start();
    let env = google_env(&server);
    configure(&env, "settle = \"200ms\"\nmax_concurrent = 2", "batch_wait = \"30s\"");
    signed_in(&server, &env);
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 4);
    let other = write_photo(&env.source.join("b.jpg"), 31_000, 5);
    server.with(|s| s.faults.push_back(Fault::Delay { route: "mediaItems:batchCreate", ms: 1_500 }));
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_mins(1), "the media item is being asked for", || {
        requests(&server, "POST /v1/mediaItems:batchCreate") == 1
    });
    assert!(env.run(["pause"]).status.success());
    assert!(env.run(["resume"]).status.success());
    daemon.wait_until(Duration::from_mins(1), "the photos are backed up", || env.count_jobs("acknowledged") == 2);
    assert_eq!(env.count_jobs("failed"), 0);
    assert_eq!(server.with(|s| s.batches.clone()), [2], "both asked about once, together");
    assert_eq!(server.files()["a.jpg"], photo);
    assert_eq!(server.files()["b.jpg"], other);
}

/// A receipt whose id spoils a shared `mediaItems:batchGet` (a 400 for
/// the whole request) leaves only itself unchecked: a media item deleted
/// from Google Photos is still found missing.
#[test]
fn one_unreadable_id_does_not_leave_its_whole_batch_unchecked() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    for i in 0..3 {
        write_photo(&env.source.join(format!("IMG_{i}.JPG")), 10_000 + i, i as u64);
    }
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let ids: Vec<String> = server.with(|s| s.items.keys().cloned().collect());
    server.with(|s| drop(s.items.remove(&ids[0])));
    let catalog = rusqlite::Connection::open(env.state.join("catalog.sqlite")).expect("catalog");
    catalog
        .execute(
            "UPDATE jobs SET receipt_key = CAST('not an id!' AS BLOB) WHERE receipt_key = CAST(?1 AS BLOB)",
            [&ids[1]],
        )
        .expect("spoil a receipt");
    drop(catalog);
    let out = env.run(["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds: BTreeMap<String, String> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| (p["key"].as_str().expect("key").to_owned(), p["kind"].as_str().expect("kind").to_owned()))
        .collect();
    assert_eq!(kinds.get(&ids[0]).map(String::as_str), Some("missing"), "{report}");
    assert_eq!(kinds.get("not an id!").map(String::as_str), Some("unchecked"), "{report}");
    assert_eq!(report["held"], 1, "{report}");
}

/// A second machine (its own catalog) backing up the same photos finds
/// the album among the app's own, and Google gives back the media items
/// it has: no second album, no second item.
#[test]
fn a_second_machine_makes_no_second_album_or_media_item() {
    let server = Google::start();
    let first = google_env(&server);
    signed_in(&server, &first);
    let second = google_env(&server);
    signed_in(&server, &second);
    for i in 0..4 {
        let name = format!("IMG_{i:04}.JPG");
        write_photo(&first.source.join(&name), 20_000 + i, i as u64);
        write_photo(&second.source.join(&name), 20_000 + i, i as u64);
    }
    let (code, summary) = first.backup();
    assert_eq!(code, 0, "{summary}");
    let items = server.with(|s| s.items.clone());
    let (code, summary) = second.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.with(|s| s.items.len()), items.len(), "no second media item");
    assert_eq!(requests(&server, "POST /v1/albums"), 1, "no second album");
    assert_eq!(requests(&server, "GET /v1/albums (listing)"), 2, "each machine looked its album up once");
    let keys = |env: &Env| -> Vec<Vec<u8>> {
        env.catalog()
            .prepare("SELECT receipt_key FROM jobs ORDER BY receipt_key")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert_eq!(keys(&first), keys(&second), "the same media items");
}

/// An album nearly at Google's 20,000 items: the next photos go into
/// `photosync (2)`, made once.
#[test]
fn a_full_album_is_followed_by_a_second() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    // Years later, on a new machine (its own catalog), the album is full.
    server.with(|s| s.album_items_before = 19_950);
    let later = google_env(&server);
    signed_in(&server, &later);
    for i in 0..3 {
        write_photo(&later.source.join(format!("b{i}.jpg")), 30_000, 10 + i);
    }
    let (code, summary) = later.backup();
    assert_eq!(code, 0, "{summary}");
    let (albums, items) = server.with(|s| (s.albums.clone(), s.items.clone()));
    let mut titles: Vec<&String> = albums.values().collect();
    titles.sort();
    assert_eq!(titles, ["photosync", "photosync (2)"]);
    let second = albums.iter().find(|(_, t)| *t == "photosync (2)").map(|(id, _)| id.clone()).expect("made");
    let in_second = items.values().filter(|i| i.albums.contains(&second)).count();
    assert_eq!(in_second, 3, "the new photos went into the second album");
}

/// A file over Google's size limit is refused with a 413: it fails with
/// Google's reason, and nothing is sent again and again.
#[test]
fn an_oversize_video_fails_with_googles_reason() {
    let server = Google::start();
    server.with(|s| s.max_size = 2 * 1024 * 1024);
    let env = google_env(&server);
    signed_in(&server, &env);
    write_video(&env.source.join("long.mp4"), 3 * 1024 * 1024, 6);
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 6);
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(summary.to_string().contains("max file size"), "{summary}");
    assert_eq!(requests(&server, "POST /v1/uploads"), 2, "the video's start was asked once");
    assert_eq!(server.files()["a.jpg"], photo, "the photo went up");
}

/// `status` says how much of the daily quota this machine used, how many
/// files wait, and how many days they take at the rate seen today.
#[test]
fn status_tells_the_daily_quota_and_how_long_the_backlog_takes() {
    let server = Google::start();
    let env = google_env(&server);
    configure(&env, "settle = \"200ms\"", "daily_quota = 40");
    signed_in(&server, &env);
    for i in 0..4 {
        write_photo(&env.source.join(format!("IMG_{i}.JPG")), 10_000 + i, i as u64);
    }
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_mins(1), "the photos are backed up", || env.count_jobs("acknowledged") == 4);
    let sent = || server.with(|s| s.requests.iter().filter(|r| !r.starts_with("POST /token")).count() as u64);
    let quota = env.status()["scheduler"]["quotas"][0].clone();
    assert_eq!(quota["destination"], "photos", "{quota}");
    assert_eq!(quota["used"].as_u64(), Some(sent()), "every request counted: {quota}");
    assert_eq!(quota["limit"], 40, "{quota}");
    let per_file = quota["per_file"].as_f64().expect("a rate");
    assert!((per_file - sent() as f64 / 4.0).abs() < 1e-9, "{quota}");

    assert!(env.run(["pause"]).status.success());
    for i in 0..100 {
        write_photo(&env.source.join(format!("later_{i}.jpg")), 5_000 + i, 100 + i as u64);
    }
    daemon.wait_until(Duration::from_mins(1), "the new photos wait", || {
        env.status()["scheduler"]["quotas"][0]["files_waiting"] == 100
    });
    let quota = env.status()["scheduler"]["quotas"][0].clone();
    let needed = (100.0 * per_file).ceil() as u64;
    let left = 40 - quota["used"].as_u64().expect("used");
    assert_eq!(quota["days"].as_u64(), Some(1 + (needed - left).div_ceil(40)), "{quota}");
    let text = stdout(&env.run(["status"]));
    assert!(text.contains("requests of the daily quota used today"), "{text}");
    assert!(text.contains("100 files waiting: about"), "{text}");
    assert!(text.contains("backed up once the service acknowledges it"), "{text}");
}

/// A 429 without `Retry-After` waits at least `rate_limit_wait`, and is no failure.
#[test]
fn a_rate_limit_is_waited_out_without_charging_an_attempt() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 1);
    server.with(|s| {
        s.faults.push_back(Fault::Status { route: "mediaItems:batchCreate", status: 429, retry_after: None });
    });
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(server.files()["a.jpg"], photo);
    let creates = server.with(|s| s.batches.len());
    assert_eq!(creates, 1, "one batchCreate went through after the refusal");
    let attempts: i64 = env.catalog().query_row("SELECT attempts FROM jobs", [], |r| r.get(0)).expect("attempts");
    assert_eq!(attempts, 0, "a 429 says nothing about the file: no attempt charged");
}

/// The daily quota holds the destination (exit 75, the reason said), and
/// fails nothing.
#[test]
fn the_daily_quota_holds_the_destination() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    server.with(|s| s.faults.push_back(Fault::DailyQuota { route: "v1/uploads" }));
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("daily request quota"), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

/// The daily quota refusing a `batchCreate`: nothing was made, so when
/// the upload token has expired by the next day the file is sent again,
/// rather than failed as "Google may hold it already".
#[test]
fn a_batch_refused_by_the_daily_quota_is_sent_again_the_next_day() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 1);
    server.with(|s| s.faults.push_back(Fault::DailyQuota { route: "mediaItems:batchCreate" }));
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    // A day later: the token has expired.
    server.with(|s| s.tokens.clear());
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files()["a.jpg"], photo);
    assert_eq!(requests(&server, "POST /v1/uploads"), 2, "sent again");
}

/// A revoked sign-in holds the destination with what to run.
#[test]
fn a_revoked_sign_in_holds_the_destination() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    server.with(crate::google_server::State::revoke);
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("sign in again: photosync auth photos"), "{summary}");
}

/// Killed while its media item was being made (the request sent, its
/// answer never seen), and the upload token no longer works: Google may
/// hold the item, so the file is not sent again on its own (that could
/// make a second one); it fails saying so, and `photosync retry` sends it.
#[test]
fn a_media_item_whose_answer_was_lost_is_not_made_twice_silently() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    let photo = write_photo(&env.source.join("a.jpg"), 60_000, 2);
    server.with(|s| s.faults.push_back(Fault::Stall { route: "mediaItems:batchCreate" }));
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(1), "the media item is held up", || server.with(|s| s.faults.is_empty()));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    server.with(|s| s.tokens.clear());
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert!(summary.to_string().contains("may hold it already"), "{summary}");
    assert_eq!(server.with(|s| s.uploads.len()), 1, "not sent again on its own");
    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files()["a.jpg"], photo);
    assert_eq!(requests(&server, "POST /v1/albums"), 1, "the album made before the kill was remembered");
    assert_eq!(requests(&server, "GET /v1/albums (listing)"), 1, "and not even looked up again");
}

/// A file Google refuses right after its upload fails with Google's
/// reason, once, instead of being sent again and again.
#[test]
fn a_file_google_refuses_fails_with_its_reason() {
    let server = Google::start();
    server.with(|s| s.refuse_items = true);
    let env = google_env(&server);
    signed_in(&server, &env);
    write_photo(&env.source.join("a.jpg"), 30_000, 3);
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(summary.to_string().contains("unsupported media"), "{summary}");
    assert_eq!(server.with(|s| s.uploads.len()), 1, "sent once");
}

/// Every byte reached Google but the finalize did not: after the restart
/// the finalize goes alone, nothing is sent again.
#[test]
fn an_upload_holding_every_byte_is_finalized_without_sending_again() {
    let server = Google::start();
    let env = google_env(&server);
    signed_in(&server, &env);
    let content = write_video(&env.source.join("clip.mp4"), 6 * 1024 * 1024, 5);
    let accepted = || server.with(|s| s.received.iter().filter(|r| r.accepted).map(|r| r.len).sum::<u64>());
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("backup");
    wait_until(Duration::from_mins(1), "part of the video is at Google", || accepted() >= 1024 * 1024);
    server.with(|s| s.faults.push_back(Fault::Stall { route: "upload" }));
    wait_until(Duration::from_mins(1), "the next chunk is held up", || server.with(|s| s.faults.is_empty()));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    // Google got the rest meanwhile (the answers were what was lost).
    server.with(|s| s.uploads.values_mut().next().expect("the session").bytes.clone_from(&content));
    let before = server.with(|s| s.received.len());
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let after = server.with(|s| s.received[before..].to_vec());
    assert_eq!(after.iter().map(|r| r.len).sum::<u64>(), 0, "nothing sent again: {after:?}");
    assert_eq!(server.files()["clip.mp4"], content);
}

/// Requests per photo, what Google's daily quota is counted in: one plain
/// upload per photo, its share of a `batchCreate` (as many tokens as
/// uploads run at once), a session and its chunks per big video, and a
/// few per run (the check, the album). `bench/google_requests.py` runs this
/// for 1,000 photos (`PHOTOSYNC_BENCH_PHOTOS`, `PHOTOSYNC_BENCH_CONCURRENT`)
/// and reports the figures it prints.
#[test]
fn requests_per_photo_stay_near_one() {
    let number = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (photos, concurrent) = (number("PHOTOSYNC_BENCH_PHOTOS", 100), number("PHOTOSYNC_BENCH_CONCURRENT", 4));
    let server = Google::start();
    let env = google_env(&server);
    // A tenth of a second for the scheduler's next uploads to join a batch.
    configure(&env, &format!("max_concurrent = {concurrent}"), "batch_wait = \"1s\"");
    signed_in(&server, &env);
    for i in 0..photos {
        write_photo(&env.source.join(format!("{:03}/IMG_{i:05}.JPG", i / 100)), 20_000 + (i * 7919) % 80_000, i as u64);
    }
    // Two videos of 3.5 chunks: a session, 4 chunks.
    for i in 0..2 {
        write_video(&env.source.join(format!("VID_{i}.MP4")), 3 * 1024 * 1024 + 512 * 1024, 900 + i as u64);
    }
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let files = photos + 2;
    assert_eq!(server.with(|s| s.items.len()), files);
    let by_kind = server.with(|s| {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for request in s.requests.iter().filter(|r| !r.starts_with("POST /token")) {
            *kinds.entry(request.clone()).or_default() += 1;
        }
        kinds
    });
    let total: usize = by_kind.values().sum();
    let batches = server.with(|s| s.batches.clone());
    println!(
        "BENCH {}",
        serde_json::json!({
            "photos": photos, "videos": 2, "max_concurrent": concurrent, "requests": total,
            "requests_per_file": total as f64 / files as f64, "batch_creates": batches.len(),
            "largest_batch": batches.iter().max(), "by_kind": by_kind,
        })
    );
    // Photos: one upload each and a share of a batch; videos: a start and
    // 4 chunks each; the run: a check, an album listing and its making.
    let most = photos + files.div_ceil(concurrent) + 2 * 5 + 3;
    assert!(total <= most, "{total} requests for {files} files (at most {most}): {by_kind:?}");
}
