//! Runs queued jobs: picks the next one, starts its upload, and records the
//! outcome, applying the retry policy from [`crate::policy`].
//!
//! One event loop ([`Scheduler::run`]) owns every job transition; uploads run
//! as tasks and only report back. That keeps claims race-free (two jobs with
//! the same content at the same destination never run at once, so the second
//! finds the first's receipt and is not uploaded again) and makes every
//! transition durable before anything acts on it. The loop selects over
//! upload completions, "new jobs" signals from discovery, timers (in-run
//! retries, retry-wait due times, pause expiry, destination cool-down),
//! control [`Command`]s and shutdown. It never polls: with nothing to do it
//! sleeps until the next timer or message.
//!
//! An upload task is one file, or a batch of small files for a destination
//! that takes them together (made durable with one flush): `max_concurrent`
//! files at once, [`crate::destination::Batching::per_slot`] times as many
//! batches (one when it is 1). The transitions of the jobs a turn of the
//! loop starts, and of those it settles, are each committed in one
//! transaction, before any upload starts or any outcome is acted on.
//!
//! [`Mode::OneShot`] (`photosync backup`) retries transient failures a few
//! times within the run and ends when nothing is left to do;
//! [`Mode::Service`] (the daemon) leaves them to the backoff and runs until
//! shut down. Uploads stop cooperatively (a cancellation token every
//! upload watches, between chunks and while it waits on the network) so
//! that a job changes state only after its task has ended.
//!
//! `dispatch` starts jobs and settles their outcomes (and sets aside those
//! whose file or source is missing), `retry` decides what a failure leads
//! to, `commands` answers the daemon, `status` builds what people are shown,
//! `queue` orders the queue (live photos, then by capture time) and renders
//! each job's key in its destination's layout, `window` keeps files that
//! cannot finish before an upload window closes for the next one.

mod commands;
mod dispatch;
mod fill;
mod load;
mod meter;
mod queue;
mod retry;
mod run_once;
mod status;
mod target;
#[cfg(test)]
mod testing;
mod window;

pub use commands::Command;
pub use meter::{BudgetStatus, MeteredUse};
pub use run_once::{Limits, drain};
pub use status::{DrainReport, Hold, Pause, QuotaStatus, RecentError, SchedulerStatus, UploadStatus};
pub use target::{Target, open_targets};
pub use window::{UploadWindow, upload_window};

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError, PendingJob, Queued};
use crate::config::{Order, RetryConfig};
use crate::destination::{Retry, Throttle};
use crate::model::{ContentHash, DestinationId, Job, JobId, RemoteKey, Timestamp, WaitingOn};
use crate::policy::{Deadline, HoldReason};

use self::fill::{Joined, Outcomes, Planned};

/// Consecutive jobs that must exhaust their retries at one destination before
/// the scheduler stops sending it work for a while.
const BREAKER_THRESHOLD: u32 = 3;

/// How long shutdown waits for uploads to stop at a chunk boundary.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How many recent errors `status` shows.
const RECENT_ERRORS: usize = 10;

/// The longest `Retry-After` a one-shot run waits out itself rather than
/// leave the work to a later run.
const RETRY_AFTER_IN_RUN: Duration = Duration::from_mins(1);

/// How often the daemon looks again at a source folder that was not there
/// (a disk unmounted for a moment is back within this).
const SOURCE_RECHECK: Duration = Duration::from_secs(2);

/// How the scheduler treats failures and when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `photosync backup`: quick in-run retries; a failing destination is
    /// dropped for the rest of the run; ends when no work is left.
    OneShot,
    /// The daemon: failures wait out their backoff (a timer wakes them); a
    /// failing destination cools down and is tried again; runs until shut down.
    Service,
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Retry tuning.
    pub retry: RetryConfig,
    /// Upload slots.
    pub max_concurrent: usize,
    /// One-shot or service.
    pub mode: Mode,
    /// Which photos of the backlog go first.
    pub order: Order,
    /// Bytes per period on each metered network, if limited.
    pub budget: Option<crate::policy::Budget>,
    /// Queued jobs held in memory per destination ([`QUEUE_WINDOW`]); the
    /// rest waits in the catalog.
    pub queue_window: usize,
}

/// Queued jobs held in memory per destination: enough to keep every
/// upload slot and batch busy between loads, little memory (about 1 KiB
/// each) however big the backlog.
pub const QUEUE_WINDOW: usize = 8192;
// The scan's gate holds a scan back once the queue in memory holds its
// `AHEAD` jobs: the window must be able to hold that many.
const _: () = assert!(QUEUE_WINDOW >= crate::discover::gate::AHEAD);

/// Receives progress while the scheduler works.
pub trait RunObserver: Send + Sync {
    /// More jobs joined: this many, totalling this many bytes.
    fn queued(&self, _jobs: u64, _bytes: u64) {}
    /// Bytes moved (negative when a failed attempt's bytes are taken back).
    fn bytes(&self, _delta: i64) {}
    /// A job left the run (done, failed, deferred or cancelled).
    fn job_done(&self) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl RunObserver for Silent {}

struct Flight {
    running: Job,
    pending: PendingJob,
    /// The key it writes (in its destination's layout).
    key: RemoteKey,
    /// Bytes this attempt sent.
    sent: Arc<AtomicU64>,
    /// Bytes an earlier attempt left at the destination that this one kept.
    resumed: Arc<AtomicU64>,
    /// Of `sent`, how much was counted against a data budget (or sent
    /// while unmetered).
    counted: u64,
    cancel: CancellationToken,
    started: Instant,
}

impl Flight {
    /// What it may still send, as far as a data budget knows: the file,
    /// less what an earlier attempt left at the destination and what this
    /// one sent and was counted (bytes sent but not yet counted are still
    /// in, so that they are never in neither).
    fn to_send(&self) -> u64 {
        let resumed = self.resumed.load(std::sync::atomic::Ordering::Relaxed);
        self.pending.stat.size.saturating_sub(resumed + self.counted)
    }
}

/// Why a queued job is kept out of the queue until discovery signals again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Aside {
    /// Its file changed after it was scanned: discovery must read it again.
    Changed,
    /// Its file is missing while its source folder is there.
    FileMissing,
    /// Its source folder is not available (the reason says how).
    SourceUnavailable(String),
}

impl Aside {
    fn reason(&self) -> &str {
        match self {
            Self::Changed => "files changed after the scan; the next scan picks them up",
            Self::FileMissing => "files missing from their source; uploaded when they return",
            Self::SourceUnavailable(reason) => reason,
        }
    }

    fn waiting_on(&self) -> WaitingOn {
        match self {
            Self::Changed => WaitingOn::Nothing,
            Self::FileMissing => WaitingOn::File,
            Self::SourceUnavailable(_) => WaitingOn::Source,
        }
    }
}

#[derive(Default)]
struct Breaker {
    consecutive: u32,
    /// Why the destination is held, and until when (`None`: rest of the
    /// run; on both clocks, so neither a sleep nor a clock stepped back
    /// stretches it).
    open: Option<(String, Option<Deadline>)>,
    /// Open until the user acts (signs in again): a failure does not
    /// replace its reason.
    for_user: bool,
    /// Open because the service asked for fewer requests: an upload
    /// already under way that succeeds meanwhile does not end the rest.
    resting: bool,
}

/// The user's pause in force.
#[derive(Debug, Clone, Copy)]
struct UserPause {
    /// When it ends by itself (`None`: when resumed).
    ends: Option<Deadline>,
}

/// The job loop. See the module documentation.
pub struct Scheduler<'c> {
    catalog: &'c mut Catalog,
    targets: HashMap<DestinationId, Target>,
    destination_ids: Vec<DestinationId>,
    settings: Settings,
    observer: Arc<dyn RunObserver>,
    /// Highest [`PendingJob::seq`] loaded; jobs queued or revived later are
    /// loaded when discovery signals.
    last_loaded: i64,
    queue: queue::Queue,
    /// Queued jobs were left in the catalog, not loaded, because uploads
    /// were stopped (paused or held): they are loaded when uploads may run.
    /// A first scan on battery queues the whole library, which nothing
    /// would start; in memory it took 100 MiB per 100,000 photos.
    unloaded: bool,
    /// Destinations whose queued jobs did not all fit in the window: the
    /// catalog holds more, loaded as the window empties.
    spilled: HashSet<DestinationId>,
    /// Jobs (and bytes) the observer was told of that wait in the catalog.
    outside: Queued,
    /// Jobs kept out of the queue (file changed or missing, source not
    /// available), looked at again after the next discovery signal.
    aside: Vec<(PendingJob, Aside)>,
    sleeping: Vec<(Instant, PendingJob)>,
    flights: HashMap<JobId, Flight>,
    tasks: JoinSet<Outcomes>,
    /// Uploads dispatched in the open batch of transitions, spawned when it
    /// is committed.
    starting: Vec<Planned>,
    task_jobs: HashMap<tokio::task::Id, fill::Running>,
    /// While the jobs of a batch are settled (its rate is one sample, taken
    /// before): the destinations whose breaker has counted its failure (one
    /// fault fails a whole batch; it counts once).
    settling_batch: Option<HashSet<DestinationId>>,
    /// Clean-ups decided while a batch of transitions is open, started once
    /// it is committed.
    cleanups: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Clean-ups that run beside the uploads (aborting cancelled uploads).
    tasks_aside: JoinSet<()>,
    /// Content being uploaded to each destination: a second job with the
    /// same content waits, then finds the first one's receipt.
    busy: HashSet<(DestinationId, ContentHash)>,
    /// Preferred keys being written at each destination (two sources can
    /// hold the same relative path): a second job waits, then sees the
    /// first one's object and picks the next name.
    busy_keys: HashSet<(DestinationId, Vec<u8>)>,
    /// When to look again at the source folders that were not there.
    source_recheck: Option<Instant>,
    tries: HashMap<JobId, u32>,
    /// Times each job waited out a "fewer requests" within this run.
    throttles: HashMap<JobId, u32>,
    breakers: HashMap<DestinationId, Breaker>,
    /// Destinations whose check failed permanently: their jobs fail at once.
    broken: HashMap<DestinationId, String>,
    paused: Option<UserPause>,
    policy_hold: Option<HoldReason>,
    /// The system is going to sleep: nothing starts until it has woken.
    asleep: bool,
    /// The upload rate limit shared by every upload.
    throttle: Arc<Throttle>,
    /// The allowed upload window uploads are in, if there are windows.
    window: Option<UploadWindow>,
    /// Told whether uploads are in flight (the sleep guard holds its lock
    /// only then).
    uploading: Option<tokio::sync::watch::Sender<bool>>,
    /// Told whether a scan may run further ahead of the uploads.
    scan_gate: Option<crate::discover::gate::ScanGate>,
    /// The rate this run's uploads reached.
    throughput: window::Throughput,
    /// The budget of the metered network uploads run on, if one is set.
    meter: Option<meter::Meter>,
    /// When the bytes sent are next written down.
    meter_due: Option<Instant>,
    /// Folder listings for describing files recorded before capture times
    /// were kept.
    folders: crate::media::group::Folders,
    next_retry: Option<Deadline>,
    idle_waiters: Vec<oneshot::Sender<DrainReport>>,
    recent_errors: VecDeque<RecentError>,
    report: DrainReport,
}

impl<'c> Scheduler<'c> {
    /// A scheduler for `targets` working on `catalog`.
    pub fn new(
        catalog: &'c mut Catalog,
        targets: &[Target],
        settings: Settings,
        observer: Arc<dyn RunObserver>,
    ) -> Scheduler<'c> {
        Scheduler {
            catalog,
            targets: targets.iter().map(|t| (t.id, t.clone())).collect(),
            destination_ids: targets.iter().map(|t| t.id).collect(),
            settings,
            observer,
            last_loaded: i64::MIN,
            queue: queue::Queue::new(settings.order),
            unloaded: false,
            spilled: HashSet::new(),
            outside: Queued::default(),
            starting: Vec::new(),
            aside: Vec::new(),
            sleeping: Vec::new(),
            flights: HashMap::new(),
            tasks: JoinSet::new(),
            task_jobs: HashMap::new(),
            settling_batch: None,
            cleanups: Vec::new(),
            tasks_aside: JoinSet::new(),
            busy: HashSet::new(),
            busy_keys: HashSet::new(),
            source_recheck: None,
            tries: HashMap::new(),
            throttles: HashMap::new(),
            breakers: HashMap::new(),
            broken: HashMap::new(),
            paused: None,
            policy_hold: None,
            asleep: false,
            throttle: Arc::default(),
            window: None,
            uploading: None,
            scan_gate: None,
            throughput: window::Throughput::default(),
            meter: None,
            meter_due: None,
            folders: crate::media::group::Folders::default(),
            next_retry: None,
            idle_waiters: Vec::new(),
            recent_errors: VecDeque::new(),
            report: DrainReport::default(),
        }
    }

    /// What the scheduler did, with the holds still in force.
    pub fn into_report(mut self) -> Result<DrainReport, CatalogError> {
        self.report.holds = self.holds()?;
        Ok(std::mem::take(&mut self.report))
    }

    /// The loop. Ends on `shutdown`, or in [`Mode::OneShot`] once no work is
    /// left and `discovery` is closed; `commands` is for the daemon.
    pub async fn run(
        &mut self,
        mut discovery: Option<mpsc::Receiver<()>>,
        mut commands: Option<mpsc::Receiver<Command>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CatalogError> {
        tokio::pin!(shutdown);
        if !self.check_destinations(&mut shutdown).await {
            self.report.interrupted = true;
            return Ok(());
        }
        self.reload()?;
        loop {
            self.fill()?;
            // Every batch of transitions is committed here.
            for cleanup in self.cleanups.drain(..) {
                self.tasks_aside.spawn(cleanup);
            }
            self.tell_watchers();
            self.answer_idle_waiters()?;
            let working = !self.tasks.is_empty() || !self.sleeping.is_empty();
            if self.settings.mode == Mode::OneShot && !working && discovery.is_none() {
                // Never end a run while jobs it deferred are due already.
                if self.catalog.requeue_due(Timestamp::now())? > 0 {
                    self.reload()?;
                    continue;
                }
                break;
            }
            let wake = self.next_wake();
            let discovering = discovery.is_some();
            let commanding = commands.is_some();
            tokio::select! {
                signal = recv(&mut discovery), if discovering => {
                    if signal.is_none() {
                        discovery = None;
                    }
                    self.load_new()?;
                }
                command = recv(&mut commands), if commanding => match command {
                    Some(command) => self.handle(command)?,
                    None => commands = None,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined_together(joined)?,
                () = sleep_until(wake), if wake.is_some() => self.on_timer()?,
                () = &mut shutdown => {
                    self.shut_down().await?;
                    break;
                }
                Some(_) = self.tasks_aside.join_next(), if !self.tasks_aside.is_empty() => {}
            }
        }
        // Let clean-ups finish, briefly.
        let _ =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while self.tasks_aside.join_next().await.is_some() {} }).await;
        Ok(())
    }

    /// Checks every destination before the first upload. A permanent
    /// failure (bad credentials, no bucket) fails its jobs at once; a
    /// transient one holds the destination, except that a one-shot run
    /// first tries again within the run (honouring `Retry-After`), as it
    /// does for uploads. `false` when `shutdown` came first.
    async fn check_destinations(&mut self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        let targets: Vec<Target> = self.targets.values().cloned().collect();
        for target in targets {
            let mut tries = 0;
            loop {
                let error = match target.destination.check().await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                // Signed out: only the user can help, and retrying would not.
                if error.retry == Retry::Held {
                    self.hold_for_user(target.id, &error);
                    break;
                }
                // Bad credentials, a missing bucket: every job would fail the same way.
                if error.retry == Retry::Permanent {
                    tracing::error!(destination = %target.name, "destination unusable: {error}");
                    self.broken.insert(target.id, error.message);
                    break;
                }
                tries += 1;
                let retry = self.settings.retry;
                let delay = error.retry_after.unwrap_or_else(|| retry.in_run.delay(tries, jitter()));
                if self.settings.mode == Mode::OneShot && tries < retry.attempts_per_run && delay <= RETRY_AFTER_IN_RUN
                {
                    tracing::warn!(destination = %target.name, "destination unavailable, trying again in {}: {error}", humantime::format_duration(round(delay)));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = shutdown.as_mut() => return false,
                    }
                }
                tracing::warn!(destination = %target.name, "destination unavailable: {error}");
                let until = self.cooldown(BREAKER_THRESHOLD);
                let open = Some((error.message, until));
                let breaker = Breaker { consecutive: BREAKER_THRESHOLD, open, ..Breaker::default() };
                self.breakers.insert(target.id, breaker);
                break;
            }
        }
        true
    }

    fn is_held(&self, destination: DestinationId) -> bool {
        self.breakers.get(&destination).is_some_and(|b| b.open.is_some())
    }

    /// The earliest timer: an in-run retry, a retry-wait job coming due, a
    /// pause ending, a destination's cool-down ending, a look at a missing
    /// source, writing down the bytes sent on a metered link, or the data
    /// budget's period ending.
    fn next_wake(&self) -> Option<Instant> {
        // Deadlines are turned into timers afresh on every turn of the
        // loop: one armed before a sleep does not run late by the sleep
        // once anything (a wake, a signal) wakes the loop.
        let (now_wall, now) = (Timestamp::now(), Instant::now());
        let at = |deadline: Deadline| deadline.timer(now_wall, now);
        let retry = self.next_retry.filter(|_| self.settings.mode == Mode::Service).map(at);
        let pause = self.paused.and_then(|p| p.ends).map(at);
        let cooldowns = self.breakers.values().filter_map(|b| b.open.as_ref().and_then(|(_, until)| *until)).map(at);
        let sources = self.source_recheck.filter(|_| self.settings.mode == Mode::Service);
        let count = self.meter_due.filter(|_| !self.flights.is_empty());
        let period = self.meter_ends().map(at);
        let timers = self.sleeping.iter().map(|(at, _)| *at).chain(retry).chain(pause).chain(cooldowns);
        timers.chain(sources).chain(count).chain(period).min()
    }

    fn on_timer(&mut self) -> Result<(), CatalogError> {
        let now = Instant::now();
        // In-run retries whose delay has passed go back to the queue.
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.sleeping).into_iter().partition(|(at, _)| *at <= now);
        self.sleeping = later;
        for (_, mut pending) in due {
            let queued = pending.job.requeue()?;
            self.catalog.apply(&pending.job, &queued, Timestamp::now())?;
            pending.job = queued;
            self.queue.push_front(pending);
        }
        let now_wall = Timestamp::now();
        if let Some(UserPause { ends: Some(ends) }) = self.paused
            && ends.passed(now_wall, now)
        {
            tracing::info!("pause ended");
            self.paused = None;
        }
        for breaker in self.breakers.values_mut() {
            if matches!(breaker.open, Some((_, Some(until))) if until.passed(now_wall, now)) {
                // Half-open: the next job tries the destination again.
                breaker.open = None;
                breaker.resting = false;
            }
        }
        if self.settings.mode == Mode::Service
            && let Some(due) = self.next_retry.filter(|at| at.passed(now_wall, now))
        {
            // Due by the monotonic clock even if the wall clock was stepped back.
            self.catalog.requeue_due(due.wall().max(now_wall))?;
            self.reload()?;
        }
        if self.source_recheck.is_some_and(|at| at <= now) {
            self.recheck_sources()?;
        }
        if self.meter_due.is_some_and(|at| at <= now) {
            self.flush_meter()?;
        }
        if self.meter_ends().is_some_and(|ends| ends.passed(now_wall, now)) {
            self.roll_meter()?;
        }
        Ok(())
    }

    /// Stops every upload at its next chunk boundary (up to a grace period),
    /// returning their jobs to `queued`, uncharged.
    async fn shut_down(&mut self) -> Result<(), CatalogError> {
        for flight in self.flights.values() {
            flight.cancel.cancel();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.joined(joined)?,
                Ok(None) | Err(_) => break,
            }
        }
        // What the uploads that did not stop in time sent still counts.
        self.flush_meter()?;
        self.tasks.abort_all();
        for (_, flight) in std::mem::take(&mut self.flights) {
            let queued = flight.running.interrupt(WaitingOn::Nothing)?;
            self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
        }
        for cleanup in self.cleanups.drain(..) {
            self.tasks_aside.spawn(cleanup);
        }
        self.report.interrupted = true;
        Ok(())
    }
}

impl Drop for Scheduler<'_> {
    /// Uploads outlive a scheduler that ends on an error (a blocking copy
    /// cannot be aborted): ask them to stop at their next chunk, so none
    /// races the next run of the same job.
    fn drop(&mut self) {
        for flight in self.flights.values() {
            flight.cancel.cancel();
        }
    }
}

async fn recv<T>(channel: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match channel.as_mut() {
        Some(channel) => channel.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn jitter() -> f64 {
    fastrand::f64()
}

fn round(delay: Duration) -> Duration {
    Duration::from_millis(delay.as_millis() as u64)
}
