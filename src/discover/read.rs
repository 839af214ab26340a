//! Reading one candidate file: once, front to back, for its kind, hash,
//! capture time and group (a sidecar with the photo it describes); or, for
//! a version recorded before capture times were kept, its headers alone.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use super::{candidate, stat_of};
use crate::catalog::FileStat;
use crate::config::SourceConfig;
use crate::media::group::{self, Folders};
use crate::media::{self, Inspection, sidecar};
use crate::model::{AssetInfo, GroupName};

/// What reading a candidate file found.
pub(super) enum Read {
    /// A photo or video, with its hash, size and metadata (and its SHA-1,
    /// when the source asks for it).
    Media { hash: crate::model::ContentHash, size: u64, info: AssetInfo, sha1: Option<String> },
    /// Its content is not a photo or video.
    NotMedia,
    /// A sidecar (`.xmp`, `.AAE`, Takeout `.json`) with no photo or video
    /// beside it to describe.
    Orphan,
    /// It changed while it was read: the next scan picks it up once stable.
    Changed,
}

/// Reads a candidate file once.
pub(super) fn read_file(source: &SourceConfig, path: &Path, stat: FileStat, folders: &mut Folders) -> io::Result<Read> {
    if let Some(kind) = sidecar::kind_of(path) {
        return read_sidecar(source, path, stat, kind, folders);
    }
    let mut file = File::open(path)?;
    let now = jiff::Timestamp::now();
    match media::inspect(&mut file, stat.size, now, source.sha1)? {
        Inspection::NotMedia => {
            tracing::debug!(path = %path.display(), "skipped: content is not a photo or video");
            Ok(Read::NotMedia)
        }
        Inspection::Media { kind, hash, size, embedded, sha1 } => {
            let after = stat_of(&file.metadata()?);
            if size != stat.size || after != stat {
                tracing::warn!(path = %path.display(), "skipped: the file changed while it was read; it is picked up once it is stable");
                return Ok(Read::Changed);
            }
            let content_id = embedded.content_id.clone();
            let info = media::capture::resolve(kind, embedded, path, stat.mtime_ns, now);
            let info = grouped(source, path, info, content_id.as_deref(), folders, now);
            Ok(Read::Media { hash, size, info, sha1 })
        }
    }
}

/// Reads a sidecar once, if the photo or video it describes is beside it
/// (and backed up): it is then recorded with that photo's capture time and
/// camera, so a date layout puts the two in the same folder.
fn read_sidecar(
    source: &SourceConfig,
    path: &Path,
    stat: FileStat,
    kind: sidecar::SidecarKind,
    folders: &mut Folders,
) -> io::Result<Read> {
    let Some(partner) = sidecar::partner(path, kind, folders).filter(|p| candidate(source, p).is_some()) else {
        tracing::debug!(path = %path.display(), "skipped: a sidecar with no photo beside it");
        return Ok(Read::Orphan);
    };
    let mut file = File::open(path)?;
    let Some((hash, size)) = media::inspect_sidecar(&mut file, kind)? else {
        tracing::debug!(path = %path.display(), "skipped: its content is not the sidecar its name says");
        return Ok(Read::NotMedia);
    };
    if size != stat.size || stat_of(&file.metadata()?) != stat {
        return Ok(Read::Changed);
    }
    let now = jiff::Timestamp::now();
    let described = std::fs::metadata(&partner).and_then(|m| Ok((m, media::describe(&partner, now)?)));
    match described {
        Ok((metadata, Some((kind, embedded)))) => {
            let content_id = embedded.content_id.clone();
            let info = media::capture::resolve(kind, embedded, &partner, stat_of(&metadata).mtime_ns, now);
            // It joins its photo's group, or the photo's own.
            let info = grouped(source, &partner, info, content_id.as_deref(), folders, now);
            let group = info.group.clone().or_else(|| group::join(&partner, relative_bytes(source, &partner)?));
            // `IMG_1.CR2.xmp` keeps its `.CR2` after the group's stem, so two
            // sidecars of one group do not render alike.
            let group = group.map(|g| GroupName { stem: g.stem + &group::inner_suffix(path, &partner), ..g });
            Ok(Read::Media { hash, size, info: AssetInfo { group, ..info }, sha1: None })
        }
        // Its partner is gone, or is no photo after all.
        Ok((_, None)) => Ok(Read::Orphan),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Read::Orphan),
        Err(e) => Err(e),
    }
}

/// What the photo or video at `path` (of `source`, modified at `mtime_ns`)
/// is, from its headers alone, as a member of its group where it is one:
/// for versions recorded before capture times were kept. `None` if it is
/// not a photo or video now.
pub fn describe(
    source: &SourceConfig,
    path: &Path,
    mtime_ns: i64,
    folders: &mut Folders,
) -> io::Result<Option<AssetInfo>> {
    let now = jiff::Timestamp::now();
    let Some((kind, embedded)) = media::describe(path, now)? else { return Ok(None) };
    let content_id = embedded.content_id.clone();
    let info = media::capture::resolve(kind, embedded, path, mtime_ns, now);
    Ok(Some(grouped(source, path, info, content_id.as_deref(), folders, now)))
}

/// `info` of the photo or video at `path`, as a member of its group when a
/// file beside it is the group's key (same stem, ranked before it, backed
/// up too, and the same Apple content identifier where both have one, else
/// taken within [`group::MAX_APART_SECONDS`]): then the key's capture time,
/// camera and stem.
fn grouped(
    source: &SourceConfig,
    path: &Path,
    info: AssetInfo,
    content_id: Option<&str>,
    folders: &mut Folders,
    now: jiff::Timestamp,
) -> AssetInfo {
    let Some(key) = folders.key_beside(path) else { return info };
    let Some(key_rel) = relative_bytes(source, &key) else { return info };
    let described = std::fs::metadata(&key).ok().zip(media::describe(&key, now).ok().flatten());
    let Some((metadata, (kind, embedded))) = described else { return info };
    let key_id = embedded.content_id.clone();
    let key_info = media::capture::resolve(kind, embedded, &key, stat_of(&metadata).mtime_ns, now);
    let zone = jiff::tz::TimeZone::system();
    let apart = (key_info.capture.epoch_seconds(&zone) - info.capture.epoch_seconds(&zone)).abs();
    // Apple's identifiers, where both files have one, decide; else the time.
    let together = match (content_id, key_id.as_deref()) {
        (Some(mine), Some(key)) => mine == key,
        _ => apart <= group::MAX_APART_SECONDS,
    };
    match group::join(&key, key_rel) {
        Some(group) if together => AssetInfo { group: Some(group), ..key_info },
        _ => info,
    }
}

/// `path` below `source`, as the catalog spells it, if `source` backs it up.
fn relative_bytes(source: &SourceConfig, path: &Path) -> Option<Vec<u8>> {
    candidate(source, path).map(|relative| relative.as_os_str().as_bytes().to_vec())
}
