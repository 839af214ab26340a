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
//! [`Mode::OneShot`] (`photosync backup`) retries transient failures a few
//! times within the run and ends when nothing is left to do;
//! [`Mode::Service`] (the daemon) leaves them to the backoff and runs until
//! shut down. Uploads stop cooperatively (a cancel flag checked between
//! chunks) so that a job changes state only after its task has ended.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogError, PendingJob, StateCounts};
use crate::config::{DestinationConfig, RetryConfig};
use crate::destination::{self, Destination, DestinationError, ProgressFn, Retry, Throttle, UploadRequest, Uploaded};
use crate::discover::stat_of;
use crate::model::{ContentHash, DestinationId, Job, JobId, RemoteKey, Timestamp, WaitingOn};
use crate::policy::{Decision, HoldReason, RetryDecision, decide_retry};

/// Consecutive jobs that must exhaust their retries at one destination before
/// the scheduler stops sending it work for a while.
const BREAKER_THRESHOLD: u32 = 3;

/// How long shutdown waits for uploads to stop at a chunk boundary.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How many recent errors `status` shows.
const RECENT_ERRORS: usize = 10;

/// A configured destination, ready to upload.
#[derive(Clone)]
pub struct Target {
    /// Its catalog id.
    pub id: DestinationId,
    /// Its label.
    pub name: String,
    /// The implementation.
    pub destination: Arc<dyn Destination>,
}

/// Records the configured destinations in the catalog and opens each one.
pub fn open_targets(catalog: &mut Catalog, destinations: &[DestinationConfig]) -> Result<Vec<Target>, CatalogError> {
    let ids = catalog.sync_destinations(destinations)?;
    let parts: Arc<dyn destination::PartStore> = Arc::new(catalog.upload_log()?);
    Ok(destinations
        .iter()
        .zip(ids)
        .map(|(d, id)| Target { id, name: d.name.clone(), destination: destination::open(d, &parts) })
        .collect())
}

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
}

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

/// Work left for later at one destination, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Destination label.
    pub destination: String,
    /// Why nothing more was sent there.
    pub reason: String,
    /// Jobs left queued.
    pub jobs: u64,
}

/// What the scheduler has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Jobs whose content was written to a destination.
    pub uploaded: u64,
    /// Jobs whose content the destination already had.
    pub already_present: u64,
    /// Bytes written.
    pub bytes_uploaded: u64,
    /// Jobs cancelled because their file was deleted or replaced.
    pub cancelled: u64,
    /// Failed attempts retried within the run.
    pub retries: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Destinations the scheduler is not using now, with the jobs waiting.
    pub holds: Vec<Hold>,
    /// The run was interrupted (signal); running jobs were requeued.
    pub interrupted: bool,
}

/// One upload in progress, for `photosync status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// The job.
    pub job: JobId,
    /// Source path (lossy UTF-8).
    pub path: String,
    /// Destination label.
    pub destination: String,
    /// Bytes sent so far.
    pub bytes_done: u64,
    /// Size of the file.
    pub bytes_total: u64,
    /// Average rate since the upload started, bytes per second.
    pub rate: f64,
    /// Seconds to go at that rate, when known.
    pub eta_seconds: Option<f64>,
}

/// An error seen recently, for `photosync status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    /// When.
    pub at: Timestamp,
    /// The job.
    pub job: JobId,
    /// Source path.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// A user pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When it ends by itself; `None` until `resume`.
    pub until: Option<Timestamp>,
}

/// The scheduler's view for `photosync status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerStatus {
    /// Set while paused by the user.
    pub paused: Option<Pause>,
    /// Why the conditions policy holds uploads back, if it does.
    pub held_by: Option<String>,
    /// Uploads in progress.
    pub uploads: Vec<UploadStatus>,
    /// Destinations on hold and why.
    pub holds: Vec<Hold>,
    /// Jobs per state (current destinations).
    pub counts: BTreeMap<String, u64>,
    /// When the next job in `retry_wait` is due.
    pub next_retry: Option<Timestamp>,
    /// The last errors, newest first.
    pub recent_errors: Vec<RecentError>,
    /// Totals since the scheduler started.
    pub totals: DrainReport,
}

/// A request to the running scheduler; each carries its reply channel.
#[derive(Debug)]
pub enum Command {
    /// Report status.
    Status(oneshot::Sender<SchedulerStatus>),
    /// Stop uploads (in-flight ones stop at a chunk boundary, uncharged)
    /// until `until`, or until resumed.
    Pause {
        /// When the pause ends by itself.
        until: Option<Timestamp>,
        /// Acknowledgement.
        reply: oneshot::Sender<()>,
    },
    /// End a pause.
    Resume(oneshot::Sender<()>),
    /// Requeue these jobs now (all failed and retry-waiting ones when empty).
    Retry {
        /// Jobs to requeue.
        jobs: Vec<JobId>,
        /// Per job: requeued, or why not.
        reply: oneshot::Sender<Result<Vec<Result<JobId, String>>, String>>,
    },
    /// Reply once nothing is left to do now (queue empty, nothing running),
    /// or at once while paused.
    WaitIdle(oneshot::Sender<DrainReport>),
    /// The conditions policy changed its verdict: hold off (running uploads
    /// stop at a chunk boundary, uncharged) or run.
    Conditions(Decision),
    /// The bandwidth timetable crossed a boundary (bytes per second, `None`: unlimited).
    Bandwidth(Option<u64>),
}

/// Runs every queued job at `targets` until none is left that this run may
/// do, or until `shutdown` completes (running jobs then return to `queued`,
/// uncharged). While `discovery` is open, each message on it means "the
/// catalog changed": new jobs are loaded and join the run, which ends only
/// once the channel is closed and the work is done.
/// A `hold` from the conditions policy holds every job for the whole run;
/// `bandwidth` limits all uploads together (bytes per second).
#[allow(clippy::too_many_arguments)] // the one-shot run's resources, each distinct
pub async fn drain(
    catalog: &mut Catalog,
    targets: &[Target],
    retry: RetryConfig,
    max_concurrent: usize,
    observer: Arc<dyn RunObserver>,
    discovery: Option<mpsc::Receiver<()>>,
    (hold, bandwidth): (Option<HoldReason>, Option<u64>),
    shutdown: impl Future<Output = ()>,
) -> Result<DrainReport, CatalogError> {
    let settings = Settings { retry, max_concurrent, mode: Mode::OneShot };
    let mut scheduler = Scheduler::new(catalog, targets, settings, observer);
    scheduler.apply_conditions(hold.map_or(Decision::Run, Decision::HoldOff));
    scheduler.set_bandwidth(bandwidth);
    scheduler.run(discovery, None, shutdown).await?;
    Ok(scheduler.into_report())
}

struct Flight {
    running: Job,
    pending: PendingJob,
    sent: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

#[derive(Default)]
struct Breaker {
    consecutive: u32,
    /// Why the destination is held, and until when (`None`: rest of the run).
    open: Option<(String, Option<Instant>)>,
}

/// The job loop. See the module documentation.
pub struct Scheduler<'c> {
    catalog: &'c mut Catalog,
    targets: HashMap<DestinationId, Target>,
    destination_ids: Vec<DestinationId>,
    settings: Settings,
    observer: Arc<dyn RunObserver>,
    /// Highest job id loaded; newer jobs are loaded when discovery signals.
    last_loaded: JobId,
    queue: VecDeque<PendingJob>,
    /// Jobs whose file changed after it was scanned: retried after the next
    /// discovery signal (the scan records the new state first).
    stale: Vec<PendingJob>,
    sleeping: Vec<(Instant, PendingJob)>,
    flights: HashMap<JobId, Flight>,
    tasks: JoinSet<Result<Uploaded, DestinationError>>,
    task_jobs: HashMap<tokio::task::Id, JobId>,
    /// Clean-ups that run beside the uploads (aborting cancelled uploads).
    tasks_aside: JoinSet<()>,
    busy: HashSet<(DestinationId, ContentHash)>,
    tries: HashMap<JobId, u32>,
    breakers: HashMap<DestinationId, Breaker>,
    /// Destinations whose check failed permanently: their jobs fail at once.
    broken: HashMap<DestinationId, String>,
    paused: Option<(Pause, Option<Instant>)>,
    policy_hold: Option<HoldReason>,
    /// The upload rate limit shared by every upload.
    throttle: Arc<Throttle>,
    next_retry: Option<Timestamp>,
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
            last_loaded: JobId(i64::MIN),
            queue: VecDeque::new(),
            stale: Vec::new(),
            sleeping: Vec::new(),
            flights: HashMap::new(),
            tasks: JoinSet::new(),
            task_jobs: HashMap::new(),
            tasks_aside: JoinSet::new(),
            busy: HashSet::new(),
            tries: HashMap::new(),
            breakers: HashMap::new(),
            broken: HashMap::new(),
            paused: None,
            policy_hold: None,
            throttle: Arc::default(),
            next_retry: None,
            idle_waiters: Vec::new(),
            recent_errors: VecDeque::new(),
            report: DrainReport::default(),
        }
    }

    /// Applies the conditions policy's verdict: a hold stops running uploads
    /// at their next chunk (they return to the queue uncharged) and starts
    /// nothing new; `Run` lifts it.
    pub fn apply_conditions(&mut self, decision: Decision) {
        match decision {
            Decision::HoldOff(reason) => {
                tracing::info!("holding uploads: {reason}");
                for flight in self.flights.values() {
                    flight.cancel.store(true, Ordering::Relaxed);
                }
                self.policy_hold = Some(reason);
            }
            Decision::Run => {
                if self.policy_hold.take().is_some() {
                    tracing::info!("conditions allow uploads again");
                }
            }
        }
    }

    /// Sets the shared upload rate limit (bytes per second; `None`: unlimited).
    pub fn set_bandwidth(&self, rate: Option<u64>) {
        self.throttle.set_rate(rate);
    }

    /// What the scheduler did, with the holds still in force.
    pub fn into_report(mut self) -> DrainReport {
        self.report.holds = self.holds();
        self.report
    }

    /// The loop. Ends on `shutdown`, or in [`Mode::OneShot`] once no work is
    /// left and `discovery` is closed; `commands` is for the daemon.
    pub async fn run(
        &mut self,
        mut discovery: Option<mpsc::Receiver<()>>,
        mut commands: Option<mpsc::Receiver<Command>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CatalogError> {
        for target in self.targets.values() {
            match target.destination.check().await {
                Ok(()) => {}
                // Bad credentials, a missing bucket: every job would fail the same way.
                Err(e) if e.retry == Retry::Permanent => {
                    tracing::error!(destination = %target.name, "destination unusable: {e}");
                    self.broken.insert(target.id, e.message);
                }
                Err(e) => {
                    tracing::warn!(destination = %target.name, "destination unavailable: {e}");
                    let until = self.cooldown(BREAKER_THRESHOLD);
                    let open = Some((e.message, until));
                    self.breakers.insert(target.id, Breaker { consecutive: BREAKER_THRESHOLD, open });
                }
            }
        }
        self.reload()?;
        tokio::pin!(shutdown);
        loop {
            self.fill()?;
            self.answer_idle_waiters();
            let working = !self.tasks.is_empty() || !self.sleeping.is_empty();
            if self.settings.mode == Mode::OneShot && !working && discovery.is_none() {
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
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(joined)?,
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

    /// Loads every queued job (after recovery, a retry, or a wake-up).
    fn reload(&mut self) -> Result<(), CatalogError> {
        let pending = self.catalog.pending(&self.destination_ids)?;
        // Stale jobs are queued in the catalog too; they must not be queued twice.
        let known: HashSet<JobId> = self.queue.iter().chain(&self.stale).map(|p| p.job.id).collect();
        let fresh: Vec<PendingJob> = pending.into_iter().filter(|p| !known.contains(&p.job.id)).collect();
        self.add(fresh);
        self.next_retry = self.catalog.next_retry()?;
        Ok(())
    }

    /// Loads jobs queued since the last load, and gives stale jobs another go.
    fn load_new(&mut self) -> Result<(), CatalogError> {
        let fresh = self.catalog.pending_after(&self.destination_ids, self.last_loaded)?;
        self.add(fresh);
        let stale = std::mem::take(&mut self.stale);
        self.queue.extend(stale);
        Ok(())
    }

    fn add(&mut self, fresh: Vec<PendingJob>) {
        if let Some(last) = fresh.iter().map(|p| p.job.id).max() {
            self.last_loaded = self.last_loaded.max(last);
        }
        self.observer.queued(fresh.len() as u64, fresh.iter().map(|p| p.stat.size).sum());
        self.queue.extend(fresh);
    }

    fn is_held(&self, destination: DestinationId) -> bool {
        self.breakers.get(&destination).is_some_and(|b| b.open.is_some())
    }

    /// Starts jobs until every slot is busy or nothing startable is left.
    fn fill(&mut self) -> Result<(), CatalogError> {
        if self.paused.is_some() || self.policy_hold.is_some() {
            return Ok(());
        }
        while self.tasks.len() < self.settings.max_concurrent.max(1) {
            let index = self.queue.iter().position(|p| {
                let destination = p.job.destination_id;
                !self.is_held(destination) && !self.busy.contains(&(destination, p.hash.clone()))
            });
            let Some(pending) = index.and_then(|i| self.queue.remove(i)) else { break };
            self.dispatch(pending)?;
        }
        Ok(())
    }

    fn cancel_job(&mut self, pending: &PendingJob, reason: &str) -> Result<(), CatalogError> {
        let cancelled = pending.job.cancel(reason.to_owned())?;
        self.catalog.apply(&pending.job, &cancelled, Timestamp::now())?;
        self.report.cancelled += 1;
        self.observer.job_done();
        // An earlier attempt may have left a multipart upload open on the server.
        if let Some(target) = self.targets.get(&pending.job.destination_id) {
            let (destination, job) = (Arc::clone(&target.destination), pending.job.id);
            let key = RemoteKey(pending.rel_path.clone());
            self.tasks_aside.spawn(async move {
                if let Err(e) = destination.discard(job, &key).await {
                    tracing::warn!(job = %job, "could not clean up after the cancelled job: {e}");
                }
            });
        }
        Ok(())
    }

    /// Starts one job, or settles it without uploading (cancelled, already
    /// stored, file changed since the scan).
    fn dispatch(&mut self, pending: PendingJob) -> Result<(), CatalogError> {
        let destination_id = pending.job.destination_id;
        let path = pending.path();
        let modified = match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.cancel_job(&pending, "the file was deleted before it was uploaded");
            }
            Ok(m) if stat_of(&m) != pending.stat => {
                if self.catalog.is_current(pending.job.asset_id)? {
                    // Changed after the scan: wait until discovery records it again.
                    self.stale.push(pending);
                    return Ok(());
                }
                return self.cancel_job(&pending, "superseded by a newer version of the file");
            }
            Ok(m) => UNIX_EPOCH + Duration::new(m.mtime().max(0) as u64, m.mtime_nsec().clamp(0, 999_999_999) as u32),
            // The upload reports the read error with its classification.
            Err(_) => SystemTime::UNIX_EPOCH,
        };

        let now = Timestamp::now();
        if let Some(receipt) = self.catalog.find_receipt(destination_id, &pending.hash)? {
            let running = pending.job.start(now)?;
            self.catalog.apply(&pending.job, &running, now)?;
            return self.settle(&running, &Uploaded::AlreadyPresent(receipt), pending.stat.size);
        }

        let Some(target) = self.targets.get(&destination_id) else { return Ok(()) };
        let destination = Arc::clone(&target.destination);
        let running = pending.job.start(now)?;
        self.catalog.apply(&pending.job, &running, now)?;
        if let Some(reason) = self.broken.get(&destination_id) {
            self.catalog.apply(&running, &running.fail(reason.clone())?, now)?;
            self.report.failed += 1;
            self.observer.job_done();
            return Ok(());
        }
        let sent = Arc::new(AtomicU64::new(0));
        let cancel = Arc::new(AtomicBool::new(false));
        let progress: ProgressFn = {
            let (sent, observer) = (Arc::clone(&sent), Arc::clone(&self.observer));
            Arc::new(move |n| {
                sent.fetch_add(n, Ordering::Relaxed);
                observer.bytes(n as i64);
            })
        };
        let request = UploadRequest {
            job: running.id,
            source: path,
            key: RemoteKey(pending.rel_path.clone()),
            size: pending.stat.size,
            hash: pending.hash.clone(),
            modified,
            cancel: Arc::clone(&cancel),
            throttle: Arc::clone(&self.throttle),
        };
        let task = self.tasks.spawn(async move { destination.upload(request, progress).await }).id();
        self.task_jobs.insert(task, running.id);
        self.busy.insert((destination_id, pending.hash.clone()));
        self.flights.insert(running.id, Flight { running, pending, sent, cancel, started: Instant::now() });
        Ok(())
    }

    /// Records a receipt: `running → succeeded → acknowledged`.
    fn settle(&mut self, running: &Job, uploaded: &Uploaded, size: u64) -> Result<(), CatalogError> {
        let succeeded = running.succeed(uploaded.receipt().clone())?;
        self.catalog.apply(running, &succeeded, Timestamp::now())?;
        let acknowledged = succeeded.acknowledge()?;
        self.catalog.apply(&succeeded, &acknowledged, Timestamp::now())?;
        match uploaded {
            Uploaded::Stored(_) => {
                self.report.uploaded += 1;
                self.report.bytes_uploaded += size;
            }
            Uploaded::AlreadyPresent(_) => {
                self.report.already_present += 1;
                self.observer.bytes(size as i64);
            }
        }
        self.tries.remove(&running.id);
        if let Some(breaker) = self.breakers.get_mut(&running.destination_id) {
            *breaker = Breaker::default();
        }
        self.observer.job_done();
        Ok(())
    }

    fn joined(
        &mut self,
        joined: Result<(tokio::task::Id, Result<Uploaded, DestinationError>), tokio::task::JoinError>,
    ) -> Result<(), CatalogError> {
        let (task, outcome) = match joined {
            Ok((task, outcome)) => (task, outcome),
            Err(e) => (e.id(), Err(DestinationError::transient(format!("upload task failed: {e}")))),
        };
        match self.task_jobs.remove(&task) {
            Some(job) => self.complete(job, outcome),
            None => Ok(()),
        }
    }

    fn complete(&mut self, job: JobId, outcome: Result<Uploaded, DestinationError>) -> Result<(), CatalogError> {
        let Some(flight) = self.flights.remove(&job) else { return Ok(()) };
        self.busy.remove(&(flight.running.destination_id, flight.pending.hash.clone()));
        let sent = flight.sent.load(Ordering::Relaxed) as i64;
        match outcome {
            Ok(uploaded) => {
                if matches!(uploaded, Uploaded::AlreadyPresent(_)) {
                    self.observer.bytes(-sent);
                }
                self.settle(&flight.running, &uploaded, flight.pending.stat.size)
            }
            Err(error) if error.retry == Retry::Interrupted => {
                self.observer.bytes(-sent);
                let waiting_on = match (&self.paused, &self.policy_hold) {
                    (Some(_), _) => WaitingOn::Paused,
                    (None, Some(reason)) => reason.waiting_on(),
                    (None, None) => WaitingOn::Nothing,
                };
                let queued = flight.running.interrupt(waiting_on)?;
                self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
                let mut pending = flight.pending;
                pending.job = queued;
                self.queue.push_front(pending);
                Ok(())
            }
            Err(error) => {
                self.observer.bytes(-sent);
                self.failed(flight, &error)
            }
        }
    }

    fn remember_error(&mut self, job: JobId, path: &std::path::Path, error: &str) {
        self.recent_errors.push_front(RecentError {
            at: Timestamp::now(),
            job,
            path: path.display().to_string(),
            error: error.to_owned(),
        });
        self.recent_errors.truncate(RECENT_ERRORS);
    }

    fn failed(&mut self, flight: Flight, error: &DestinationError) -> Result<(), CatalogError> {
        let Flight { running, mut pending, .. } = flight;
        let path = pending.path();
        self.remember_error(running.id, &path, &error.message);
        let now = Timestamp::now();
        if !error.retryable() {
            tracing::warn!(path = %path.display(), "upload failed: {error}");
            self.catalog.apply(&running, &running.fail(error.message.clone())?, now)?;
            self.report.failed += 1;
            self.observer.job_done();
            return Ok(());
        }
        let tries = self.tries.entry(running.id).or_insert(0);
        *tries += 1;
        let tries = *tries;
        let failures = running.attempts + 1;
        let retry = self.settings.retry;
        let budget_left = retry.max_attempts == 0 || failures < retry.max_attempts;
        let quick = self.settings.mode == Mode::OneShot && tries < retry.attempts_per_run && budget_left;
        let delay = error.retry_after.unwrap_or_else(|| retry.in_run.delay(tries, jitter()));
        if quick && delay <= retry.in_run.cap {
            tracing::warn!(path = %path.display(), "upload failed, retrying in {}: {error}", humantime::format_duration(round(delay)));
            let waiting = running.defer(error.message.clone(), now.after(delay))?;
            self.catalog.apply(&running, &waiting, now)?;
            self.report.retries += 1;
            pending.job = waiting;
            self.sleeping.push((Instant::now() + delay, pending));
            return Ok(());
        }
        self.tries.remove(&running.id);
        match decide_retry(now, retry.backoff, failures, retry.max_attempts, error.retry_after, jitter()) {
            RetryDecision::RetryAt(at) => {
                tracing::warn!(path = %path.display(), "upload failed; next attempt at {}: {error}", at.to_rfc3339());
                self.catalog.apply(&running, &running.defer(error.message.clone(), at)?, now)?;
                self.next_retry = Some(self.next_retry.map_or(at, |t| t.min(at)));
                self.trip(running.destination_id, error);
            }
            RetryDecision::GiveUp => {
                let message = format!("{error} (gave up after {failures} attempts)");
                tracing::warn!(path = %path.display(), "upload failed for good: {message}");
                self.catalog.apply(&running, &running.fail(message)?, now)?;
                self.report.failed += 1;
            }
        }
        self.observer.job_done();
        Ok(())
    }

    /// Counts a job that exhausted its retries; enough in a row hold the destination.
    fn trip(&mut self, destination: DestinationId, error: &DestinationError) {
        let consecutive = {
            let breaker = self.breakers.entry(destination).or_default();
            breaker.consecutive += 1;
            breaker.consecutive
        };
        if consecutive >= BREAKER_THRESHOLD {
            let until = self.cooldown(consecutive);
            let name = self.targets.get(&destination).map_or("?", |t| t.name.as_str());
            tracing::warn!(destination = name, "{consecutive} uploads in a row failed; holding this destination");
            let reason = format!("{consecutive} uploads in a row failed; last error: {error}");
            if let Some(breaker) = self.breakers.get_mut(&destination) {
                breaker.open = Some((reason, until));
            }
        }
    }

    /// How long a failing destination rests: the rest of a one-shot run, or
    /// the backoff for that many failures in the daemon.
    fn cooldown(&self, failures: u32) -> Option<Instant> {
        match self.settings.mode {
            Mode::OneShot => None,
            Mode::Service => Some(Instant::now() + self.settings.retry.backoff.ceiling(failures)),
        }
    }

    /// The earliest timer: an in-run retry, a retry-wait job coming due, a
    /// pause ending, or a destination's cool-down ending.
    fn next_wake(&self) -> Option<Instant> {
        let now_wall = Timestamp::now();
        let now = Instant::now();
        let retry = match self.settings.mode {
            Mode::Service => self.next_retry.map(|at| now + now_wall.until(at)),
            Mode::OneShot => None,
        };
        let pause = self.paused.and_then(|(_, deadline)| deadline);
        let cooldowns = self.breakers.values().filter_map(|b| b.open.as_ref().and_then(|(_, until)| *until));
        self.sleeping.iter().map(|(at, _)| *at).chain(retry).chain(pause).chain(cooldowns).min()
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
        if let Some((_, Some(deadline))) = self.paused
            && deadline <= now
        {
            tracing::info!("pause ended");
            self.paused = None;
        }
        for breaker in self.breakers.values_mut() {
            if matches!(breaker.open, Some((_, Some(until))) if until <= now) {
                // Half-open: the next job tries the destination again.
                breaker.open = None;
            }
        }
        if self.settings.mode == Mode::Service && self.next_retry.is_some_and(|at| at <= Timestamp::now()) {
            self.catalog.requeue_due(Timestamp::now())?;
            self.reload()?;
        }
        Ok(())
    }

    fn handle(&mut self, command: Command) -> Result<(), CatalogError> {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status()?);
            }
            Command::Pause { until, reply } => {
                let deadline = until.map(|at| Instant::now() + Timestamp::now().until(at));
                self.paused = Some((Pause { until }, deadline));
                for flight in self.flights.values() {
                    flight.cancel.store(true, Ordering::Relaxed);
                }
                tracing::info!(until = ?until.map(Timestamp::to_rfc3339), "paused");
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.paused = None;
                tracing::info!("resumed");
                let _ = reply.send(());
            }
            Command::Retry { jobs, reply } => {
                let busy: HashSet<JobId> = self.sleeping.iter().map(|(_, p)| p.job.id).collect();
                let jobs: Vec<JobId> = jobs.into_iter().filter(|id| !busy.contains(id)).collect();
                match self.catalog.requeue(&jobs, Timestamp::now()) {
                    Ok(results) => {
                        // Requeued jobs start fresh: clear cool-downs so they are tried now.
                        self.breakers.clear();
                        self.reload()?;
                        let _ = reply.send(Ok(results));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Conditions(decision) => self.apply_conditions(decision),
            Command::Bandwidth(rate) => self.set_bandwidth(rate),
            Command::WaitIdle(reply) => {
                // Whatever discovery recorded before the request is part of the wait.
                self.load_new()?;
                self.idle_waiters.push(reply);
            }
        }
        Ok(())
    }

    /// Whether nothing is left to do now: no upload running or waiting for an
    /// in-run retry, and every queued job is held (or the user paused).
    fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.sleeping.is_empty()
            && (self.paused.is_some()
                || self.policy_hold.is_some()
                || self.queue.iter().all(|p| self.is_held(p.job.destination_id)))
    }

    fn answer_idle_waiters(&mut self) {
        if self.idle_waiters.is_empty() || !self.is_idle() {
            return;
        }
        let mut report = self.report.clone();
        report.holds = self.holds();
        for waiter in self.idle_waiters.drain(..) {
            let _ = waiter.send(report.clone());
        }
    }

    fn holds(&self) -> Vec<Hold> {
        let mut holds: BTreeMap<&str, Hold> = BTreeMap::new();
        let stale = self.stale.iter().map(|p| (p, "files changed after the scan; the next scan picks them up"));
        let held = self.queue.iter().filter_map(|p| {
            let breaker = self.breakers.get(&p.job.destination_id)?;
            breaker.open.as_ref().map(|(reason, _)| (p, reason.as_str()))
        });
        let policy = self.policy_hold.as_ref().map(ToString::to_string);
        let stopped = match (&self.paused, &policy) {
            (Some(_), _) => Some("paused by user"),
            (None, Some(reason)) => Some(reason.as_str()),
            (None, None) => None,
        };
        let paused = self.queue.iter().filter(|p| stopped.is_some() && !self.is_held(p.job.destination_id));
        let paused = paused.map(|p| (p, stopped.unwrap_or_default()));
        for (pending, reason) in held.chain(stale).chain(paused) {
            let name = self.targets.get(&pending.job.destination_id).map_or("?", |t| t.name.as_str());
            holds
                .entry(name)
                .or_insert_with(|| Hold { destination: name.to_owned(), reason: reason.to_owned(), jobs: 0 })
                .jobs += 1;
        }
        holds.into_values().collect()
    }

    fn status(&self) -> Result<SchedulerStatus, CatalogError> {
        let counts: StateCounts = self.catalog.counts()?;
        let mut uploads: Vec<UploadStatus> = self
            .flights
            .values()
            .map(|f| {
                let done = f.sent.load(Ordering::Relaxed);
                let elapsed = f.started.elapsed().as_secs_f64();
                let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
                let left = f.pending.stat.size.saturating_sub(done) as f64;
                UploadStatus {
                    job: f.running.id,
                    path: f.pending.path().display().to_string(),
                    destination: self
                        .targets
                        .get(&f.running.destination_id)
                        .map_or_else(String::new, |t| t.name.clone()),
                    bytes_done: done,
                    bytes_total: f.pending.stat.size,
                    rate,
                    eta_seconds: (rate > 0.0).then(|| left / rate),
                }
            })
            .collect();
        uploads.sort_by_key(|u| u.job);
        Ok(SchedulerStatus {
            paused: self.paused.map(|(pause, _)| pause),
            held_by: self.policy_hold.as_ref().map(ToString::to_string),
            uploads,
            holds: self.holds(),
            counts: crate::model::StateName::ALL.iter().map(|s| (s.as_str().to_owned(), counts.get(*s))).collect(),
            next_retry: self.next_retry,
            recent_errors: self.recent_errors.iter().cloned().collect(),
            totals: DrainReport { holds: Vec::new(), ..self.report.clone() },
        })
    }

    /// Stops every upload at its next chunk boundary (up to a grace period),
    /// returning their jobs to `queued`, uncharged.
    async fn shut_down(&mut self) -> Result<(), CatalogError> {
        for flight in self.flights.values() {
            flight.cancel.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.joined(joined)?,
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        for (_, flight) in std::mem::take(&mut self.flights) {
            let queued = flight.running.interrupt(WaitingOn::Nothing)?;
            self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
        }
        self.report.interrupted = true;
        Ok(())
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
