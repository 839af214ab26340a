//! Capture times and date layouts, on files made by real tools: `ffmpeg`
//! encodes the images and videos, `exiftool` writes their EXIF dates,
//! offsets and cameras, `heif-enc` makes HEIC and AVIF. What photosync reads
//! is checked against what `exiftool` reads from the same files, and the
//! keys a date layout renders against both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::harness::{Env, stderr, tree, write};

/// A zone with a half-hour offset and no daylight saving time, so that
/// conversions from UTC show.
pub(crate) const TZ: &str = "Asia/Kolkata";

/// Runs a tool in `dir`, failing the test with its output if it fails.
pub(crate) fn tool(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TZ", TZ)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test (.ci/run installs it): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes EXIF tags (`Tag=value`) into `file`.
pub(crate) fn exif(dir: &Path, file: &str, tags: &[&str]) {
    let mut args = vec!["-q", "-overwrite_original"];
    let assignments: Vec<String> = tags.iter().map(|t| format!("-{t}")).collect();
    args.extend(assignments.iter().map(String::as_str));
    args.push(file);
    tool(dir, "exiftool", &args);
}

/// Runs ffmpeg in `dir` on a generated (lavfi) input.
pub(crate) fn lavfi(dir: &Path, args: &[&str]) {
    let mut all = vec!["-v", "error", "-y", "-f", "lavfi"];
    all.extend_from_slice(args);
    tool(dir, "ffmpeg", &all);
}

/// A one-frame still of `color` named `name` (its format by its name).
pub(crate) fn still(dir: &Path, name: &str, color: &str) {
    lavfi(dir, &["-i", &format!("color=c={color}:s=32x32"), "-frames:v", "1", name]);
}

/// A HEIC still of `color`, made by `heif-enc`.
pub(crate) fn heic(dir: &Path, name: &str, color: &str) {
    still(dir, "heic-source.png", color);
    tool(dir, "heif-enc", &["-o", name, "heic-source.png"]);
    fs::remove_file(dir.join("heic-source.png")).expect("rm");
}

/// A one-second `QuickTime` video with Apple's `creationdate` key, and its
/// `content.identifier` when given.
pub(crate) fn apple_video(dir: &Path, name: &str, date: &str, content_id: Option<&str>) {
    let date = format!("com.apple.quicktime.creationdate={date}");
    let mut args = vec!["-i", "testsrc=d=1:s=32x32:r=5", "-movflags", "use_metadata_tags", "-metadata", &date];
    let id = content_id.map(|id| format!("com.apple.quicktime.content.identifier={id}"));
    if let Some(id) = &id {
        args.extend(["-metadata", id.as_str()]);
    }
    args.push(name);
    lavfi(dir, &args);
}

/// Appends `layout` to the (last) destination of `env`'s config.
pub(crate) fn set_layout(env: &Env, layout: &str) {
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, format!("{config}layout = \"{layout}\"\n")).expect("config");
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
    set_layout(&env, "{year}/{month}/{day}/{hour}{minute}{second}-{kind}-{filename}");
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

    set_layout(&env, "{year}/{filename}");
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
