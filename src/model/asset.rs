//! What is known of an asset beyond its bytes: whether it is a photo or a
//! video, when it was taken and by which camera. Discovery reads these once
//! per version; layouts render keys from them.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// Broad class of a media file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A still image (JPEG, HEIF, PNG, raw, …).
    Photo,
    /// A moving image (MP4, `QuickTime`, Matroska, MPEG-TS, …).
    Video,
}

impl MediaKind {
    /// `photo` or `video`, as stored and as a layout renders `{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Video => "video",
        }
    }

    /// The inverse of [`MediaKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "photo" => Some(Self::Photo),
            "video" => Some(Self::Video),
            _ => None,
        }
    }
}

/// Where a capture time was read, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaptureSource {
    /// The photo's EXIF `DateTimeOriginal` (or `CreateDate`).
    Exif,
    /// A video's `QuickTime` metadata: Apple's `creationdate` key, else the
    /// movie header's creation time.
    QuickTime,
    /// A date in the file name (`IMG_20190615_142233.jpg`).
    FileName,
    /// The file's modification time: the last resort.
    Mtime,
}

impl CaptureSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exif => "exif",
            Self::QuickTime => "quicktime",
            Self::FileName => "filename",
            Self::Mtime => "mtime",
        }
    }

    /// The inverse of [`CaptureSource::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Exif, Self::QuickTime, Self::FileName, Self::Mtime].into_iter().find(|s| s.as_str() == text)
    }
}

/// When a photo or video was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// The wall-clock time where it was taken, to the second: what the
    /// camera's clock showed, and what layouts render.
    pub local: DateTime,
    /// Its offset from UTC, when the file says (or the time was recorded in
    /// UTC and converted to this machine's zone).
    pub offset: Option<Offset>,
    /// Where it was read.
    pub source: CaptureSource,
}

impl Capture {
    /// The offset as EXIF writes it, `+02:00`.
    pub fn offset_text(&self) -> Option<String> {
        self.offset.map(|o| {
            let seconds = o.seconds();
            let sign = if seconds < 0 { '-' } else { '+' };
            let minutes = seconds.unsigned_abs() / 60;
            format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        })
    }

    /// RFC 3339 with the offset (`2019-03-14T14:22:05+01:00`); a time
    /// without one is taken as `zone`'s local time. `None` for a time that
    /// does not exist there (in a summer-time gap).
    pub fn rfc3339(&self, zone: &TimeZone) -> Option<String> {
        let zoned = match self.offset {
            Some(offset) => offset.to_timestamp(self.local).ok()?.to_zoned(TimeZone::fixed(offset)),
            None => self.local.to_zoned(zone.clone()).ok()?,
        };
        Some(zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
    }

    /// Seconds since the Unix epoch, for ordering: exact when the offset is
    /// known, else the wall-clock time taken as `zone`'s local time.
    pub fn epoch_seconds(&self, zone: &TimeZone) -> i64 {
        let instant = match self.offset {
            Some(offset) => offset.to_timestamp(self.local).ok(),
            None => self.local.to_zoned(zone.clone()).ok().map(|z| z.timestamp()),
        };
        instant.map_or(0, jiff::Timestamp::as_second)
    }
}

/// What a read of an asset's metadata found. A member of a group (a Live
/// Photo's video, a raw's JPEG, a sidecar) is described as its group's key
/// file: the key's kind, capture time and camera, so that layouts put the
/// group together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetInfo {
    /// Photo or video.
    pub kind: MediaKind,
    /// When it was taken (always known: the file's time is the last resort).
    pub capture: Capture,
    /// The camera's make and model as the file names them, if it does.
    pub camera: Option<String>,
    /// The group it travels with, when it is a member (not the key).
    pub group: Option<GroupName>,
}

/// Which group a member belongs to, and the stem it is rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName {
    /// The key file's path below the source.
    pub key: Vec<u8>,
    /// The key's stem, which a layout's `{stem}` renders for the member
    /// (its `{filename}` stays its own).
    pub stem: String,
}
