//! Files that travel together, made by real tools: a Live Photo (`heif-enc`
//! still, `ffmpeg` video with Apple's keys), a raw and its JPEG, XMP
//! sidecars written by `exiftool`, Apple's `.AAE`, Takeout's JSON. Each
//! group lands where its key file's date puts it, under its stem.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::capture::{TZ, apple_video, exif, heic, set_layout, still, tool};
use crate::harness::{Env, stdout, tree, write};

/// Sidecars travel with their photo: an XMP and an Apple edit list beside
/// a Live Photo, an XMP beside a raw, Takeout's JSON beside a JPEG are backed up
/// and dated as the photo they describe (their own time says nothing), so
/// a date layout puts them in the photo's folder; a sidecar with no photo,
/// or whose content is not what its name says, is not backed up.
#[test]
fn sidecars_and_pairs_land_in_their_photos_folder() {
    let env = Env::new();
    env.set_var("TZ", TZ);
    let dir = env.source.join("DCIM/100APPLE");
    fs::create_dir_all(&dir).expect("dir");
    // A Live Photo: the still, its video a second later, Apple's edits.
    heic(&dir, "IMG_0001.HEIC", "red");
    exif(&dir, "IMG_0001.HEIC", &["DateTimeOriginal=2022:08:09 10:11:12", "OffsetTimeOriginal=+02:00"]);
    apple_video(&dir, "IMG_0001.MOV", "2022-08-09T10:11:13+0200", None);
    tool(&dir, "exiftool", &["-q", "-o", "IMG_0001.HEIC.xmp", "-XMP-xmp:Label=Red", "IMG_0001.HEIC"]);
    write(
        &dir.join("IMG_0001.AAE"),
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
          \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict/></plist>\n",
    );
    // A raw and its JPEG, and the XMP exiftool writes for the raw.
    still(&dir, "DSC_0002.tif", "green");
    fs::rename(dir.join("DSC_0002.tif"), dir.join("DSC_0002.NEF")).expect("rename");
    exif(&dir, "DSC_0002.NEF", &["DateTimeOriginal=2021:03:04 05:06:07", "Make=NIKON CORPORATION", "Model=NIKON Z 6"]);
    still(&dir, "DSC_0002.JPG", "green");
    exif(&dir, "DSC_0002.JPG", &["DateTimeOriginal=2021:03:04 05:06:07"]);
    tool(&dir, "exiftool", &["-q", "-o", "DSC_0002.xmp", "-XMP-xmp:Rating=5", "DSC_0002.NEF"]);
    // Takeout: a JPEG and its metadata, the suffix cut short.
    still(&dir, "IMG_0003.JPG", "blue");
    exif(&dir, "IMG_0003.JPG", &["DateTimeOriginal=2020:01:02 03:04:05"]);
    write(&dir.join("IMG_0003.JPG.supplemental-metad.json"), b"{\"title\": \"IMG_0003.JPG\"}\n");
    // No photo for this one; and a "JSON" that is not.
    write(&dir.join("lonely.xmp"), b"<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>\n");
    write(&dir.join("DSC_0002.JPG.json"), b"not json at all\n");

    set_layout(&env, "{year}/{month}/{day}/{filename}");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    let expected = [
        "2020/01/02/IMG_0003.JPG",
        "2020/01/02/IMG_0003.JPG.supplemental-metad.json",
        "2021/03/04/DSC_0002.JPG",
        "2021/03/04/DSC_0002.NEF",
        "2021/03/04/DSC_0002.xmp",
        "2022/08/09/IMG_0001.AAE",
        "2022/08/09/IMG_0001.HEIC",
        "2022/08/09/IMG_0001.HEIC.xmp",
        "2022/08/09/IMG_0001.MOV",
    ];
    assert_eq!(stored, expected, "{summary}");
    assert_eq!(summary["skipped"]["not_media"], 2, "the lonely sidecar and the false JSON: {summary}");

    let out = env.run(["why", "--json", &dir.join("lonely.xmp").display().to_string()]);
    let answer: Value = serde_json::from_slice(&out.stdout).expect("why json");
    assert_eq!(answer[0]["reason"], "no_partner", "{answer}");
    // Its photo arrives: the next scan backs the sidecar up beside it.
    fs::copy(dir.join("IMG_0003.JPG"), dir.join("lonely.jpg")).expect("copy");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert!(tree(&env.dest).contains_key(Path::new("2020/01/02/lonely.xmp")), "{summary}");
}

/// A Live Photo (with iCloud's `_HEVC` name for its video, a second after
/// the still), a raw with its JPEG and XMP: each group takes its key's
/// time and stem (a sidecar keeps what follows its photo's stem, `.JPG`
/// of `DSC_0002.JPG.xmp`), so a layout down to the second keeps it together; a
/// same-named video taken years later is not part of the group. A group
/// whose member cannot be read is not backed up, whatever its key says.
#[test]
fn live_photos_and_raw_pairs_travel_together() {
    let mut env = Env::new();
    env.set_var("TZ", TZ);
    let dir = env.source.clone();
    heic(&dir, "IMG_0001.HEIC", "red");
    exif(&dir, "IMG_0001.HEIC", &["DateTimeOriginal=2022:08:09 10:11:12", "OffsetTimeOriginal=+02:00"]);
    apple_video(&dir, "IMG_0001_HEVC.MOV", "2022-08-09T10:11:13+0200", None);
    still(&dir, "DSC_0002.tif", "green");
    fs::rename(dir.join("DSC_0002.tif"), dir.join("DSC_0002.NEF")).expect("rename");
    exif(&dir, "DSC_0002.NEF", &["DateTimeOriginal=2021:03:04 05:06:07"]);
    still(&dir, "DSC_0002.JPG", "green");
    exif(&dir, "DSC_0002.JPG", &["DateTimeOriginal=2021:03:04 05:06:08"]);
    tool(&dir, "exiftool", &["-q", "-o", "DSC_0002.JPG.xmp", "-XMP-xmp:Rating=5", "DSC_0002.JPG"]);
    still(&dir, "IMG_0009.JPG", "blue");
    exif(&dir, "IMG_0009.JPG", &["DateTimeOriginal=2019:01:01 12:00:00"]);
    apple_video(&dir, "IMG_0009.MOV", "2023-05-05T05:05:05+0000", None);

    set_layout(&env, "{year}/{month}/{day}/{hour}{minute}{second}-{stem}.{ext}");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    let expected = [
        "2019/01/01/120000-IMG_0009.JPG",
        "2021/03/04/050607-DSC_0002.JPG",
        "2021/03/04/050607-DSC_0002.JPG.xmp",
        "2021/03/04/050607-DSC_0002.NEF",
        "2022/08/09/101112-IMG_0001.HEIC",
        "2022/08/09/101112-IMG_0001.MOV",
        "2023/05/05/050505-IMG_0009.MOV",
    ];
    assert_eq!(stored, expected, "{summary}");

    let why = |env: &Env, name: &str| {
        let out = env.run(["why", "--json", &dir.join(name).display().to_string()]);
        let answers: Value = serde_json::from_slice(&out.stdout).expect("why json");
        answers[0].clone()
    };
    let still = why(&env, "IMG_0001.HEIC");
    assert_eq!(still["verdict"], "backed_up", "{still}");
    assert_eq!(still["group"], serde_json::json!([dir.join("IMG_0001_HEVC.MOV").display().to_string()]));
    assert_eq!(why(&env, "IMG_0009.JPG")["group"], serde_json::json!([]), "taken years apart: two groups");
    // `jobs` shows a group on one line, its members in its detail.
    let out = env.run(["jobs", "--json"]);
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("jobs json");
    let of = |name: &str| {
        jobs.as_array().expect("array").iter().find(|j| j["path"].as_str().is_some_and(|p| p.ends_with(name))).cloned()
    };
    let key = dir.join("IMG_0001.HEIC").display().to_string();
    assert_eq!(of("IMG_0001_HEVC.MOV").expect("the video's job")["group"], key.as_str());
    assert_eq!(of("IMG_0001.HEIC").expect("the still's job")["group"], Value::Null, "the key is no member");
    let table = stdout(&env.run(["jobs"]));
    let lines: Vec<&str> = table.lines().filter(|l| l.contains("IMG_0001")).collect();
    assert_eq!(lines.len(), 1, "{table}");
    assert!(
        lines[0].contains("IMG_0001.HEIC +1")
            && lines[0].contains("with IMG_0001_HEVC.MOV (job ")
            && lines[0].contains(", acknowledged)"),
        "{table}"
    );

    // A new Live Photo whose video cannot be read: the still is stored, the
    // group is not backed up.
    heic(&dir, "IMG_0010.HEIC", "white");
    apple_video(&dir, "IMG_0010.MOV", "2024-01-01T00:00:00+0000", None);
    assert!(env.run_as_unprivileged(), "setpriv is needed to drop root privileges");
    fs::set_permissions(dir.join("IMG_0010.MOV"), fs::Permissions::from_mode(0o000)).expect("chmod 000");
    let (code, summary) = env.backup();
    assert_ne!(code, 0, "an unreadable file is a failure: {summary}");
    let still = why(&env, "IMG_0010.HEIC");
    assert_eq!(still["verdict"], "waiting", "{still}");
    assert_eq!(still["reason"], "group_incomplete", "{still}");
    assert!(still["explanation"].as_str().expect("text").contains("IMG_0010.MOV"), "{still}");
}

/// Apple's maker note (`Apple iOS\0`, a version, the byte order, then a
/// directory whose offsets count from the note's start) holding the
/// content identifier (tag 0x0011) a Live Photo's still shares with its
/// video.
fn apple_maker_note(content_id: &str) -> Vec<u8> {
    let mut id = content_id.as_bytes().to_vec();
    id.push(0);
    let data_at = 14 + 2 + 12 + 4;
    let mut note = b"Apple iOS\0\0\x01MM".to_vec();
    note.extend_from_slice(&1u16.to_be_bytes());
    note.extend_from_slice(&0x0011u16.to_be_bytes());
    note.extend_from_slice(&2u16.to_be_bytes());
    note.extend_from_slice(&(id.len() as u32).to_be_bytes());
    note.extend_from_slice(&(data_at as u32).to_be_bytes());
    note.extend_from_slice(&[0; 4]);
    note.extend_from_slice(&id);
    note
}

/// Where both files of a Live Photo carry Apple's content identifier, it
/// decides: the same identifier pairs a still and a video whose clocks
/// disagree by half a minute, different ones keep apart two files a second
/// apart. exiftool reads the identifiers back as they were written.
#[test]
fn apple_content_identifiers_decide_live_photo_pairs() {
    let env = Env::new();
    env.set_var("TZ", TZ);
    let dir = env.source.clone();
    let apple_still = |name: &str, date: &str, id: &str| {
        still(&dir, name, "red");
        exif(&dir, name, &[&format!("DateTimeOriginal={date}"), "Make=Apple", "Model=iPhone 12"]);
        let note = dir.join(format!("{name}.note"));
        write(&note, &apple_maker_note(id));
        tool(&dir, "exiftool", &["-q", "-overwrite_original", &format!("-MakerNotes<={}", note.display()), name]);
        fs::remove_file(note).expect("rm");
    };
    apple_still("IMG_0020.JPG", "2023:06:01 10:00:00", "AAAA-0020");
    apple_video(&dir, "IMG_0020.MOV", "2023-06-01T10:00:30+0530", Some("AAAA-0020"));
    apple_still("IMG_0021.JPG", "2023:06:01 11:00:00", "BBBB-0021");
    apple_video(&dir, "IMG_0021.MOV", "2023-06-01T11:00:01+0530", Some("CCCC-0021"));

    let out = Command::new("exiftool")
        .args(["-json", "-MediaGroupUUID", "-ContentIdentifier"])
        .args(["IMG_0020.JPG", "IMG_0020.MOV", "IMG_0021.JPG", "IMG_0021.MOV"])
        .current_dir(&dir)
        .output()
        .expect("exiftool");
    let read: Value = serde_json::from_slice(&out.stdout).expect("exiftool json");
    let ids: Vec<&str> = read
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["MediaGroupUUID"].as_str().or(f["ContentIdentifier"].as_str()))
        .collect();
    assert_eq!(ids, ["AAAA-0020", "AAAA-0020", "BBBB-0021", "CCCC-0021"], "exiftool reads what was written");

    set_layout(&env, "{hour}{minute}{second}-{stem}.{ext}");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    assert_eq!(
        stored,
        ["100000-IMG_0020.JPG", "100000-IMG_0020.MOV", "110000-IMG_0021.JPG", "110001-IMG_0021.MOV"],
        "{summary}"
    );
}
