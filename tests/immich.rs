//! The Immich destination against the fake server (`immich_server`), as
//! Immich 2.x and 3.x.

use std::fs;

use crate::harness::{Env, quote, write_photo, write_video};
use crate::immich_server::{API_KEY, Immich};

/// An environment whose one destination is `server`.
fn immich_env(server: &Immich) -> Env {
    let env = Env::new();
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\nbase = \"1h\"\nattempts_per_run = 3\nmax_attempts = 8\n\n[policy]\npower_supply_dir = {power}\n\n\
         [[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"immich\"\ntype = \"immich\"\nurl = \"{url}\"\napi_key_env = \"TEST_IMMICH_KEY\"\n",
        state = quote(&env.state),
        power = quote(&env.power_supply_dir()),
        source = quote(&env.source),
        url = server.url,
    );
    fs::create_dir_all(env.power_supply_dir()).expect("power folder");
    fs::write(&env.config, text).expect("config");
    env.set_var("TEST_IMMICH_KEY", API_KEY);
    env
}

/// A few photos and a video, by file name.
fn library(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..3 {
        let name = format!("IMG_{i:04}.JPG");
        files.push((name.clone(), write_photo(&env.source.join("DCIM").join(&name), 20_000 + i * 1_000, i as u64)));
    }
    files.push(("clip.mp4".into(), write_video(&env.source.join("clip.mp4"), 3 * 1024 * 1024, 77)));
    files
}

/// Immich 3.x (strict: a field 3.x does not know is refused): the photos
/// arrive byte for byte, without 2.x's device fields and with dates that
/// carry an offset; `verify` finds them; a second machine (another
/// catalog) backing up the same photos uploads nothing and says so.
#[test]
fn immich_3_gets_every_photo_and_a_second_machine_uploads_nothing() {
    let server = Immich::start(3);
    server.with(|s| s.strict = true);
    let env = immich_env(&server);
    let files = library(&env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 4, "{summary}");
    assert_eq!(server.files(), files.iter().cloned().collect(), "every file, byte for byte");
    let uploads = server.with(|s| s.uploads.clone());
    for fields in &uploads {
        assert!(!fields.contains_key("deviceAssetId") && !fields.contains_key("deviceId"), "{fields:?}");
        let created = &fields["fileCreatedAt"];
        let offset = created.len().checked_sub(6).map(|at| created.as_bytes()[at]);
        assert!(created.ends_with('Z') || matches!(offset, Some(b'+' | b'-')), "a time with an offset: {created}");
    }
    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let other = immich_env(&server);
    for (name, content) in &files {
        let path = if name.starts_with("IMG") { other.source.join("DCIM").join(name) } else { other.source.join(name) };
        crate::harness::write(&path, content);
    }
    let (code, summary) = other.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!((summary["uploaded"].as_u64(), summary["already_present"].as_u64()), (Some(0), Some(4)), "{summary}");
    assert_eq!(server.with(|s| s.uploads.len()), uploads.len(), "no upload reached the server");
    // The scan computed each file's SHA-1 in its one read, and kept it.
    let kept: std::collections::BTreeSet<String> = other
        .catalog()
        .prepare("SELECT sha1 FROM content_sha1")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    let expected: std::collections::BTreeSet<String> = files
        .iter()
        .map(|(_, content)| {
            use sha1::Digest as _;
            photosync::destination::http::hex(&sha1::Sha1::digest(content))
        })
        .collect();
    assert_eq!(kept, expected);
}

/// A photo Immich already has is acknowledged from the SHA-1 its scan
/// computed: the upload does not read the file again (shown here by
/// changing its bytes after the scan while keeping its size, time and
/// inode, which only a read would notice).
#[test]
fn a_photo_immich_has_is_not_read_again_after_the_scan() {
    let server = Immich::start(3);
    let first = immich_env(&server);
    let photo = write_photo(&first.source.join("IMG_1.JPG"), 20_000, 1);
    let (code, summary) = first.backup();
    assert_eq!(code, 0, "{summary}");
    let second = immich_env(&server);
    let path = second.source.join("IMG_1.JPG");
    crate::harness::write(&path, &photo);
    // Scanned, uploads held (on battery).
    second.set_power(true, 41);
    let (code, summary) = second.backup();
    assert_eq!(code, 75, "{summary}");
    second.set_power(false, 90);
    let modified = fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
    let mut changed = photo.clone();
    changed[10_000] ^= 0xFF;
    let file = fs::OpenOptions::new().write(true).open(&path).expect("open");
    std::io::Write::write_all(&mut &file, &changed).expect("rewrite in place");
    file.set_modified(modified).expect("keep the time");
    drop(file);
    let (code, summary) = second.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 1, "known from the scan's SHA-1: {summary}");
    assert_eq!(server.with(|s| s.uploads.len()), 1, "nothing sent");
}

/// Immich 2.x requires `deviceAssetId` and `deviceId`: photosync sends them.
#[test]
fn immich_2_gets_the_device_fields_it_requires() {
    let server = Immich::start(2);
    let env = immich_env(&server);
    let files = library(&env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files(), files.iter().cloned().collect());
    for fields in server.with(|s| s.uploads.clone()) {
        assert_eq!(fields["deviceId"], "photosync");
        assert!(!fields["deviceAssetId"].is_empty());
    }
}

/// A wrong API key holds the destination with a clear reason (exit 75),
/// failing no job; a key without `asset.read` is refused the same way.
#[test]
fn a_bad_or_under_scoped_key_holds_the_destination() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    library(&env);
    env.set_var("TEST_IMMICH_KEY", "not-the-key");
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    let reason = summary["deferrals"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("Immich refused the API key") && reason.contains("Invalid API key"), "{summary}");
    assert!(!summary.to_string().contains("not-the-key"), "the key never shows");
    assert_eq!(summary["failed"], 0);

    env.set_var("TEST_IMMICH_KEY", API_KEY);
    server.with(|s| s.permissions = vec!["asset.upload".into()]);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("lacks the asset.read permission"), "{summary}");
    server.with(|s| s.permissions = vec!["asset.upload".into(), "asset.read".into()]);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 4);
}

/// A proxy's 413 fails that file for good, saying what limit it hit; a
/// storm of 503s is waited out and every file arrives.
#[test]
fn a_proxy_limit_fails_the_file_and_a_503_storm_is_waited_out() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    let files = library(&env);
    server.with(|s| s.faults = [413].into_iter().collect());
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let reason = summary["failures"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("proxy") && reason.contains("100 MB"), "{summary}");
    assert_eq!(server.files().len(), 3);

    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success());
    // More 503s than one run tries a file: the rest is waited out by the next run.
    server.with(|s| s.faults = std::iter::repeat_n(503, 4).collect());
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "deferred to a later run, not failed: {summary}");
    assert!(summary["deferrals"][0]["reason"].as_str().is_some_and(|r| r.contains("503")), "{summary}");
    assert_eq!(summary["failed"], 0);
    let out = env.run(["retry", "--failed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files(), files.iter().cloned().collect());
    assert!(server.with(|s| s.faults.is_empty()), "every 503 was met");
}

/// `photosync verify` checks each receipt's asset id and checksum: an
/// asset deleted in Immich is reported missing.
#[test]
fn verify_finds_an_asset_deleted_in_immich() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    library(&env);
    let (code, _) = env.backup();
    assert_eq!(code, 0);
    let gone = server.with(|s| {
        let id = s.assets.keys().next().cloned().expect("an asset");
        s.assets.remove(&id);
        id
    });
    let out = env.run(["verify", "--json"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("missing"), "{report}");
    assert!(report.contains(&gone), "{report}");
}

/// A photo with an XMP sidecar goes up with it (`sidecarData`), as Immich
/// takes sidecars, whichever job comes first; both count as backed up and
/// `verify` holds. A sidecar of a photo Immich already had (without it),
/// and a non-XMP sidecar, fail with the reason, never counted as backed up.
#[test]
fn a_photo_goes_up_with_its_xmp_sidecar() {
    let server = Immich::start(3);
    server.with(|s| s.strict = true);
    let env = immich_env(&server);
    let photo = write_photo(&env.source.join("IMG_1.JPG"), 20_000, 1);
    let xmp = b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF/></x:xmpmeta>\n";
    crate::harness::write(&env.source.join("IMG_1.xmp"), xmp);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let assets = server.with(|s| s.assets.values().cloned().collect::<Vec<_>>());
    assert_eq!(assets.len(), 1, "the sidecar is no asset of its own");
    assert_eq!(assets[0].bytes, photo);
    assert_eq!(assets[0].sidecar.as_deref(), Some(&xmp[..]), "it came with the photo");
    assert_eq!(server.with(|s| s.uploads.len()), 1, "one upload");
    let out = env.run(["verify", "--json"]);
    assert!(out.status.success(), "{}", crate::harness::stdout(&out));

    // Another machine: the photo is there already, without its sidecar
    // from this machine's point of view; an `.aae` Immich takes not at all.
    let other = immich_env(&server);
    write_photo(&other.source.join("IMG_1.JPG"), 20_000, 1);
    crate::harness::write(&other.source.join("IMG_1.xmp"), b"<x:xmpmeta>another</x:xmpmeta>\n");
    crate::harness::write(&other.source.join("IMG_2.AAE"), b"<?xml version=\"1.0\"?><plist/>\n");
    write_photo(&other.source.join("IMG_2.HEIC"), 21_000, 2);
    let (code, summary) = other.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    let reasons = summary["failures"].to_string();
    assert!(reasons.contains("without this sidecar"), "{summary}");
    assert!(reasons.contains("only XMP sidecars"), "{summary}");
}

/// `album = "Photos {year}"`: every photo goes into the album its template
/// names, created when first needed; a second run (a new process that
/// knows no album ids) finds it among the albums instead of making another,
/// and a photo already in it is fine.
#[test]
fn photos_go_into_albums_created_once() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("{config}album = \"Photos {{year}}\"\n")).expect("config");
    library(&env);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    write_photo(&env.source.join("later.jpg"), 30_000, 99);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let year = jiff::Zoned::now().year();
    let albums = server.with(|s| s.albums.values().cloned().collect::<Vec<_>>());
    assert_eq!(albums.len(), 1, "one album: {albums:?}");
    let (name, assets) = &albums[0];
    assert_eq!(name, &format!("Photos {year}"));
    assert_eq!(assets.len(), 5, "every photo is in it");

    // A key that may not make albums is refused up front, with the reason.
    server.with(|s| s.permissions = vec!["asset.upload".into(), "asset.read".into()]);
    write_photo(&env.source.join("third.jpg"), 30_000, 100);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert!(summary.to_string().contains("album.read"), "{summary}");
}

/// A Live Photo whose video has a sidecar of its own (`IMG_1.MOV.xmp`):
/// the video goes up with it even when the still's job sends the video, so
/// the sidecar counts as backed up whichever job runs first.
#[test]
fn a_live_photo_videos_sidecar_goes_with_the_video() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    write_photo(&env.source.join("IMG_1.JPG"), 20_000, 5);
    let video = write_video(&env.source.join("IMG_1.MOV"), 600_000, 6);
    let xmp = b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">video</x:xmpmeta>\n";
    crate::harness::write(&env.source.join("IMG_1.MOV.xmp"), xmp);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let stored = server.with(|s| s.assets.values().find(|a| a.bytes == video).cloned()).expect("the video");
    assert_eq!(stored.sidecar.as_deref(), Some(&xmp[..]), "the video came with its sidecar");
}

/// The read-back after a photo went up with its sidecar fails (a 503):
/// which sidecar went with the photo was recorded the moment Immich named
/// the asset, so the sidecar counts as backed up on the retry, rather than
/// failing as if Immich had the photo without it.
#[test]
fn a_failed_read_back_does_not_lose_which_sidecar_went_up() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replacen("[retry]", "max_concurrent = 1\n[retry]", 1)).expect("config");
    write_photo(&env.source.join("IMG_1.JPG"), 20_000, 1);
    let xmp = b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>\n";
    crate::harness::write(&env.source.join("IMG_1.JPG.xmp"), xmp);
    server.with(|s| s.read_faults.push_back(503));
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let assets = server.with(|s| s.assets.values().cloned().collect::<Vec<_>>());
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].sidecar.as_deref(), Some(&xmp[..]));
}

/// Uploads asking at the same time whether Immich has their photos ask in
/// one `bulk-upload-check`: a second machine's backup of 40 photos the
/// server has takes fewer than 40 (about half with 8 uploads at once),
/// each photo asked about once, and uploads nothing.
#[test]
fn duplicate_checks_are_asked_together() {
    let server = Immich::start(3);
    let first = immich_env(&server);
    let second = immich_env(&server);
    for env in [&first, &second] {
        let config = fs::read_to_string(&env.config).expect("config");
        fs::write(&env.config, config.replacen("[retry]", "max_concurrent = 8\n[retry]", 1)).expect("config");
        for i in 0..40 {
            write_photo(&env.source.join(format!("IMG_{i:04}.JPG")), 5_000 + i, i as u64);
        }
    }
    let (code, summary) = first.backup();
    assert_eq!(code, 0, "{summary}");
    let before = server.with(|s| s.checks.len());
    let (code, summary) = second.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 40, "{summary}");
    let checks = server.with(|s| s.checks[before..].to_vec());
    assert_eq!(checks.iter().sum::<usize>(), 40, "each photo asked about once: {checks:?}");
    assert!(checks.len() < 40 && checks.iter().any(|&n| n > 1), "asked together: {checks:?}");
    assert_eq!(server.with(|s| s.uploads.len()), 40, "the second machine uploaded nothing");
}

/// An album deleted in Immich while the daemon remembers its id: the next
/// photo finds that out, and goes into the album made again.
#[test]
fn an_album_deleted_in_immich_is_made_again() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    let config = fs::read_to_string(&env.config).expect("config");
    let config = config.replacen("[retry]", "settle = \"200ms\"\n[retry]", 1);
    fs::write(&env.config, format!("{config}album = \"Trip\"\n")).expect("config");
    write_photo(&env.source.join("first.jpg"), 20_000, 1);
    let daemon = env.start_daemon();
    daemon
        .wait_until(std::time::Duration::from_mins(1), "the first photo is in", || env.count_jobs("acknowledged") == 1);
    server.with(|s| s.albums.clear());
    let second = write_photo(&env.source.join("second.jpg"), 21_000, 2);
    daemon.wait_until(std::time::Duration::from_mins(1), "the second photo is in", || {
        env.count_jobs("acknowledged") == 2
    });
    let albums = server.with(|s| s.albums.values().cloned().collect::<Vec<_>>());
    assert_eq!(albums.len(), 1, "{albums:?}");
    let (name, assets) = &albums[0];
    assert_eq!(name, "Trip");
    let second_id = server.with(|s| s.assets.values().find(|a| a.bytes == second).map(|a| a.id.clone())).expect("in");
    assert!(assets.contains(&second_id), "the second photo is in the new album");
    assert_eq!(env.count_jobs("failed"), 0);
}

/// A Live Photo: its video goes up first (once), and the still names it
/// as its `livePhotoVideoId`, so Immich shows one Live Photo.
#[test]
fn a_live_photo_is_linked_to_its_video() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    let still = write_photo(&env.source.join("IMG_0001.JPG"), 20_000, 5);
    let video = write_video(&env.source.join("IMG_0001.MOV"), 600_000, 6);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let assets = server.with(|s| s.assets.values().cloned().collect::<Vec<_>>());
    assert_eq!(assets.len(), 2, "two assets");
    let stored_video = assets.iter().find(|a| a.bytes == video).expect("the video");
    let stored_still = assets.iter().find(|a| a.bytes == still).expect("the still");
    assert_eq!(stored_still.fields.get("livePhotoVideoId"), Some(&stored_video.id), "linked");
    assert_eq!(server.with(|s| s.uploads.len()), 2, "the video went up once");
}

/// A Live Photo whose still Immich already had without its motion part
/// (another client sent only the still): the video goes up and the still
/// is linked to it (`updateAsset`), once.
#[test]
fn a_still_immich_already_had_is_linked_to_its_video() {
    let server = Immich::start(3);
    let phone = immich_env(&server);
    let still = write_photo(&phone.source.join("IMG_0001.JPG"), 20_000, 5);
    let (code, summary) = phone.backup();
    assert_eq!(code, 0, "{summary}");
    let laptop = immich_env(&server);
    write_photo(&laptop.source.join("IMG_0001.JPG"), 20_000, 5);
    let video = write_video(&laptop.source.join("IMG_0001.MOV"), 600_000, 6);
    let (code, summary) = laptop.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let assets = server.with(|s| s.assets.values().cloned().collect::<Vec<_>>());
    assert_eq!(assets.len(), 2, "the still once, and its video");
    let stored_video = assets.iter().find(|a| a.bytes == video).expect("the video");
    let stored_still = assets.iter().find(|a| a.bytes == still).expect("the still");
    assert_eq!(stored_still.fields.get("livePhotoVideoId"), Some(&stored_video.id), "linked afterwards");
    assert_eq!(server.with(|s| s.updates.clone()), std::slice::from_ref(&stored_still.id), "linked once");
    let (code, summary) = laptop.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.with(|s| s.updates.len()), 1, "nothing to link again");
}

/// Regression: a photo in Immich's trash counted as already present, so a
/// backup reported it safe until the trash was emptied. It fails with
/// what to do, and `verify` reports a backed-up photo moved to the trash.
#[test]
fn a_photo_in_immichs_trash_counted_as_backed_up() {
    let server = Immich::start(3);
    let env = immich_env(&server);
    write_photo(&env.source.join("a.jpg"), 20_000, 1);
    let (code, _) = env.backup();
    assert_eq!(code, 0);
    server.with(|s| s.assets.values_mut().for_each(|a| a.trashed = true));
    let out = env.run(["verify", "--json"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && report.contains("trash"), "{report}");

    let other = immich_env(&server);
    write_photo(&other.source.join("a.jpg"), 20_000, 1);
    let (code, summary) = other.backup();
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["already_present"], 0, "{summary}");
    assert!(summary["failures"][0]["reason"].as_str().is_some_and(|r| r.contains("trash")), "{summary}");
}

/// Regression: the client followed redirects, and reqwest forwards a custom
/// header like `x-api-key` to another host, so a redirect in front of
/// Immich handed the API key to whatever it pointed at. A redirect is now
/// an answer that says where the address leads; the key stays.
#[test]
fn a_redirect_handed_the_api_key_to_another_host() {
    let elsewhere = Immich::start(3);
    let server = Immich::start(3);
    server.with(|s| s.redirect_to = Some(elsewhere.url.clone()));
    let env = immich_env(&server);
    write_photo(&env.source.join("a.jpg"), 20_000, 1);
    let (code, summary) = env.backup();
    assert_ne!(code, 0, "{summary}");
    assert!(summary.to_string().contains("redirect"), "{summary}");
    assert!(elsewhere.with(|s| s.keys_seen.is_empty()), "the key never reached the other host");
    assert!(elsewhere.files().is_empty());
}
