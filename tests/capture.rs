//! Capture times and date layouts, on files made by real tools: `ffmpeg`
//! encodes the images and videos, `exiftool` writes their EXIF dates,
//! offsets and cameras, `heif-enc` makes HEIC and AVIF. What photosync reads
//! is checked against what `exiftool` reads from the same files, and the
//! keys a date layout renders against both.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::harness::{Env, stderr, stdout, tree, write};

/// A zone with a half-hour offset and no daylight saving time, so that
/// conversions from UTC show.
const TZ: &str = "Asia/Kolkata";

/// Runs a tool in `dir`, failing the test with its output if it fails.
fn tool(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TZ", TZ)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test (.ci/run installs it): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes EXIF tags (`Tag=value`) into `file`.
fn exif(dir: &Path, file: &str, tags: &[&str]) {
    let mut args = vec!["-q", "-overwrite_original"];
    let assignments: Vec<String> = tags.iter().map(|t| format!("-{t}")).collect();
    args.extend(assignments.iter().map(String::as_str));
    args.push(file);
    tool(dir, "exiftool", &args);
}

/// The capture time exiftool reads, as `YYYY-MM-DDTHH:MM:SS` in `TZ`:
/// EXIF `DateTimeOriginal`, else `CreateDate`, else `QuickTime`'s Apple
/// `CreationDate`, else its `CreateDate` taken as UTC; zero dates (which
/// exiftool shows as 1904 in `QuickTime`) do not count.
fn exiftool_dates(dir: &Path) -> Vec<(String, Option<String>)> {
    let out = Command::new("exiftool")
        .args(["-json", "-G", "-api", "QuickTimeUTC", "-r", "-time:all"])
        .arg(dir)
        .env("TZ", TZ)
        .output()
        .expect("exiftool");
    let files: Value = serde_json::from_slice(&out.stdout).expect("exiftool json");
    let keys = ["EXIF:DateTimeOriginal", "EXIF:CreateDate", "QuickTime:CreationDate", "QuickTime:CreateDate"];
    files
        .as_array()
        .expect("array")
        .iter()
        .map(|f| {
            let path = f["SourceFile"].as_str().expect("path");
            let name = Path::new(path).file_name().expect("name").to_string_lossy().into_owned();
            let date = keys
                .iter()
                .filter_map(|k| f[k].as_str())
                .find(|d| !d.starts_with("0000") && !d.starts_with("1904"))
                .map(|d| {
                    let (date, time) = d[..19].split_at(10);
                    format!("{}T{}", date.replace(':', "-"), &time[1..])
                });
            (name, date)
        })
        .collect()
}

/// The `taken` photosync reports for each file of the source.
fn taken(env: &Env, names: &[&str]) -> Vec<Value> {
    let paths: Vec<PathBuf> = names.iter().map(|n| env.source.join(n)).collect();
    let mut args = vec!["why".into(), "--json".into()];
    args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    let out = env.run(args);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Value = serde_json::from_slice(&out.stdout).expect("why json");
    answers.as_array().expect("array").iter().map(|a| a["taken"].clone()).collect()
}

fn is_video(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|e| e == "mp4" || e == "mov")
}

fn set_mtime(path: &Path, seconds: u64) {
    let file = fs::File::options().write(true).open(path).expect("open");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).expect("set mtime");
}

/// Makes the sample files in `dir`: every container photosync reads dates
/// from, files whose date is only in their name or their time, and broken
/// ones. Returns their names.
fn make_samples(dir: &Path) -> Vec<&'static str> {
    let ff = |args: &[&str]| {
        let mut all = vec!["-v", "error", "-y"];
        all.extend_from_slice(args);
        tool(dir, "ffmpeg", &all);
    };
    let still = ["-f", "lavfi", "-i", "color=c=blue:s=32x32", "-frames:v", "1"];
    let moving = ["-f", "lavfi", "-i", "testsrc=d=1:s=32x32:r=5"];
    ff(&[&still[..], &["offset.jpg"]].concat());
    exif(
        dir,
        "offset.jpg",
        &["DateTimeOriginal=2019:06:15 14:22:33", "OffsetTimeOriginal=+02:00", "Make=Canon", "Model=Canon EOS R5"],
    );
    ff(&[&still[..], &["digitized.jpg"]].concat());
    exif(dir, "digitized.jpg", &["CreateDate=2018:01:02 03:04:05"]);
    ff(&[&still[..], &["IMG_20170304_050607.jpg"]].concat());
    exif(dir, "IMG_20170304_050607.jpg", &["DateTimeOriginal#=0000:00:00 00:00:00"]);
    ff(&[&still[..], &["future.jpg"]].concat());
    exif(dir, "future.jpg", &["DateTimeOriginal=2099:01:01 00:00:00"]);
    for (name, codec) in [("shot.png", None), ("pic.webp", Some("libwebp")), ("scan.tif", None)] {
        let mut args = still.to_vec();
        if let Some(codec) = codec {
            args.extend(["-c:v", codec]);
        }
        args.push(name);
        ff(&args);
        exif(dir, name, &["DateTimeOriginal=2016:05:04 03:02:01", "Make=Apple", "Model=iPhone 7"]);
    }
    ff(&[&still[..], &["source.png"]].concat());
    tool(dir, "heif-enc", &["-o", "phone.heic", "source.png"]);
    tool(dir, "heif-enc", &["-A", "-o", "new.avif", "source.png"]);
    fs::remove_file(dir.join("source.png")).expect("rm");
    exif(
        dir,
        "phone.heic",
        &["DateTimeOriginal=2023:11:12 13:14:15", "OffsetTimeOriginal=-05:00", "Make=Apple", "Model=iPhone 15 Pro"],
    );
    exif(dir, "new.avif", &["DateTimeOriginal=2024:02:29 23:59:59"]);
    // A phone video: the movie header in UTC.
    ff(&[&moving[..], &["-metadata", "creation_time=2020-07-08T09:10:11Z", "clip.mp4"]].concat());
    // An iPhone video re-encoded later: Apple's key (with its zone) wins over the header.
    ff(&[
        &moving[..],
        &[
            "-movflags",
            "use_metadata_tags",
            "-metadata",
            "com.apple.quicktime.creationdate=2021-02-03T04:05:06+0800",
            "-metadata",
            "creation_time=2024-01-01T00:00:00Z",
            "live.mov",
        ],
    ]
    .concat());
    // A video without a date: the 1904 epoch in its header does not count.
    ff(&[&moving[..], &["VID_20150607_080910.mp4"]].concat());
    // Broken files: a video cut before its `moov`, one whose `moov` claims
    // 10 GB, a JPEG whose EXIF points at itself.
    let clip = fs::read(dir.join("clip.mp4")).expect("clip");
    let moov = clip.windows(4).rposition(|w| w == b"moov").expect("a moov box") - 4;
    write(&dir.join("cut.mp4"), &clip[..moov]);
    let ftyp_len = u32::from_be_bytes(clip[..4].try_into().expect("4 bytes")) as usize;
    let mut huge = clip[..ftyp_len].to_vec();
    huge.extend_from_slice(&1u32.to_be_bytes());
    huge.extend_from_slice(b"moov");
    huge.extend_from_slice(&(10u64 << 30).to_be_bytes());
    huge.extend_from_slice(&[0; 64]);
    write(&dir.join("huge.mp4"), &huge);
    let mut looping = b"\xFF\xD8\xFF\xE1\0\x22Exif\0\0II*\0\x08\0\0\0\x01\0\x69\x87\x04\0\x01\0\0\0\x08\0\0\0".to_vec();
    looping.extend_from_slice(&[0; 4]);
    looping.extend_from_slice(b"\xFF\xD9");
    write(&dir.join("loop.jpg"), &looping);
    for name in ["cut.mp4", "huge.mp4", "loop.jpg", "future.jpg"] {
        set_mtime(&dir.join(name), 1_500_000_000);
    }
    vec![
        "offset.jpg",
        "digitized.jpg",
        "IMG_20170304_050607.jpg",
        "future.jpg",
        "shot.png",
        "pic.webp",
        "scan.tif",
        "phone.heic",
        "new.avif",
        "clip.mp4",
        "live.mov",
        "VID_20150607_080910.mp4",
        "cut.mp4",
        "huge.mp4",
        "loop.jpg",
    ]
}

#[test]
fn capture_times_and_date_layouts_agree_with_exiftool() {
    let env = Env::new();
    env.set_var("TZ", TZ);
    let names = make_samples(&env.source);
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(
        &env.config,
        format!("{config}layout = \"{{year}}/{{month}}/{{day}}/{{hour}}{{minute}}{{second}}-{{kind}}-{{filename}}\"\n"),
    )
    .expect("config");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["discovered"], names.len(), "every file, broken or not, is backed up: {summary}");

    let from_exiftool: std::collections::HashMap<String, Option<String>> =
        exiftool_dates(&env.source).into_iter().collect();
    let reported = taken(&env, &names);
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    // What photosync must say where exiftool has no (plausible) date.
    let fallback = |name: &str| match name {
        "IMG_20170304_050607.jpg" => ("2017-03-04T05:06:07", "filename"),
        "VID_20150607_080910.mp4" => ("2015-06-07T08:09:10", "filename"),
        // 1,500,000,000 s is 2017-07-14 02:40 UTC, 08:10 in Kolkata.
        _ => ("2017-07-14T08:10:00", "mtime"),
    };
    for (name, taken) in names.iter().zip(&reported) {
        let exiftool = from_exiftool.get(*name).unwrap_or_else(|| panic!("exiftool saw {name}")).clone();
        let (expected, source) = match exiftool {
            Some(date) if !date.starts_with("2099") => {
                let source = if is_video(name) { "quicktime" } else { "exif" };
                (date, source)
            }
            _ => {
                let (date, source) = fallback(name);
                (date.to_owned(), source)
            }
        };
        assert_eq!(taken["local"], expected.as_str(), "{name}: {taken}");
        assert_eq!(taken["source"], source, "{name}: {taken}");
        let kind = if is_video(name) { "video" } else { "photo" };
        assert_eq!(taken["kind"], kind, "{name}");
        let (date, time) = expected.split_at(10);
        let key = format!("{}/{}-{kind}-{name}", date.replace('-', "/"), time[1..].replace(':', ""));
        assert!(stored.contains(&key), "{name} should be at {key}; the destination holds {stored:?}");
    }
    let by_name = |name: &str| &reported[names.iter().position(|n| *n == name).expect("sample")];
    assert_eq!(by_name("offset.jpg")["offset"], "+02:00");
    assert_eq!(by_name("offset.jpg")["camera"], "Canon EOS R5");
    assert_eq!(by_name("phone.heic")["offset"], "-05:00");
    assert_eq!(by_name("phone.heic")["camera"], "Apple iPhone 15 Pro");
    assert_eq!(by_name("live.mov")["offset"], "+08:00", "Apple's key keeps its zone");
    assert_eq!(by_name("clip.mp4")["offset"], "+05:30", "a UTC header is shown in the local zone");
}

/// Regression guard for catalogs from before capture times were kept: the
/// next scan reads the dates of unchanged files from their headers, not by
/// hashing them again, and a later change of layout uploads nothing twice.
#[test]
fn dates_are_filled_in_for_old_catalogs_without_reading_files_again() {
    let env = Env::new();
    env.set_var("TZ", TZ);
    let dir = &env.source;
    tool(dir, "ffmpeg", &["-v", "error", "-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", "a.jpg"]);
    exif(dir, "a.jpg", &["DateTimeOriginal=2012:12:12 12:12:12"]);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let catalog = rusqlite::Connection::open(env.state.join("catalog.sqlite")).expect("catalog");
    catalog
        .execute_batch(
            "UPDATE assets SET kind = NULL, captured = NULL, capture_offset = NULL, capture_source = NULL,
               captured_at = NULL, camera = NULL",
        )
        .expect("as migration 6 leaves an older catalog");
    drop(catalog);
    assert_eq!(taken(&env, &["a.jpg"])[0], Value::Null);

    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("{config}layout = \"{{year}}/{{filename}}\"\n")).expect("config");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["files_read"], 0, "no file was read through again: {summary}");
    assert_eq!(taken(&env, &["a.jpg"])[0]["local"], "2012-12-12T12:12:12");
    assert_eq!(tree(&env.dest).keys().collect::<Vec<_>>(), [Path::new("a.jpg")], "nothing was uploaded again");

    // A copy of the same photo under another name is already stored; a new
    // photo goes where the new layout says.
    fs::copy(dir.join("a.jpg"), dir.join("copy.jpg")).expect("copy");
    tool(dir, "ffmpeg", &["-v", "error", "-f", "lavfi", "-i", "color=c=green:s=16x16", "-frames:v", "1", "b.jpg"]);
    exif(dir, "b.jpg", &["DateTimeOriginal=2013:01:01 10:00:00"]);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<PathBuf> = tree(&env.dest).into_keys().collect();
    assert_eq!(stored, [PathBuf::from("2013/b.jpg"), PathBuf::from("a.jpg")]);
}

/// Sidecars travel with their photo: an Apple edit list beside a Live
/// Photo, an XMP beside a raw, Takeout's JSON beside a JPEG are backed up
/// and dated as the photo they describe (their own time says nothing), so
/// a date layout puts them in the photo's folder; a sidecar with no photo,
/// or whose content is not what its name says, is not backed up.
#[test]
fn sidecars_and_pairs_land_in_their_photos_folder() {
    let env = Env::new();
    env.set_var("TZ", TZ);
    let dir = env.source.join("DCIM/100APPLE");
    fs::create_dir_all(&dir).expect("dir");
    let ff = |args: &[&str]| {
        let mut all = vec!["-v", "error", "-y", "-f", "lavfi"];
        all.extend_from_slice(args);
        tool(&dir, "ffmpeg", &all);
    };
    // A Live Photo: the still, its video a second later, Apple's edits.
    ff(&["-i", "color=c=red:s=32x32", "-frames:v", "1", "still.png"]);
    tool(&dir, "heif-enc", &["-o", "IMG_0001.HEIC", "still.png"]);
    fs::remove_file(dir.join("still.png")).expect("rm");
    exif(&dir, "IMG_0001.HEIC", &["DateTimeOriginal=2022:08:09 10:11:12", "OffsetTimeOriginal=+02:00"]);
    ff(&[
        "-i",
        "testsrc=d=1:s=32x32:r=5",
        "-movflags",
        "use_metadata_tags",
        "-metadata",
        "com.apple.quicktime.creationdate=2022-08-09T10:11:13+0200",
        "IMG_0001.MOV",
    ]);
    write(
        &dir.join("IMG_0001.AAE"),
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
          \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict/></plist>\n",
    );
    // A raw and its JPEG, and the XMP exiftool writes for the raw.
    ff(&["-i", "color=c=green:s=32x32", "-frames:v", "1", "DSC_0002.tif"]);
    fs::rename(dir.join("DSC_0002.tif"), dir.join("DSC_0002.NEF")).expect("rename");
    exif(&dir, "DSC_0002.NEF", &["DateTimeOriginal=2021:03:04 05:06:07", "Make=NIKON CORPORATION", "Model=NIKON Z 6"]);
    ff(&["-i", "color=c=green:s=32x32", "-frames:v", "1", "DSC_0002.JPG"]);
    exif(&dir, "DSC_0002.JPG", &["DateTimeOriginal=2021:03:04 05:06:07"]);
    tool(&dir, "exiftool", &["-q", "-o", "DSC_0002.xmp", "-XMP-xmp:Rating=5", "DSC_0002.NEF"]);
    // Takeout: a JPEG and its metadata, the suffix cut short.
    ff(&["-i", "color=c=blue:s=32x32", "-frames:v", "1", "IMG_0003.JPG"]);
    exif(&dir, "IMG_0003.JPG", &["DateTimeOriginal=2020:01:02 03:04:05"]);
    write(&dir.join("IMG_0003.JPG.supplemental-metad.json"), b"{\"title\": \"IMG_0003.JPG\"}\n");
    // No photo for this one; and a "JSON" that is not.
    write(&dir.join("lonely.xmp"), b"<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>\n");
    write(&dir.join("DSC_0002.JPG.json"), b"not json at all\n");

    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("{config}layout = \"{{year}}/{{month}}/{{day}}/{{filename}}\"\n")).expect("config");
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
/// time and stem, so a layout down to the second keeps it together; a
/// same-named video taken years later is not part of the group. A group
/// whose member cannot be read is not backed up, whatever its key says.
#[test]
fn live_photos_and_raw_pairs_travel_together() {
    let mut env = Env::new();
    env.set_var("TZ", TZ);
    let dir = env.source.clone();
    let ff = |args: &[&str]| {
        let mut all = vec!["-v", "error", "-y", "-f", "lavfi"];
        all.extend_from_slice(args);
        tool(&dir, "ffmpeg", &all);
    };
    ff(&["-i", "color=c=red:s=32x32", "-frames:v", "1", "still.png"]);
    tool(&dir, "heif-enc", &["-o", "IMG_0001.HEIC", "still.png"]);
    fs::remove_file(dir.join("still.png")).expect("rm");
    exif(&dir, "IMG_0001.HEIC", &["DateTimeOriginal=2022:08:09 10:11:12", "OffsetTimeOriginal=+02:00"]);
    let video = |name: &str, date: &str| {
        let key = format!("com.apple.quicktime.creationdate={date}");
        ff(&["-i", "testsrc=d=1:s=32x32:r=5", "-movflags", "use_metadata_tags", "-metadata", &key, name]);
    };
    video("IMG_0001_HEVC.MOV", "2022-08-09T10:11:13+0200");
    ff(&["-i", "color=c=green:s=32x32", "-frames:v", "1", "DSC_0002.tif"]);
    fs::rename(dir.join("DSC_0002.tif"), dir.join("DSC_0002.NEF")).expect("rename");
    exif(&dir, "DSC_0002.NEF", &["DateTimeOriginal=2021:03:04 05:06:07"]);
    ff(&["-i", "color=c=green:s=32x32", "-frames:v", "1", "DSC_0002.JPG"]);
    exif(&dir, "DSC_0002.JPG", &["DateTimeOriginal=2021:03:04 05:06:08"]);
    tool(&dir, "exiftool", &["-q", "-o", "DSC_0002.JPG.xmp", "-XMP-xmp:Rating=5", "DSC_0002.JPG"]);
    ff(&["-i", "color=c=blue:s=32x32", "-frames:v", "1", "IMG_0009.JPG"]);
    exif(&dir, "IMG_0009.JPG", &["DateTimeOriginal=2019:01:01 12:00:00"]);
    video("IMG_0009.MOV", "2023-05-05T05:05:05+0000");

    let config = fs::read_to_string(&env.config).expect("config");
    let layout = "{year}/{month}/{day}/{hour}{minute}{second}-{stem}.{ext}";
    fs::write(&env.config, format!("{config}layout = \"{layout}\"\n")).expect("config");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    let expected = [
        "2019/01/01/120000-IMG_0009.JPG",
        "2021/03/04/050607-DSC_0002.JPG",
        "2021/03/04/050607-DSC_0002.NEF",
        "2021/03/04/050607-DSC_0002.xmp",
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
    let heic = dir.join("IMG_0001.HEIC").display().to_string();
    assert_eq!(of("IMG_0001_HEVC.MOV").expect("the video's job")["group"], heic.as_str());
    assert_eq!(of("IMG_0001.HEIC").expect("the still's job")["group"], Value::Null, "the key is no member");
    let table = stdout(&env.run(["jobs"]));
    let lines: Vec<&str> = table.lines().filter(|l| l.contains("IMG_0001")).collect();
    assert_eq!(lines.len(), 1, "{table}");
    assert!(
        lines[0].contains("IMG_0001.HEIC +1") && lines[0].contains("with IMG_0001_HEVC.MOV (acknowledged)"),
        "{table}"
    );

    // A new Live Photo whose video cannot be read: the still is stored, the
    // group is not backed up.
    ff(&["-i", "color=c=white:s=32x32", "-frames:v", "1", "still.png"]);
    tool(&dir, "heif-enc", &["-o", "IMG_0010.HEIC", "still.png"]);
    fs::remove_file(dir.join("still.png")).expect("rm");
    video("IMG_0010.MOV", "2024-01-01T00:00:00+0000");
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
    let still = |name: &str, date: &str, id: &str| {
        tool(
            &dir,
            "ffmpeg",
            &["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", name],
        );
        exif(&dir, name, &[&format!("DateTimeOriginal={date}"), "Make=Apple", "Model=iPhone 12"]);
        let note = dir.join(format!("{name}.note"));
        write(&note, &apple_maker_note(id));
        tool(&dir, "exiftool", &["-q", "-overwrite_original", &format!("-MakerNotes<={}", note.display()), name]);
        fs::remove_file(note).expect("rm");
    };
    let video = |name: &str, date: &str, id: &str| {
        let (date, id) = (
            format!("com.apple.quicktime.creationdate={date}"),
            format!("com.apple.quicktime.content.identifier={id}"),
        );
        let args =
            ["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=1:s=32x32:r=5", "-movflags", "use_metadata_tags"];
        tool(&dir, "ffmpeg", &[&args[..], &["-metadata", &date, "-metadata", &id, name]].concat());
    };
    still("IMG_0020.JPG", "2023:06:01 10:00:00", "AAAA-0020");
    video("IMG_0020.MOV", "2023-06-01T10:00:30+0530", "AAAA-0020");
    still("IMG_0021.JPG", "2023:06:01 11:00:00", "BBBB-0021");
    video("IMG_0021.MOV", "2023-06-01T11:00:01+0530", "CCCC-0021");

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

    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("{config}layout = \"{{hour}}{{minute}}{{second}}-{{stem}}.{{ext}}\"\n"))
        .expect("config");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    let stored: Vec<String> = tree(&env.dest).keys().map(|k| k.display().to_string()).collect();
    assert_eq!(
        stored,
        ["100000-IMG_0020.JPG", "100000-IMG_0020.MOV", "110000-IMG_0021.JPG", "110001-IMG_0021.MOV"],
        "{summary}"
    );
}
