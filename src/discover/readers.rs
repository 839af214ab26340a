//! Reading beside the walk: the files a scan finds new or changed are read
//! and hashed on worker threads while the walk goes on, and handed back to
//! the walk's thread, the catalog's one writer.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Read, read_file};
use crate::catalog::FileStat;
use crate::config::SourceConfig;
use crate::media::group::Folders;

/// The most threads that read and hash files during a scan.
const MAX_READERS: usize = 4;

/// What a reader thread hands back: the file, its stat before the read,
/// and what the read found.
pub(super) type ReadDone = (PathBuf, FileStat, io::Result<Read>);

/// Threads that read and hash the files a scan's walk finds new or
/// changed, one per core (up to [`MAX_READERS`]), while the walk goes on;
/// the walk's thread records what they found (the catalog has one writer).
/// The queue is short, so memory stays flat however large the source.
pub(super) struct Readers {
    work: std::sync::mpsc::SyncSender<(PathBuf, FileStat)>,
    done: std::sync::mpsc::Receiver<ReadDone>,
}

impl Readers {
    /// Readers for `source`'s files; once `stop` is set they read nothing more.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        source: &'scope SourceConfig,
        stop: &'scope AtomicBool,
    ) -> Readers {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, MAX_READERS);
        let (work, queue) = std::sync::mpsc::sync_channel::<(PathBuf, FileStat)>(threads * 2);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let (results, done) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (queue, results) = (std::sync::Arc::clone(&queue), results.clone());
            scope.spawn(move || {
                // Each keeps its own folder listings for finding groups.
                let mut folders = Folders::default();
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    let Ok((path, stat)) = next else { return };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let read = read_file(source, &path, stat, &mut folders);
                    if results.send((path, stat, read)).is_err() {
                        return;
                    }
                }
            });
        }
        Readers { work, done }
    }

    /// Hands `path` to a reader (waits while the queue is full).
    pub(super) fn send(&self, path: PathBuf, stat: FileStat) {
        // An error: every reader has ended (the scan was stopped).
        let _ = self.work.send((path, stat));
    }

    /// What the readers have finished so far.
    pub(super) fn ready(&self) -> Vec<ReadDone> {
        self.done.try_iter().collect()
    }

    /// Everything still being read, as it finishes.
    pub(super) fn finish(self) -> impl Iterator<Item = ReadDone> {
        drop(self.work);
        self.done.into_iter()
    }
}
