//! Finding photos and videos in source folders and recording each new
//! version in the catalog.
//!
//! [`scan_source`] walks one source (following symlinks, but never round a
//! loop), keeps what `filter` admits, skips files whose size, mtime and
//! inode match the catalog's stat cache, and reads every other file exactly
//! once to sniff its type and hash its content. It then queues a job for
//! every current file at every destination. A complete scan of an available
//! source also forgets the files it no longer finds ([`source`] decides
//! what "available" means, so an unmounted disk is never taken for deleted
//! photos). [`watch`] adds the live watcher for the daemon.

mod filter;
pub mod gate;
mod paths;
mod read;
mod readers;
pub mod source;
mod walk;
pub mod watch;

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use self::read::describe;
use self::read::{Read, read_file};
use self::readers::Readers;
use self::walk::Walked;
use crate::catalog::{Catalog, CatalogError, FileStat, Flushed, ScanWriter, SeenPaths};
use crate::config::SourceConfig;
use crate::media;
use crate::media::group::Folders;
use crate::model::Timestamp;

/// A file or folder that could not be read during a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanError {
    /// The path.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Why a file in a source is not backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its content is not a photo or video (or its extension is not one).
    NotMedia,
    /// A dotfile, or inside a dot-folder.
    Hidden,
    /// A partial download or temporary file (`.part`, `.crdownload`, `~$…`).
    PartialDownload,
    /// Operating-system litter (`Thumbs.db`, `desktop.ini`).
    OsMetadata,
    /// Left out by the source's `include`/`exclude` rules.
    Excluded,
}

/// Files of a scan that are not backed up, by reason (files that could not
/// be read are [`ScanReport::errors`], those still changing
/// [`ScanReport::settling`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Skipped {
    /// Not a photo or video.
    pub not_media: u64,
    /// Hidden files, and hidden folders (each counted once; what is inside
    /// them is not looked at).
    pub hidden: u64,
    /// Partial downloads and temporary files.
    pub partial_download: u64,
    /// Operating-system litter.
    pub os_metadata: u64,
    /// Left out by `include`/`exclude`.
    pub excluded: u64,
}

impl Skipped {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Skipped) {
        self.not_media += other.not_media;
        self.hidden += other.hidden;
        self.partial_download += other.partial_download;
        self.os_metadata += other.os_metadata;
        self.excluded += other.excluded;
    }

    /// Counts one file skipped for `reason`.
    pub fn count(&mut self, reason: SkipReason) {
        *match reason {
            SkipReason::NotMedia => &mut self.not_media,
            SkipReason::Hidden => &mut self.hidden,
            SkipReason::PartialDownload => &mut self.partial_download,
            SkipReason::OsMetadata => &mut self.os_metadata,
            SkipReason::Excluded => &mut self.excluded,
        } += 1;
    }
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanReport {
    /// Photos and videos present in the source.
    pub media_files: u64,
    /// Of those, files read because they were new or changed.
    pub read: u64,
    /// Content versions the catalog had not seen at that path.
    pub new_versions: u64,
    /// Bytes read to hash.
    pub bytes_read: u64,
    /// Jobs queued by this scan.
    pub jobs_queued: u64,
    /// Files and folders that could not be read.
    pub errors: Vec<ScanError>,
    /// Files modified too recently to read yet (still being written?).
    pub settling: u64,
    /// Their paths, for the watcher to follow.
    #[serde(skip)]
    pub unsettled: Vec<PathBuf>,
    /// Files recorded before that this (complete) scan no longer found.
    pub gone: u64,
    /// Why the source could not be scanned now (not mounted, say); its
    /// jobs wait and nothing is concluded from its absence.
    pub unavailable: Option<String>,
    /// Files that are not backed up, by reason.
    pub skipped: Skipped,
    /// Files read and found not to be photos or videos (once per version:
    /// the verdict is kept).
    pub not_media_read: u64,
}

/// Scans `source`, records what changed, and queues jobs as it goes
/// (marking new versions as found `live`, for a daemon past its first scan).
/// `on_progress` is called after each media file with the running report
/// and the number of catalog records written since the previous call (so
/// uploads can start before the scan ends). Setting `stop` ends the scan
/// early. Files modified after `settle_cutoff` are not read: they are listed
/// in [`ScanReport::unsettled`] for the caller to watch until they settle.
pub fn scan_source(
    catalog: &mut Catalog,
    source: &SourceConfig,
    settle_cutoff: Option<SystemTime>,
    live: bool,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&ScanReport, u64),
) -> Result<ScanReport, CatalogError> {
    let mut report = ScanReport::default();
    let root = &source.path;
    let Some(root_text) = available_root(catalog, source, &mut report)? else { return Ok(report) };

    // Every candidate path that exists, so that what is missing can be forgotten.
    let mut seen = SeenPaths::default();
    let mut folders = Folders::default();
    let mut writer = catalog.scan_writer(root_text).by_folder();
    if live {
        writer = writer.live();
    }
    let (complete, hidden_folders) = std::thread::scope(|scope| -> Result<(bool, u64), CatalogError> {
        let mut complete = true;
        let mut readers = Readers::start(scope, source, stop);
        let (batches, walker) = walk::start(scope, source, stop);
        'walk: for batch in &batches {
            for walked in batch {
                // What the readers finished is recorded as it comes (and files
                // waiting for a chunk long enough are handed on), whatever the entry.
                for (path, stat, read) in readers.ready() {
                    let written = record(&mut writer, source, &path, stat, read, &mut report)?;
                    on_progress(&report, written);
                }
                if stop.load(Ordering::Relaxed) {
                    complete = false;
                    break 'walk;
                }
                let (entry, stat) = match walked {
                    Walked::File(entry, stat) => (entry, stat),
                    Walked::Skipped(reason) => {
                        report.skipped.count(reason);
                        continue;
                    }
                    Walked::Failed(e) => {
                        // A folder that could not be read hides files that are not gone.
                        complete &= e.loop_ancestor().is_some() || is_vanished(e.io_error());
                        note_walk_error(&e, &mut report);
                        continue;
                    }
                };
                let Some(relative) = paths::relative(root, entry.path()) else { continue };
                seen.insert(relative.as_os_str().as_bytes());
                let stat = match stat {
                    Ok(stat) => stat,
                    Err(e) => {
                        if !is_vanished(Some(&e)) {
                            report.errors.push(error_at(entry.path(), &e.to_string()));
                        }
                        continue;
                    }
                };
                match triage(&mut writer, source, entry.path(), stat, settle_cutoff, &mut folders, &mut report)? {
                    Triage::Done(written) => on_progress(&report, written),
                    // Read and hashed beside the walk; recorded above as they come.
                    Triage::Read(stat) => readers.send(entry.into_path(), stat),
                }
            }
        }
        // Ends the walk if it is not over (a stop).
        drop(batches);
        let hidden_folders = walker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (path, stat, read) in readers.finish() {
            let written = record(&mut writer, source, &path, stat, read, &mut report)?;
            on_progress(&report, written);
        }
        // A stop after the walk leaves queued files unread: not complete.
        Ok((complete && !stop.load(Ordering::Relaxed), hidden_folders))
    })?;
    report.skipped.hidden += hidden_folders;
    let mut written = report.add(writer.finish(Timestamp::now())?);
    if complete {
        report.gone = catalog.forget_unseen(root_text, &seen)?;
        if report.gone > 0 {
            tracing::info!(source = %root.display(), files = report.gone, "files no longer in the source were forgotten");
            written += report.gone;
        }
    }
    // Files recorded by earlier scans need jobs too when a destination was added.
    let for_new_destinations = catalog.enqueue_current(root_text, Timestamp::now())? as u64;
    report.jobs_queued += for_new_destinations;
    written += for_new_destinations;
    on_progress(&report, written);
    Ok(report)
}

/// Records one file of `source` (found by the watcher) if it is a photo or
/// video that changed, and queues its jobs; `folders` keeps the listings
/// that find its group.
pub fn scan_file(
    catalog: &mut Catalog,
    source: &SourceConfig,
    path: &Path,
    folders: &mut Folders,
) -> Result<ScanReport, CatalogError> {
    let mut report = ScanReport::default();
    if candidate(source, path).is_none() {
        return Ok(report);
    }
    let Some(root_text) = available_root(catalog, source, &mut report)? else { return Ok(report) };
    let metadata = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(report),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            report.errors.push(error_at(path, &e.to_string()));
            return Ok(report);
        }
    };
    let mut writer = catalog.scan_writer(root_text).live();
    visit(&mut writer, source, path, &metadata, None, folders, &mut report)?;
    report.add(writer.finish(Timestamp::now())?);
    Ok(report)
}

/// The relative path of `path` if it is a backup candidate of `source`: no
/// hidden or junk name on the way, admitted by the include/exclude rules.
/// Whether it is a photo or video its content decides, whatever its
/// extension (it has none, at times).
pub fn candidate<'p>(source: &SourceConfig, path: &'p Path) -> Option<&'p Path> {
    classify(source, path).ok()
}

/// [`candidate`], saying why a file of `source` is not one. A path outside
/// the source, or the source itself, is not media.
pub fn classify<'p>(source: &SourceConfig, path: &'p Path) -> Result<&'p Path, SkipReason> {
    let relative = paths::relative(&source.path, path).ok_or(SkipReason::NotMedia)?;
    let bytes = relative.as_os_str().as_bytes();
    let (name, in_hidden_folder) = if paths::is_plain(bytes) {
        let (folder, name) = crate::model::split_folder(bytes);
        (std::ffi::OsStr::from_bytes(name), paths::is_hidden_folder(folder))
    } else {
        let name = relative.file_name().ok_or(SkipReason::NotMedia)?;
        (name, relative.parent().is_some_and(|dir| dir.iter().any(filter::is_hidden)))
    };
    if in_hidden_folder {
        return Err(SkipReason::Hidden);
    }
    if let Some(reason) = filter::junk_reason(name) {
        return Err(reason);
    }
    if !source.admits(relative) {
        return Err(SkipReason::Excluded);
    }
    Ok(relative)
}

/// The catalog spelling of the source's root when the source can be
/// scanned now; otherwise `None`, with the reason in the report (an error for
/// a source that never existed, `unavailable` for one that is not there now).
fn available_root<'s>(
    catalog: &mut Catalog,
    source: &'s SourceConfig,
    report: &mut ScanReport,
) -> Result<Option<&'s str>, CatalogError> {
    let root = &source.path;
    let Some(text) = root.to_str() else {
        report.errors.push(error_at(root, "the source path is not valid UTF-8"));
        return Ok(None);
    };
    match source::availability(catalog, root, text)? {
        source::Availability::Available { device } => {
            if catalog.source_device(text)? != Some(device) {
                catalog.record_source_device(text, device)?;
            }
            Ok(Some(text))
        }
        source::Availability::Unavailable(reason) => {
            tracing::warn!("{reason}; its photos wait until it is back");
            report.unavailable = Some(reason);
            Ok(None)
        }
        source::Availability::Broken(reason) => {
            report.errors.push(error_at(root, &reason));
            Ok(None)
        }
    }
}

/// What the walk does with a candidate file.
enum Triage {
    /// Nothing to read (unchanged, known not media, still settling): the
    /// catalog records written.
    Done(u64),
    /// Read it: new or changed.
    Read(FileStat),
}

/// The per-file step of the watcher (scans split it between the walk and
/// the readers): skip it if unchanged, defer it if still settling, else
/// read it once and record it.
fn visit(
    writer: &mut ScanWriter<'_>,
    source: &SourceConfig,
    path: &Path,
    metadata: &std::fs::Metadata,
    settle_cutoff: Option<SystemTime>,
    folders: &mut Folders,
    report: &mut ScanReport,
) -> Result<u64, CatalogError> {
    match triage(writer, source, path, stat_of(metadata), settle_cutoff, folders, report)? {
        Triage::Done(written) => Ok(written),
        Triage::Read(stat) => {
            let read = read_file(source, path, stat, folders);
            record(writer, source, path, stat, read, report)
        }
    }
}

/// Whether `path` must be read: not if the catalog knows it unchanged (a
/// version recorded before capture times were kept gets its headers read
/// here) or not media, nor while it is still settling.
fn triage(
    writer: &mut ScanWriter<'_>,
    source: &SourceConfig,
    path: &Path,
    stat: FileStat,
    settle_cutoff: Option<SystemTime>,
    folders: &mut Folders,
    report: &mut ScanReport,
) -> Result<Triage, CatalogError> {
    let Some(relative) = paths::relative(&source.path, path) else { return Ok(Triage::Done(0)) };
    let rel_bytes = relative.as_os_str().as_bytes();
    if let Some(unchanged) = writer.unchanged(rel_bytes, stat)? {
        report.media_files += 1;
        if unchanged.described {
            return Ok(Triage::Done(0));
        }
        // Recorded before capture times were kept: read its headers, not all of it.
        let written = match describe(source, path, stat.mtime_ns, folders) {
            Ok(Some(info)) => report.add(writer.describe(unchanged.asset, info, Timestamp::now())?),
            // Its content changed under an unchanged stat: the next read of it finds out.
            Ok(None) => 0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => {
                report.errors.push(error_at(path, &format!("cannot read: {e}")));
                0
            }
        };
        return Ok(Triage::Done(written));
    }
    if writer.is_known_not_media(rel_bytes, stat)? {
        report.skipped.count(SkipReason::NotMedia);
        return Ok(Triage::Done(0));
    }
    if let Some(cutoff) = settle_cutoff
        && modified(stat) > cutoff
    {
        report.settling += 1;
        report.unsettled.push(path.to_owned());
        return Ok(Triage::Done(0));
    }
    Ok(Triage::Read(stat))
}

/// Records what reading `path` (with `stat` before the read) found.
fn record(
    writer: &mut ScanWriter<'_>,
    source: &SourceConfig,
    path: &Path,
    stat: FileStat,
    read: io::Result<Read>,
    report: &mut ScanReport,
) -> Result<u64, CatalogError> {
    let Some(relative) = paths::relative(&source.path, path) else { return Ok(0) };
    let rel_bytes = relative.as_os_str().as_bytes();
    match read {
        Ok(Read::Media { hash, size, info, sha1 }) => {
            report.media_files += 1;
            report.read += 1;
            report.bytes_read += size;
            if let Some(sha1) = sha1 {
                // Written with the version (same batch), before its jobs can start.
                writer.record_sha1(&hash, sha1);
            }
            return Ok(report.add(writer.record(rel_bytes, stat, hash, info, Timestamp::now())?));
        }
        Ok(Read::NotMedia) => {
            if path.extension().is_some_and(media::is_media_extension) {
                tracing::warn!(path = ?path, "not backed up: named like a photo or video, but its content is not one");
            }
            report.not_media_read += 1;
            report.skipped.count(SkipReason::NotMedia);
            return Ok(report.add(writer.record_not_media(rel_bytes, stat, Timestamp::now())?));
        }
        Ok(Read::Orphan) => {
            // Not remembered as not media: its photo may come, and the
            // next scan looks again.
            report.skipped.count(SkipReason::NotMedia);
        }
        Ok(Read::Changed) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "file vanished during the scan");
        }
        Err(e) => report.errors.push(error_at(path, &format!("cannot read: {e}"))),
    }
    Ok(0)
}

impl ScanReport {
    /// Adds a flush to the tally; returns the records it wrote.
    fn add(&mut self, flushed: Flushed) -> u64 {
        self.new_versions += flushed.new_versions;
        self.jobs_queued += flushed.jobs_queued;
        flushed.records
    }
}

/// The stat-cache key of a file.
pub fn stat_of(metadata: &std::fs::Metadata) -> FileStat {
    FileStat {
        size: metadata.len(),
        mtime_ns: metadata.mtime().saturating_mul(1_000_000_000).saturating_add(metadata.mtime_nsec()),
        inode: metadata.ino(),
    }
}

/// When a file with this stat was last modified.
fn modified(stat: FileStat) -> SystemTime {
    let since = std::time::Duration::from_nanos(stat.mtime_ns.unsigned_abs());
    if stat.mtime_ns >= 0 { SystemTime::UNIX_EPOCH + since } else { SystemTime::UNIX_EPOCH - since }
}

fn is_vanished(error: Option<&io::Error>) -> bool {
    error.is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn note_walk_error(e: &walkdir::Error, report: &mut ScanReport) {
    let path = e.path().map_or_else(PathBuf::new, Path::to_path_buf);
    if let Some(ancestor) = e.loop_ancestor() {
        tracing::warn!(path = %path.display(), ancestor = %ancestor.display(), "skipped a symlink loop");
    } else if !is_vanished(e.io_error()) {
        report.errors.push(error_at(&path, &e.io_error().map_or_else(|| e.to_string(), ToString::to_string)));
    }
}

fn error_at(path: &Path, reason: &str) -> ScanError {
    ScanError { path: path.display().to_string(), reason: reason.to_owned() }
}
