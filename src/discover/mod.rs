//! Finding photos and videos in source folders and recording each new
//! version in the catalog.
//!
//! [`scan_source`] walks one source (following symlinks, but never round a
//! loop), keeps what `filter` admits, skips files whose size, mtime and
//! inode match the catalog's stat cache, and reads every other file exactly
//! once to sniff its type and hash its content. It then queues a job for
//! every current file at every destination. Later work adds the notify
//! watcher here.

mod filter;

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use walkdir::WalkDir;

use crate::catalog::{Catalog, CatalogError, FileStat, Flushed};
use crate::config::SourceConfig;
use crate::media::{self, Inspection};
use crate::model::Timestamp;

pub use filter::is_ignored_name;

/// A file or folder that could not be read during a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanError {
    /// The path.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
}

/// Scans `source`, records what changed, and queues jobs as it goes.
/// `on_progress` is called after each media file with the running report
/// and the number of catalog records written since the previous call (so
/// uploads can start before the scan ends). Setting `stop` ends the scan
/// early.
pub fn scan_source(
    catalog: &mut Catalog,
    source: &SourceConfig,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&ScanReport, u64),
) -> Result<ScanReport, CatalogError> {
    let mut report = ScanReport::default();
    let root = &source.path;
    let Some(root_text) = root.to_str() else {
        report.errors.push(error_at(root, "the source path is not valid UTF-8"));
        return Ok(report);
    };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            report.errors.push(error_at(root, "the source is not a folder"));
            return Ok(report);
        }
        Err(e) => {
            report.errors.push(error_at(root, &format!("cannot read the source folder: {e}")));
            return Ok(report);
        }
    }

    let mut writer = catalog.scan_writer(root_text);
    let walk = WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !filter::is_hidden(e.file_name()));
    for entry in walk {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                note_walk_error(&e, &mut report);
                continue;
            }
        };
        if !entry.file_type().is_file() || is_ignored_name(entry.file_name()) {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(root) else { continue };
        if !entry.path().extension().is_some_and(media::is_media_extension) || !source.admits(relative) {
            continue;
        }
        let rel_bytes = relative.as_os_str().as_bytes();
        let metadata = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                if !is_vanished(e.io_error()) {
                    report.errors.push(error_at(entry.path(), &e.to_string()));
                }
                continue;
            }
        };
        let stat = stat_of(&metadata);
        if writer.is_unchanged(rel_bytes, stat)? {
            report.media_files += 1;
            on_progress(&report, 0);
            continue;
        }
        let mut written = 0;
        match read_file(entry.path(), stat) {
            Ok(Some((hash, size))) => {
                report.media_files += 1;
                report.read += 1;
                report.bytes_read += size;
                written = report.add(writer.record(rel_bytes, stat, hash, Timestamp::now())?);
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %entry.path().display(), "file vanished during the scan");
            }
            Err(e) => report.errors.push(error_at(entry.path(), &format!("cannot read: {e}"))),
        }
        on_progress(&report, written);
    }
    let mut written = report.add(writer.finish(Timestamp::now())?);
    // Files recorded by earlier scans need jobs too when a destination was added.
    let for_new_destinations = catalog.enqueue_current(root_text, Timestamp::now())? as u64;
    report.jobs_queued += for_new_destinations;
    written += for_new_destinations;
    on_progress(&report, written);
    Ok(report)
}

impl ScanReport {
    /// Adds a flush to the tally; returns the records it wrote.
    fn add(&mut self, flushed: Flushed) -> u64 {
        self.new_versions += flushed.new_versions;
        self.jobs_queued += flushed.jobs_queued;
        flushed.records
    }
}

/// Reads a candidate file once: `Ok(None)` if it is not media or changed
/// while being read (the next scan picks it up once it is stable).
fn read_file(path: &Path, stat: FileStat) -> io::Result<Option<(crate::model::ContentHash, u64)>> {
    let mut file = File::open(path)?;
    match media::inspect(&mut file)? {
        Inspection::NotMedia => {
            tracing::debug!(path = %path.display(), "skipped: content is not a photo or video");
            Ok(None)
        }
        Inspection::Media { hash, size, .. } => {
            let after = stat_of(&file.metadata()?);
            if size != stat.size || after != stat {
                tracing::warn!(path = %path.display(), "skipped: the file changed while it was read; it is picked up once it is stable");
                return Ok(None);
            }
            Ok(Some((hash, size)))
        }
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
