//! The walk of a source, on a thread of its own: listing folders and
//! asking for each file's status run beside the scan's own thread, which
//! looks each file up in the catalog's stat cache and writes what changed
//! (in a rescan of an unchanged tree the two took about as long).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use walkdir::{DirEntry, WalkDir};

use super::{SkipReason, classify, filter};
use crate::config::SourceConfig;

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
    File(DirEntry, walkdir::Result<std::fs::Metadata>),
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
        // a folder is read once, when the walk comes to it.
        let files_first = |a: &DirEntry, b: &DirEntry| {
            (a.file_type().is_dir(), a.file_name()).cmp(&(b.file_type().is_dir(), b.file_name()))
        };
        let walk = WalkDir::new(&source.path).follow_links(true).sort_by(files_first).into_iter().filter_entry(|e| {
            let hidden_folder = e.depth() > 0 && e.file_type().is_dir() && filter::is_hidden(e.file_name());
            hidden_folders += u64::from(hidden_folder);
            !hidden_folder
        });
        let mut batch = Vec::with_capacity(BATCH);
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
                        let metadata = entry.metadata();
                        Walked::File(entry, metadata)
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
