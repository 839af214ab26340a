//! Reading beside the walk: the files a scan finds new or changed are read
//! and hashed on worker threads while the walk goes on, and handed back to
//! the walk's thread, the catalog's one writer.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Read, read_file};
use crate::catalog::FileStat;
use crate::config::SourceConfig;
use crate::media::group::Folders;

/// The most threads that read and hash files during a scan.
const MAX_READERS: usize = 4;

/// Files handed to a reader at once: one hand-over (and one wake-up) per
/// file cost the walk more than its stat, and a reader given a run of one
/// folder's files lists that folder once.
const CHUNK: usize = 32;

/// Chunks queued per reader: enough to keep the readers busy while the
/// walk's thread writes a batch to the catalog (256 records), so that
/// neither waits for the other in turn.
const QUEUED_CHUNKS: usize = 8;

/// Longest a file found, or a file read, waits to be handed on with others:
/// short, so a few new photos found early in a long rescan are read and
/// recorded (and uploaded) while the walk goes on.
const CHUNK_AGE: Duration = Duration::from_millis(50);

/// What a reader thread hands back: the file, its stat before the read,
/// and what the read found.
pub(super) type ReadDone = (PathBuf, FileStat, io::Result<Read>);

/// Threads that read and hash the files a scan's walk finds new or
/// changed, one per core (up to [`MAX_READERS`]), while the walk goes on;
/// the walk's thread records what they found (the catalog has one writer).
/// The queue is short, so memory stays flat however large the source.
pub(super) struct Readers {
    work: std::sync::mpsc::SyncSender<Vec<(PathBuf, FileStat)>>,
    done: std::sync::mpsc::Receiver<Vec<ReadDone>>,
    /// Files not handed over yet (fewer than [`CHUNK`]), and since when.
    pending: Vec<(PathBuf, FileStat)>,
    since: Instant,
}

impl Readers {
    /// Readers for `source`'s files; once `stop` is set they read nothing more.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        source: &'scope SourceConfig,
        stop: &'scope AtomicBool,
    ) -> Readers {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, MAX_READERS);
        let (work, queue) = std::sync::mpsc::sync_channel::<Vec<(PathBuf, FileStat)>>(threads * QUEUED_CHUNKS);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let (results, done) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (queue, results) = (std::sync::Arc::clone(&queue), results.clone());
            scope.spawn(move || {
                // Each keeps its own folder listings for finding groups.
                let mut folders = Folders::default();
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    let Ok(chunk) = next else { return };
                    let (mut read, mut since) = (Vec::with_capacity(chunk.len()), Instant::now());
                    for (path, stat) in chunk {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let found = read_file(source, &path, stat, &mut folders);
                        read.push((path, stat, found));
                        // A chunk of big videos takes a while: what is read goes on.
                        if since.elapsed() >= CHUNK_AGE {
                            if results.send(std::mem::take(&mut read)).is_err() {
                                return;
                            }
                            since = Instant::now();
                        }
                    }
                    // What was read before a stop is recorded all the same.
                    if !read.is_empty() && results.send(read).is_err() {
                        return;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            });
        }
        Readers { work, done, pending: Vec::with_capacity(CHUNK), since: Instant::now() }
    }

    /// Hands `path` to a reader, with the next files (waits while the
    /// queue is full).
    pub(super) fn send(&mut self, path: PathBuf, stat: FileStat) {
        if self.pending.is_empty() {
            self.since = Instant::now();
        }
        self.pending.push((path, stat));
        if self.pending.len() >= CHUNK {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        // An error: every reader has ended (the scan was stopped).
        let _ = self.work.send(chunk);
    }

    /// What the readers have finished so far; files waiting for others
    /// longer than [`CHUNK_AGE`] are handed over now.
    pub(super) fn ready(&mut self) -> Vec<ReadDone> {
        if !self.pending.is_empty() && self.since.elapsed() >= CHUNK_AGE {
            self.hand_over();
        }
        self.done.try_iter().flatten().collect()
    }

    /// Everything still being read, as it finishes.
    pub(super) fn finish(mut self) -> impl Iterator<Item = ReadDone> {
        if !self.pending.is_empty() {
            self.hand_over();
        }
        drop(self.work);
        self.done.into_iter().flatten()
    }
}
