//! Making many copies durable with one flush.
//!
//! An fsync of every copy and of its folder cost more than the copy itself
//! for small photos. A batch of copies is made durable together instead:
//! with `syncfs` of the destination's file system where it is one whose
//! `syncfs` is known to write everything back (ext4, XFS, Btrfs, F2FS, ZFS,
//! bcachefs) and the batch holds more than one copy, otherwise with an
//! fsync of each file and of each folder named, once per folder per batch.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What one copy needs on the disk: files whose data, and folders whose
/// entries, must survive a power cut. `device` is the file system they are
/// on (a flush of the root's file system covers only its own).
#[derive(Debug, Default, Clone)]
pub(super) struct ToSync {
    pub device: Option<u64>,
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

/// The destination's file system, opened before a batch is written: Linux
/// samples a file system's write-back errors when a file is opened, so a
/// `syncfs` through this descriptor reports any error since, even one
/// another caller has seen already.
pub(super) struct FileSystem {
    /// The root, open, and its device if one `syncfs` of it writes back
    /// every file on it.
    whole: Option<(File, u64)>,
}

impl FileSystem {
    pub(super) fn open(root: &Path) -> FileSystem {
        FileSystem { whole: whole_file_system(root) }
    }

    /// Whether `device` is this local file system (one of those trusted
    /// above), whose page cache is the file: a copy there may be checked
    /// through the handle that wrote it. Elsewhere (NFS, SMB, FUSE) a copy
    /// is flushed first, which sends it (and reports a failed write), and
    /// read back through a new handle.
    pub(super) fn is_local(&self, device: u64) -> bool {
        self.whole.as_ref().is_some_and(|(_, whole)| *whole == device)
    }

    /// A file system known as nothing in particular (as a network one is).
    #[cfg(test)]
    pub(super) fn unknown() -> FileSystem {
        FileSystem { whole: None }
    }

    /// `root`'s file system taken for a trusted local one, whatever it is.
    #[cfg(test)]
    pub(super) fn taken_for_local(root: &Path) -> FileSystem {
        use std::os::unix::fs::MetadataExt as _;
        let dir = File::open(root).expect("open root");
        let device = dir.metadata().expect("stat root").dev();
        FileSystem { whole: Some((dir, device)) }
    }
}

/// Makes a group durable; one result per copy, in order.
pub(super) fn flush(fs: &FileSystem, group: &[ToSync]) -> Vec<Result<(), String>> {
    let whole = fs.whole.as_ref().filter(|_| group.len() > 1);
    let mut results: Vec<Result<(), String>> = vec![Ok(()); group.len()];
    let covered = |sync: &ToSync| whole.is_some_and(|(_, device)| sync.device == Some(*device));
    if let Some((root, _)) = whole
        && group.iter().any(covered)
        && let Err(e) = sync_file_system(root)
    {
        let message = format!("cannot flush the destination to disk: {e}");
        for (result, sync) in results.iter_mut().zip(group) {
            if covered(sync) {
                *result = Err(message.clone());
            }
        }
    }
    // Each folder once, however many copies went into it.
    let mut dirs: BTreeSet<&Path> = BTreeSet::new();
    for (result, sync) in results.iter_mut().zip(group) {
        if covered(sync) || result.is_err() {
            continue;
        }
        for file in &sync.files {
            if let Err(e) = File::open(file).and_then(|f| f.sync_all()) {
                *result = Err(format!("cannot flush {} to disk: {e}", file.display()));
            }
        }
        dirs.extend(sync.dirs.iter().map(PathBuf::as_path));
    }
    let failed: Vec<(&Path, String)> = dirs
        .into_iter()
        .filter_map(|dir| File::open(dir).and_then(|d| d.sync_all()).err().map(|e| (dir, e.to_string())))
        .collect();
    for (result, sync) in results.iter_mut().zip(group) {
        if let Some((dir, e)) = failed.iter().find(|(dir, _)| !covered(sync) && sync.dirs.iter().any(|d| d == dir)) {
            *result = Err(format!("cannot flush {} to disk: {e}", dir.display()));
        }
    }
    results
}

/// The root, open, and its device, if one `syncfs` of it writes back every
/// file on it and reports write-back errors (Linux 5.8 and later).
#[cfg(target_os = "linux")]
fn whole_file_system(root: &Path) -> Option<(File, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    // File systems whose `syncfs` writes back all data and metadata (from
    // `linux/magic.h`). Others (FUSE, network file systems) may do less.
    const TRUSTED: [i64; 6] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x2FC1_2FC1, 0xCA45_1A4E];
    if !reports_write_back_errors() {
        return None;
    }
    let dir = File::open(root).ok()?;
    // `f_type` is an i64 on x86_64 and narrower on some other targets.
    #[allow(clippy::useless_conversion)]
    let kind = i64::from(rustix::fs::fstatfs(&dir).ok()?.f_type);
    let device = dir.metadata().ok()?.dev();
    TRUSTED.contains(&kind).then_some((dir, device))
}

/// Whether this kernel's `syncfs` reports write-back errors (5.8 and later).
#[cfg(target_os = "linux")]
fn reports_write_back_errors() -> bool {
    static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTS.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.trim().split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (5, 8)
    })
}

#[cfg(not(target_os = "linux"))]
fn whole_file_system(_root: &Path) -> Option<(File, u64)> {
    None
}

#[cfg(target_os = "linux")]
fn sync_file_system(root: &File) -> io::Result<()> {
    rustix::fs::syncfs(root).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(_root: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
