//! Live discovery for the daemon: a file-system watcher (notify) plus full
//! reconcile scans at start, on request and every `rescan_interval`, because
//! watchers miss events (overflowed inotify queues, sleeping laptops, network
//! mounts).
//!
//! A file is recorded only once it has *settled*: its size and mtime
//! unchanged for `settle`, so a photo still being copied in is never read
//! half-written. Everything runs on one thread that blocks on a channel with
//! a timeout set to the next deadline (a settle check or the next rescan):
//! no polling while nothing happens. It has its own catalog connection and
//! tells the scheduler through `found` whenever it wrote something, saw a
//! file it already knew (one that came back, say), or finished a scan.
//!
//! Every few seconds each source's root is looked at (one `stat`): a root
//! that went away (an unmounted disk) is noted, and one that came back, or
//! is another folder now (remounted), is watched afresh and scanned, so the
//! jobs that waited for it go on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};

use super::source::{Availability, availability};
use super::{ScanReport, Skipped, candidate, scan_file, scan_source, stat_of};
use crate::catalog::{Catalog, CatalogError, FileStat};
use crate::config::SourceConfig;
use crate::media::group::Folders;
use crate::model::Timestamp;

/// Discovery timing.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// How long a file must stay unchanged before it is read.
    pub settle: Duration,
    /// Time between full reconcile scans.
    pub rescan_interval: Duration,
}

/// What `status` shows about discovery.
#[derive(Debug, Default)]
pub struct DiscoveryState {
    scanning: AtomicBool,
    watching: AtomicBool,
    last_scan: Mutex<Option<Timestamp>>,
    left_out: Mutex<Option<LeftOut>>,
}

/// What the last full scan left out, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Skipped by name, rules or content.
    pub skipped: Skipped,
    /// Files and folders that could not be read.
    pub unreadable: u64,
    /// Files still changing.
    pub unsettled: u64,
}

impl DiscoveryState {
    /// Whether a full scan is running.
    pub fn scanning(&self) -> bool {
        self.scanning.load(Ordering::Relaxed)
    }

    /// Whether every source is watched live.
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// When the last full scan finished.
    pub fn last_scan(&self) -> Option<Timestamp> {
        *self.last_scan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the last full scan left out.
    pub fn left_out(&self) -> Option<LeftOut> {
        *self.left_out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reply to a scan request: the reports, or why the scan failed.
pub type ScanReply = oneshot::Sender<Result<Vec<ScanReport>, String>>;

enum Message {
    Fs(notify::Result<notify::Event>),
    ScanNow(ScanReply),
    Stop,
}

/// A running discovery thread.
pub struct Discovery {
    messages: std_mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
    state: Arc<DiscoveryState>,
    stop: Arc<AtomicBool>,
}

impl Discovery {
    /// Opens a catalog connection and starts watching and scanning `sources`
    /// (a full scan first). `found` is signalled after every catalog write.
    pub fn start(
        sources: Vec<SourceConfig>,
        catalog_path: &Path,
        settings: WatchSettings,
        found: mpsc::Sender<()>,
    ) -> Result<Discovery, CatalogError> {
        let catalog = Catalog::open(catalog_path)?;
        let (messages, inbox) = std_mpsc::channel();
        let state = Arc::new(DiscoveryState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            catalog,
            scanned: vec![false; sources.len()],
            folders: Folders::default(),
            sources,
            settings,
            found,
            state: Arc::clone(&state),
            settling: HashMap::new(),
            next_rescan: Instant::now(),
            roots: Vec::new(),
            next_root_check: Instant::now(),
            watcher: None,
            stop: Arc::clone(&stop),
        };
        let sender = messages.clone();
        let thread = std::thread::Builder::new()
            .name("discovery".into())
            .spawn(move || worker.run(&inbox, sender))
            .map_err(|e| CatalogError::Open { path: catalog_path.to_owned(), source: Box::new(e) })?;
        Ok(Discovery { messages, thread: Some(thread), state, stop })
    }

    /// Scans every source now; resolves when the scan is done.
    pub async fn scan_now(&self) -> Result<Vec<ScanReport>, String> {
        let (reply, answer) = oneshot::channel();
        self.messages.send(Message::ScanNow(reply)).map_err(|_| "discovery has stopped".to_owned())?;
        answer.await.map_err(|_| "discovery stopped during the scan".to_owned())?
    }

    /// Discovery's state for `status`.
    pub fn state(&self) -> &DiscoveryState {
        &self.state
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Ends a running scan at the next file, then the thread.
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.messages.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A source's root as last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Root {
    /// Device and inode of the folder; `None` while it cannot be read.
    identity: Option<(u64, u64)>,
    /// Whether it could be scanned.
    available: bool,
}

/// The device and inode of a folder.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Worker {
    catalog: Catalog,
    sources: Vec<SourceConfig>,
    settings: WatchSettings,
    found: mpsc::Sender<()>,
    state: Arc<DiscoveryState>,
    /// Files seen changing: their last stat and since when it held.
    settling: HashMap<PathBuf, (FileStat, Instant)>,
    next_rescan: Instant,
    /// What was last seen of each source's root.
    roots: Vec<Root>,
    next_root_check: Instant,
    watcher: Option<notify::RecommendedWatcher>,
    stop: Arc<AtomicBool>,
    /// Folder listings that find each file's group (kept while the folders
    /// are unchanged).
    folders: Folders,
    /// Per source: a scan of it has completed, so what is found there from
    /// now on appeared while the daemon ran, and goes before the backlog.
    scanned: Vec<bool>,
}

impl Worker {
    fn run(mut self, inbox: &std_mpsc::Receiver<Message>, sender: std_mpsc::Sender<Message>) {
        self.watcher = self.watch(sender);
        self.roots = self.sources.iter().map(|s| Root { identity: identity(&s.path), available: true }).collect();
        loop {
            let deadline = self.next_deadline();
            let message = match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(message) => Some(message),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match message {
                Some(Message::Stop) => return,
                Some(Message::Fs(event)) => self.on_event(event),
                Some(Message::ScanNow(reply)) => {
                    let _ = reply.send(self.full_scan().map_err(|e| e.to_string()));
                }
                None => {}
            }
            if let Err(e) = self.check_settled() {
                tracing::error!("recording settled files failed: {e}");
            }
            if Instant::now() >= self.next_root_check
                && let Err(e) = self.check_roots()
            {
                tracing::error!("scanning a source that came back failed: {e}");
            }
            if Instant::now() >= self.next_rescan
                && let Err(e) = self.full_scan()
            {
                tracing::error!("scan failed: {e}");
            }
        }
    }

    /// Starts the watcher; without one (or with some folders unwatched)
    /// discovery relies on the periodic scans.
    fn watch(&self, sender: std_mpsc::Sender<Message>) -> Option<notify::RecommendedWatcher> {
        let handler = move |event| {
            let _ = sender.send(Message::Fs(event));
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("{}", unwatched_message(&e, self.settings.rescan_interval));
                return None;
            }
        };
        let mut all = true;
        for source in &self.sources {
            if let Err(e) = watcher.watch(&source.path, RecursiveMode::Recursive) {
                tracing::warn!(source = %source.path.display(), "{}", unwatched_message(&e, self.settings.rescan_interval));
                all = false;
            }
        }
        self.state.watching.store(all, Ordering::Relaxed);
        Some(watcher)
    }

    /// How often the roots are looked at: soon enough that a remounted
    /// card goes on within seconds, never more than once a second.
    fn recheck_interval(&self) -> Duration {
        self.settings.settle.clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Looks at every source's root. One that went away is noted (its jobs
    /// wait; the scheduler finds out by itself); one that came back, or is
    /// another folder now, is watched afresh (the old watch went with the
    /// old folder) and scanned.
    fn check_roots(&mut self) -> Result<(), CatalogError> {
        self.next_root_check = Instant::now() + self.recheck_interval();
        let mut back = false;
        for index in 0..self.sources.len() {
            let now = identity(&self.sources[index].path);
            let known = self.roots[index];
            if known.available && now == known.identity {
                continue;
            }
            let source = &self.sources[index];
            let root_text = source.path.to_string_lossy().into_owned();
            match availability(&self.catalog, &source.path, &root_text)? {
                Availability::Available { .. } => {
                    tracing::info!(source = %source.path.display(), "the source is available again");
                    if let Some(watcher) = self.watcher.as_mut() {
                        let _ = watcher.unwatch(&source.path);
                        if let Err(e) = watcher.watch(&source.path, RecursiveMode::Recursive) {
                            tracing::warn!(source = %source.path.display(), "{}", unwatched_message(&e, self.settings.rescan_interval));
                        }
                    }
                    self.scan_one(index)?;
                    back = true;
                }
                Availability::Unavailable(reason) | Availability::Broken(reason) => {
                    if known.available {
                        tracing::warn!("{reason}; its photos wait until it is back");
                    }
                    self.roots[index].available = false;
                }
            }
            self.roots[index].identity = now;
        }
        if back {
            let _ = self.found.try_send(());
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let settle = self.settling.values().map(|(_, since)| *since + self.settings.settle);
        settle.fold(self.next_rescan.min(self.next_root_check), Instant::min)
    }

    fn source_of(&self, path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| candidate(s, path).is_some())
    }

    fn on_event(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("file watcher error, scanning again: {e}");
                self.next_rescan = Instant::now();
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!("the file watcher lost events (queue overflow); scanning again");
            self.next_rescan = Instant::now();
            return;
        }
        // Opening and reading a file (our own uploads do) changes nothing.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let created = matches!(event.kind, notify::EventKind::Create(_));
        for path in event.paths {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && self.source_of(&path).is_some() => {
                    let stat = stat_of(&m);
                    let entry = self.settling.entry(path).or_insert((stat, Instant::now()));
                    if entry.0 != stat {
                        *entry = (stat, Instant::now());
                    }
                }
                // A folder moved in brings files that raise no events of their own.
                Ok(m) if m.is_dir() && created => {
                    self.next_rescan = self.next_rescan.min(Instant::now() + self.settings.settle);
                }
                _ => {}
            }
        }
    }

    /// Records files whose stat has held for `settle`.
    fn check_settled(&mut self) -> Result<(), CatalogError> {
        let now = Instant::now();
        let due: Vec<PathBuf> = self
            .settling
            .iter()
            .filter(|(_, (_, since))| *since + self.settings.settle <= now)
            .map(|(path, _)| path.clone())
            .collect();
        let mut wrote = false;
        for path in due {
            let Some((recorded, _)) = self.settling.remove(&path) else { continue };
            let Ok(metadata) = std::fs::metadata(&path) else { continue };
            let stat = stat_of(&metadata);
            if stat != recorded {
                self.settling.insert(path, (stat, now));
                continue;
            }
            let Some(index) = self.source_of(&path) else { continue };
            let report = scan_file(&mut self.catalog, &self.sources[index], &path, &mut self.folders)?;
            for error in &report.errors {
                tracing::warn!(path = %error.path, "{}", error.reason);
            }
            // Also a file already known: it may be one whose job waits for it.
            wrote |= report.media_files > 0;
        }
        if wrote {
            let _ = self.found.try_send(());
        }
        Ok(())
    }

    fn full_scan(&mut self) -> Result<Vec<ScanReport>, CatalogError> {
        self.state.scanning.store(true, Ordering::Relaxed);
        let result: Result<Vec<ScanReport>, CatalogError> =
            (0..self.sources.len()).map(|index| self.scan_one(index)).collect();
        self.state.scanning.store(false, Ordering::Relaxed);
        if let Ok(reports) = &result {
            let mut left_out = LeftOut::default();
            for report in reports {
                left_out.skipped.add(&report.skipped);
                left_out.unreadable += report.errors.len() as u64;
                left_out.unsettled += report.settling;
            }
            *self.state.left_out.lock().unwrap_or_else(PoisonError::into_inner) = Some(left_out);
        }
        *self.state.last_scan.lock().unwrap_or_else(PoisonError::into_inner) = Some(Timestamp::now());
        self.next_rescan = Instant::now() + self.settings.rescan_interval;
        // Jobs set aside wait for a scan: tell the scheduler, whatever it found.
        let _ = self.found.try_send(());
        result
    }

    /// Scans one source, following the files still settling and noting
    /// whether the source was there to scan.
    fn scan_one(&mut self, index: usize) -> Result<ScanReport, CatalogError> {
        let cutoff = SystemTime::now().checked_sub(self.settings.settle);
        let source = &self.sources[index];
        let found = &self.found;
        let live = self.scanned[index];
        let report = scan_source(&mut self.catalog, source, cutoff, live, &self.stop, &mut |_, written| {
            if written > 0 {
                let _ = found.try_send(());
            }
        })?;
        for error in &report.errors {
            tracing::warn!(path = %error.path, "{}", error.reason);
        }
        let now = Instant::now();
        for path in &report.unsettled {
            if let Ok(m) = std::fs::metadata(path) {
                self.settling.entry(path.clone()).or_insert((stat_of(&m), now));
            }
        }
        if let Some(root) = self.roots.get_mut(index) {
            *root = Root { identity: identity(&source.path), available: report.unavailable.is_none() };
        }
        // A scan cut short, or of a source that was not there, has not seen
        // the backlog: what it has yet to find is not new.
        if report.unavailable.is_none() && !self.stop.load(Ordering::Relaxed) {
            self.scanned[index] = true;
        }
        tracing::info!(source = %source.path.display(), media = report.media_files, new = report.new_versions, "scanned");
        Ok(report)
    }
}

/// Explains a watcher failure, naming the inotify limit when that is the cause.
fn unwatched_message(error: &notify::Error, rescan: Duration) -> String {
    let every = humantime::format_duration(rescan);
    match &error.kind {
        notify::ErrorKind::MaxFilesWatch => {
            let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                .map(|s| format!(" ({})", s.trim()))
                .unwrap_or_default();
            format!(
                "the inotify watch limit{limit} is reached, so new photos here are found by the scan every {every} \
                 instead; raise it with `sysctl fs.inotify.max_user_watches=524288`"
            )
        }
        _ => format!("cannot watch for changes ({error}); new photos are found by the scan every {every}"),
    }
}
