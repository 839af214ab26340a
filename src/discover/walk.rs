//! The walk of a source, on a thread of its own: listing folders and
//! asking for each file's status run beside the scan's own thread, which
//! looks each file up in the catalog's stat cache and writes what changed
//! (in a rescan of an unchanged tree the two took about as long).

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use rustix::fs::{AtFlags, Mode, OFlags};
use walkdir::{DirEntry, WalkDir};

use super::{SkipReason, classify, filter};
use crate::catalog::FileStat;
use crate::config::SourceConfig;
use crate::model::split_folder;

/// Entries handed over at once (one hand-over per entry cost more than
/// the entry's stat).
const BATCH: usize = 64;

/// Batches the walk may run ahead of the scan: a bounded queue, so memory
/// stays flat however large the source.
const AHEAD: usize = 16;

/// What the walk found at one place.
pub(super) enum Walked {
    /// A candidate file (admitted by the source's rules), with its status
    /// (following a symlink) or why there is none.
    File(DirEntry, io::Result<FileStat>),
    /// A file that is not a candidate, and why.
    Skipped(SkipReason),
    /// A folder or file the walk could not get at, or a symlink loop.
    Failed(walkdir::Error),
}

/// Walks `source` (following symlinks, never round a loop; a folder's
/// files before its subfolders, by name; hidden folders left out) on a
/// thread of `scope`, until it ends or `stop` is set. Returns the walk's
/// findings in order, and the thread, which ends with the number of hidden
/// folders it left out. Dropping the receiver ends the walk.
pub(super) fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    source: &'scope SourceConfig,
    stop: &'scope AtomicBool,
) -> (Receiver<Vec<Walked>>, ScopedJoinHandle<'scope, u64>) {
    let (found, batches) = sync_channel::<Vec<Walked>>(AHEAD);
    let walker = scope.spawn(move || {
        let mut hidden_folders = 0u64;
        // A folder's files before its subfolders: the catalog's record of
        // a folder is read once, when the walk comes to it. Siblings' paths
        // are their folder's path and their names: ordered as the names
        // are, and compared without parsing them again for each comparison.
        let files_first = |a: &DirEntry, b: &DirEntry| {
            let (a_path, b_path) = (a.path().as_os_str().as_bytes(), b.path().as_os_str().as_bytes());
            (a.file_type().is_dir(), a_path).cmp(&(b.file_type().is_dir(), b_path))
        };
        let walk = WalkDir::new(&source.path).follow_links(true).sort_by(files_first).into_iter().filter_entry(|e| {
            let hidden_folder = e.depth() > 0 && e.file_type().is_dir() && filter::is_hidden(e.file_name());
            hidden_folders += u64::from(hidden_folder);
            !hidden_folder
        });
        let mut batch = Vec::with_capacity(BATCH);
        let mut folder = None;
        for entry in walk {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let walked = match entry {
                Err(e) => Walked::Failed(e),
                Ok(entry) if !entry.file_type().is_file() => continue,
                Ok(entry) => {
                    if let Err(reason) = classify(source, entry.path()) {
                        Walked::Skipped(reason)
                    } else {
                        let stat = stat_in(&mut folder, entry.path());
                        Walked::File(entry, stat)
                    }
                }
            };
            batch.push(walked);
            if batch.len() == BATCH && found.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_err() {
                break;
            }
        }
        // The scan may have stopped listening: nothing more to tell it then.
        let _ = found.send(batch);
        hidden_folders
    });
    (batches, walker)
}

/// The status of the file at `path` (following a symlink), asked of the
/// folder it is in, which stays open while the walk lists it (a folder's
/// files come together): asked by the whole path, the kernel looked up
/// every folder on the way down again for each file, 7 % of a rescan.
fn stat_in(folder: &mut Option<(Vec<u8>, OwnedFd)>, path: &Path) -> io::Result<FileStat> {
    let (dir, name) = split_folder(path.as_os_str().as_bytes());
    if dir.is_empty() || name.is_empty() {
        return std::fs::metadata(path).map(|m| super::stat_of(&m));
    }
    let fd = match folder {
        Some((open, fd)) if open == dir => fd,
        _ => {
            let fd = rustix::fs::open(
                OsStr::from_bytes(dir),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            &folder.insert((dir.to_vec(), fd)).1
        }
    };
    let name = OsStr::from_bytes(name);
    let stat = rustix::fs::statat(fd, name, AtFlags::empty())?;
    Ok(FileStat {
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mtime_ns: stat.st_mtime.saturating_mul(1_000_000_000).saturating_add(stat.st_mtime_nsec as i64),
        inode: stat.st_ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status asked of the open folder is the one the stat cache was
    /// keyed by (that of the path's metadata), for a file, through a
    /// symlink, and in the next folder: were it not, every file would look
    /// changed to the first scan after an upgrade.
    #[test]
    fn a_stat_asked_of_the_folder_is_the_stat_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("sub");
        std::fs::write(dir.path().join("a.jpg"), b"abc").expect("a");
        std::fs::write(sub.join("c.jpg"), b"defgh").expect("c");
        std::os::unix::fs::symlink(sub.join("c.jpg"), dir.path().join("b.jpg")).expect("symlink");
        let mut folder = None;
        for path in [dir.path().join("a.jpg"), dir.path().join("b.jpg"), sub.join("c.jpg")] {
            let by_path = super::super::stat_of(&std::fs::metadata(&path).expect("metadata"));
            assert_eq!(stat_in(&mut folder, &path).expect("stat"), by_path, "{}", path.display());
        }
        let open = folder.as_ref().map(|(open, _)| Path::new(OsStr::from_bytes(open)));
        assert_eq!(open, Some(sub.join("").as_path()));
        let gone = stat_in(&mut folder, &sub.join("gone.jpg")).expect_err("gone");
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }
}
