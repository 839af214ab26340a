//! Against the real services, opt-in: these tests are ignored unless asked
//! for (`cargo test --test tests live_ -- --ignored`), and then they need
//! credentials in the environment and fail saying which are missing. Use a
//! throwaway account or app: each run writes into a new folder of its own
//! (`/photosync-live-<time>`) and leaves it there for you to look at.
//!
//! - Dropbox: `PHOTOSYNC_LIVE_DROPBOX_CLIENT_ID` (an App-folder app's key)
//!   and `PHOTOSYNC_LIVE_DROPBOX_REFRESH_TOKEN` (from `photosync auth`
//!   with `token_store = "file"`: the `refresh_token` in the token file).
//! - OneDrive: `PHOTOSYNC_LIVE_ONEDRIVE_CLIENT_ID` and
//!   `PHOTOSYNC_LIVE_ONEDRIVE_REFRESH_TOKEN` (likewise; Microsoft replaces
//!   it at each use but does not revoke the one replaced, so the same one
//!   serves until it expires, 90 days after the sign-in).
//! - Google Photos: `PHOTOSYNC_LIVE_GOOGLE_CLIENT_ID`,
//!   `PHOTOSYNC_LIVE_GOOGLE_CLIENT_SECRET` (a Desktop-app client of a
//!   project with the Photos Library API) and
//!   `PHOTOSYNC_LIVE_GOOGLE_REFRESH_TOKEN`. It uploads into a new album of
//!   its own; `verify --deep` cannot compare bytes there (Google keeps no
//!   hash), it checks the media items exist.
//!
//! Each backs up two photos and a 200 MB video, kills the backup (-9) once
//! part of the video is confirmed, runs it again (the upload must resume,
//! not restart: fewer bytes sent than the video's size), and proves the
//! result with `verify --deep`, which downloads every file.

use std::fs;
use std::time::Duration;

use crate::harness::{Env, quote, stdout, wait_until, write_photo, write_video};

/// The variable's value, or a failure naming it.
fn required(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!("this live test needs {name} in the environment (see tests/live.rs)");
    })
}

/// Pieces of upload sessions recorded in the catalog.
fn pieces(env: &Env) -> i64 {
    rusqlite::Connection::open_with_flags(env.state.join("catalog.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM session_pieces", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Backs up, kills, resumes and verifies against the destination `keys`
/// (its grant is `refresh_token`, kept in the file `name`.json).
fn backup_kill_resume_verify(name: &str, keys: &str, refresh_token: &str) {
    let env = Env::new();
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"1s\"\n\n[policy]\npower_supply_dir = {power}\n\n\
         [[source]]\npath = {source}\n\n[[destination]]\nname = \"{name}\"\n{keys}\ntoken_store = \"file\"\n",
        state = quote(&env.state),
        power = quote(&env.power_supply_dir()),
        source = quote(&env.source),
    );
    fs::create_dir_all(env.power_supply_dir()).expect("power folder");
    fs::write(&env.config, text).expect("config");
    let tokens = env.dir.path().join("tokens");
    fs::create_dir_all(&tokens).expect("tokens folder");
    let grant = serde_json::json!({"refresh_token": refresh_token, "signed_in_at": "2026-01-01T00:00:00Z"});
    fs::write(tokens.join(format!("{name}.json")), grant.to_string()).expect("grant");
    write_photo(&env.source.join("DCIM/IMG_0001.JPG"), 200_000, 1);
    write_photo(&env.source.join("DCIM/IMG_0002.JPG"), 300_000, 2);
    let video = write_video(&env.source.join("clip.mp4"), 200 * 1024 * 1024, 3);

    let mut child = env.command(["backup"]).spawn().expect("backup");
    wait_until(Duration::from_mins(20), "part of the video is confirmed", || pieces(&env) >= 3);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let sent = summary["bytes_uploaded"].as_u64().expect("bytes_uploaded");
    assert!(sent < video.len() as u64 + 500_000, "the video resumed: {sent} bytes sent after the kill");
    let out = env.run(["verify", "--deep", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

fn folder() -> String {
    format!("/photosync-live-{}", jiff::Timestamp::now().as_second())
}

#[test]
#[ignore = "live: needs a Dropbox app and a sign-in (see tests/live.rs)"]
fn live_dropbox_resumes_a_killed_upload() {
    let client_id = required("PHOTOSYNC_LIVE_DROPBOX_CLIENT_ID");
    let refresh = required("PHOTOSYNC_LIVE_DROPBOX_REFRESH_TOKEN");
    let keys = format!("type = \"dropbox\"\nclient_id = \"{client_id}\"\nfolder = \"{}\"", folder());
    backup_kill_resume_verify("dropbox", &keys, &refresh);
}

#[test]
#[ignore = "live: needs a OneDrive app registration and a sign-in (see tests/live.rs)"]
fn live_onedrive_resumes_a_killed_upload() {
    let client_id = required("PHOTOSYNC_LIVE_ONEDRIVE_CLIENT_ID");
    let refresh = required("PHOTOSYNC_LIVE_ONEDRIVE_REFRESH_TOKEN");
    let keys = format!("type = \"onedrive\"\nclient_id = \"{client_id}\"\nfolder = \"{}\"", folder());
    backup_kill_resume_verify("onedrive", &keys, &refresh);
}

#[test]
#[ignore = "live: needs a Google Cloud desktop client and a sign-in (see tests/live.rs)"]
fn live_google_photos_resumes_a_killed_upload() {
    let client_id = required("PHOTOSYNC_LIVE_GOOGLE_CLIENT_ID");
    // photosync reads the secret from the environment it inherits, as a user's would.
    required("PHOTOSYNC_LIVE_GOOGLE_CLIENT_SECRET");
    let refresh = required("PHOTOSYNC_LIVE_GOOGLE_REFRESH_TOKEN");
    let album = folder().trim_start_matches('/').to_owned();
    let keys = format!(
        "type = \"googlephotos\"\nclient_id = \"{client_id}\"\nclient_secret_env = \"PHOTOSYNC_LIVE_GOOGLE_CLIENT_SECRET\"\n\
         album = \"{album}\""
    );
    backup_kill_resume_verify("photos", &keys, &refresh);
}
