//! When a photo or video was taken, and by which camera.
//!
//! [`embedded`] reads what the file's own metadata says (EXIF in stills and
//! raws, `QuickTime` metadata in videos) from its headers only, within a
//! byte and step budget (the `reader` module), so a broken or hostile file costs
//! bounded time and memory and yields "no date" rather than an error.
//! [`resolve`] then picks the capture time: the embedded one, else a date in
//! the file name (zero dates, the 1904 and 1970 epochs and dates in the
//! future are rejected on the way), else the file's modification time,
//! taken as it is.

mod bmff;
mod name;
mod reader;
mod still;
mod tiff;

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::model::{AssetInfo, Capture, CaptureSource, MediaKind};
use reader::Reader;

/// Seconds from the `QuickTime` epoch (1904-01-01) to the Unix epoch.
const QUICKTIME_EPOCH: i64 = 2_082_844_800;

/// What a file's own metadata records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embedded {
    /// The capture time, if one was found and is plausible.
    pub capture: Option<Capture>,
    /// Make and model.
    pub camera: Option<String>,
    /// Apple's identifier shared by a Live Photo's still and video.
    pub content_id: Option<String>,
}

/// Reads the capture time and camera from the metadata of `file`, `len`
/// bytes long, whose first bytes are `head`.
pub fn embedded(file: &File, len: u64, head: &[u8], now: Timestamp) -> Embedded {
    embedded_in(&Reader::file(file, len, head), head, now)
}

fn embedded_in(reader: &Reader<'_>, head: &[u8], now: Timestamp) -> Embedded {
    let tiff_at = |at: Option<u64>| at.map(|at| tiff::read(reader, at)).unwrap_or_default();
    let tags = match head {
        [0xFF, 0xD8, 0xFF, ..] => tiff_at(still::jpeg(reader, 0)),
        [0x89, b'P', b'N', b'G', ..] => match still::png(reader) {
            Some(still::Exif::At(at)) => tiff::read(reader, at),
            Some(still::Exif::Decoded(bytes)) => tiff::read(&Reader::memory(&bytes), 0),
            None => tiff::Tags::default(),
        },
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => tiff_at(still::webp(reader)),
        [b'I', b'I', b'*' | b'U', 0, ..]
        | [b'M', b'M', 0, b'*', ..]
        | [b'I', b'I', b'R', b'O' | b'S', ..]
        | [b'M', b'M', b'O', b'R', ..] => tiff::read(reader, 0),
        _ if head.starts_with(b"FUJIFILMCCD-RAW") => tiff_at(still::raf(reader)),
        [0, b'M', b'R', b'M', ..] => tiff_at(still::mrw(reader)),
        [_, _, _, _, kind @ ..] if is_movie_box(kind) => return movie(&bmff::read(reader), now),
        _ => tiff::Tags::default(),
    };
    from_exif(&tags, now)
}

fn is_movie_box(kind: &[u8]) -> bool {
    [b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"].iter().any(|k| kind.starts_with(*k))
}

fn from_exif(tags: &tiff::Tags, now: Timestamp) -> Embedded {
    let camera = camera(tags.make.as_deref(), tags.model.as_deref());
    let dated = |date: &Option<String>, offset: &Option<String>| {
        let local = exif_datetime(date.as_deref()?)?;
        let offset = offset.as_deref().and_then(parse_offset);
        Some(Capture { local, offset, source: CaptureSource::Exif }).filter(|c| plausible(c, now))
    };
    // `OffsetTime` (of `ModifyDate`) stands in for a missing offset, as
    // exiftool takes it: a camera writes all three in the zone it is set to.
    let original_offset = tags.offset_original.as_ref().or(tags.offset.as_ref()).cloned();
    let digitized_offset = tags.offset_digitized.as_ref().or(tags.offset.as_ref()).cloned();
    let capture =
        dated(&tags.date_original, &original_offset).or_else(|| dated(&tags.date_digitized, &digitized_offset));
    Embedded { capture, camera, content_id: tags.content_id.clone() }
}

fn movie(found: &bmff::Found, now: Timestamp) -> Embedded {
    if found.exif.has_date() {
        return from_exif(&found.exif, now);
    }
    let keyed = found.creation_date.as_deref().and_then(iso_datetime).map(|(local, offset)| Capture {
        local,
        offset,
        source: CaptureSource::QuickTime,
    });
    let header = || {
        let seconds = i64::try_from(found.movie_created?).ok()? - QUICKTIME_EPOCH;
        Some(in_local_zone(Timestamp::from_second(seconds).ok()?, CaptureSource::QuickTime))
    };
    let capture = keyed.filter(|c| plausible(c, now)).or_else(|| header().filter(|c| plausible(c, now)));
    let make = found.make.as_deref().or(found.exif.make.as_deref());
    let model = found.model.as_deref().or(found.exif.model.as_deref());
    let content_id = found.content_id.clone().or_else(|| found.exif.content_id.clone());
    Embedded { capture, camera: camera(make, model), content_id }
}

/// What is known of a photo or video: its kind, its capture time (the
/// embedded one, else from its file name, else its modification time
/// `mtime_ns`), and its camera.
pub fn resolve(kind: MediaKind, embedded: Embedded, path: &Path, mtime_ns: i64, now: Timestamp) -> AssetInfo {
    let Embedded { capture, camera, .. } = embedded;
    let capture = capture.or_else(|| from_name(path.file_stem()?, now)).unwrap_or_else(|| {
        // To the second, as every other source.
        let seconds = mtime_ns.div_euclid(1_000_000_000);
        in_local_zone(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH), CaptureSource::Mtime)
    });
    AssetInfo { kind, capture, camera, group: None }
}

/// A date in the file name. Pixel phones name files in UTC
/// (`PXL_20230102_123456789.jpg`; immich-go issue #397), every other
/// namer in local time.
fn from_name(stem: &OsStr, now: Timestamp) -> Option<Capture> {
    let stem = stem.to_str()?;
    let local = name::date_in(stem)?;
    let capture = if stem.starts_with("PXL_") {
        in_local_zone(local.to_zoned(TimeZone::UTC).ok()?.timestamp(), CaptureSource::FileName)
    } else {
        Capture { local, offset: None, source: CaptureSource::FileName }
    };
    Some(capture).filter(|c| plausible(c, now))
}

/// An instant as the wall-clock time of this machine's zone.
fn in_local_zone(instant: Timestamp, source: CaptureSource) -> Capture {
    let zoned = instant.to_zoned(TimeZone::system());
    Capture { local: zoned.datetime(), offset: Some(zoned.offset()), source }
}

/// Whether a capture time can be true: not before photography, not a zero
/// or epoch date (1904 for `QuickTime`, 1970 for Unix, give or take a zone),
/// not in the future.
fn plausible(capture: &Capture, now: Timestamp) -> bool {
    let date = capture.local.date();
    let near = |year: i16| {
        let epoch = Date::constant(year, 1, 1);
        date == epoch || date == Date::constant(year - 1, 12, 31)
    };
    if date.year() < 1826 || near(1904) || near(1970) {
        return false;
    }
    // Without an offset, the earliest instant it can be is at UTC+14.
    let offset = capture.offset.unwrap_or(Offset::constant(14));
    let Ok(instant) = offset.to_timestamp(capture.local) else { return false };
    instant <= now.saturating_add(SignedDuration::from_mins(10)).unwrap_or(now)
}

/// The camera's name from its make and model: the model alone when it
/// names the make already (`Canon` + `Canon EOS R5`).
fn camera(make: Option<&str>, model: Option<&str>) -> Option<String> {
    let (make, model) = (make.map(str::trim).filter(|s| !s.is_empty()), model.map(str::trim).filter(|s| !s.is_empty()));
    match (make, model) {
        (Some(make), Some(model)) if model.to_lowercase().starts_with(&make.to_lowercase()) => Some(model.to_owned()),
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (one, other) => one.or(other).map(str::to_owned),
    }
}

/// An EXIF date, `YYYY:MM:DD HH:MM:SS` (writers vary the separators; zero
/// and blank dates do not parse).
fn exif_datetime(text: &str) -> Option<DateTime> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i16> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |v, d| v * 10 + i16::from(d - b'0')))
    };
    let date = Date::new(number(0..4)?, number(5..7)? as i8, number(8..10)? as i8).ok()?;
    let time = jiff::civil::Time::new(number(11..13)? as i8, number(14..16)? as i8, number(17..19)? as i8, 0).ok()?;
    Some(date.to_datetime(time))
}

/// An offset as EXIF (`+02:00`) or ISO 8601 (`+0200`, `Z`) writes it.
fn parse_offset(text: &str) -> Option<Offset> {
    let text = text.trim();
    if text == "Z" {
        return Some(Offset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 || rest.len() > 5 {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
}

/// An ISO 8601 time with an optional fraction and offset, as Apple's
/// `creationdate` key holds it: `2019-02-12T15:27:12+0800`.
fn iso_datetime(text: &str) -> Option<(DateTime, Option<Offset>)> {
    let local = exif_datetime(text)?;
    let rest = text.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = if rest.is_empty() { None } else { Some(parse_offset(rest)?) };
    Some((local, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-02T12:00:00Z".parse().expect("now")
    }

    #[test]
    fn exif_dates_and_offsets_parse_and_implausible_ones_are_rejected() {
        let capture = |local: &str, offset: Option<i32>| Capture {
            local: local.parse().expect("datetime"),
            offset: offset.map(|s| Offset::from_seconds(s).expect("offset")),
            source: CaptureSource::Exif,
        };
        assert_eq!(exif_datetime("2019:06:15 14:22:33"), Some("2019-06-15T14:22:33".parse().expect("dt")));
        assert_eq!(exif_datetime("0000:00:00 00:00:00"), None);
        assert_eq!(exif_datetime("    :  :     :  :  "), None);
        assert_eq!(exif_datetime("2019:06"), None);
        assert_eq!(parse_offset("+02:00"), Some(Offset::from_seconds(7200).expect("offset")));
        assert_eq!(parse_offset("-0530"), Some(Offset::from_seconds(-19800).expect("offset")));
        assert_eq!(parse_offset("+99:00"), None);
        assert_eq!(
            iso_datetime("2019-02-12T15:27:12+0800"),
            Some(("2019-02-12T15:27:12".parse().expect("dt"), Some(Offset::from_seconds(28800).expect("offset"))))
        );
        assert!(plausible(&capture("2019-06-15T14:22:33", None), now()));
        assert!(!plausible(&capture("1904-01-01T00:04:59", None), now()), "the QuickTime epoch");
        assert!(!plausible(&capture("1969-12-31T19:00:00", Some(-18000)), now()), "the Unix epoch in New York");
        assert!(!plausible(&capture("2027-01-01T00:00:00", None), now()), "the future");
        assert!(plausible(&capture("2026-12-02T23:00:00", None), now()), "today, somewhere east");
        assert!(!plausible(&capture("1200-01-01T00:00:00", None), now()));
    }

    #[test]
    fn the_camera_is_named_once() {
        assert_eq!(camera(Some("Canon"), Some("Canon EOS R5")).as_deref(), Some("Canon EOS R5"));
        assert_eq!(camera(Some("Apple"), Some("iPhone 15 Pro")).as_deref(), Some("Apple iPhone 15 Pro"));
        assert_eq!(camera(Some(" "), Some("X100V")).as_deref(), Some("X100V"));
        assert_eq!(camera(None, None), None);
    }

    #[test]
    fn the_name_and_then_the_file_time_stand_in_for_a_missing_date() {
        let path = Path::new("/p/IMG_20190615_142233.jpg");
        let info = resolve(MediaKind::Photo, Embedded::default(), path, 0, now());
        assert_eq!(info.capture.source, CaptureSource::FileName);
        assert_eq!(info.capture.local.to_string(), "2019-06-15T14:22:33");
        let mtime = 1_560_000_000_000_000_000;
        let info = resolve(MediaKind::Photo, Embedded::default(), Path::new("/p/DSC_0001.jpg"), mtime, now());
        assert_eq!(info.capture.source, CaptureSource::Mtime);
        assert_eq!(info.capture.epoch_seconds(&TimeZone::UTC), 1_560_000_000);
    }
}
