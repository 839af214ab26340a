//! Runs queued jobs: picks the next one, starts its upload, and records the
//! outcome, applying the retry policy from [`crate::policy`].
//!
//! One loop owns every catalog write; uploads run as tasks and only report
//! back. That keeps claims race-free (two jobs with the same content at the
//! same destination never run at once, so the second finds the first's
//! receipt and is not uploaded again) and makes every transition durable
//! before anything acts on it. [`drain`] is the one-shot form used by
//! `photosync backup`: it runs until nothing is left that this run may do.
//! The daemon (later work) reuses the same dispatch and completion steps in a
//! long-lived event loop.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogError, PendingJob};
use crate::config::RetryConfig;
use crate::destination::{Destination, DestinationError, ProgressFn, UploadRequest, Uploaded};
use crate::discover::stat_of;
use crate::model::{ContentHash, DestinationId, Job, JobId, RemoteKey, Timestamp};
use crate::policy::{RetryDecision, decide_retry};

/// Consecutive jobs that must exhaust their in-run retries at one
/// destination before the run stops sending it more work.
const BREAKER_THRESHOLD: u32 = 3;

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

/// Receives progress while a run drains the queue.
pub trait RunObserver: Send + Sync {
    /// More jobs joined the run: this many, totalling this many bytes.
    fn queued(&self, _jobs: u64, _bytes: u64) {}
    /// Bytes moved (negative when a failed attempt's bytes are taken back).
    fn bytes(&self, _delta: i64) {}
    /// A job left the run (done, failed, deferred or cancelled).
    fn job_done(&self) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl RunObserver for Silent {}

/// Work a run left for later at one destination, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Destination label.
    pub destination: String,
    /// Why nothing more was sent there.
    pub reason: String,
    /// Jobs left queued.
    pub jobs: u64,
}

/// What one [`drain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Jobs whose content was written to a destination.
    pub uploaded: u64,
    /// Jobs whose content the destination already had.
    pub already_present: u64,
    /// Bytes written.
    pub bytes_uploaded: u64,
    /// Jobs cancelled because their file was deleted or replaced.
    pub cancelled: u64,
    /// Failed attempts that were retried within the run.
    pub retries: u64,
    /// Destinations the run stopped using, with the jobs it left queued.
    pub holds: Vec<Hold>,
    /// The run was interrupted (signal); running jobs were requeued.
    pub interrupted: bool,
}

/// Runs every queued job at `targets` until none is left that this run may
/// do, or until `shutdown` completes (running jobs then return to `queued`,
/// uncharged).
///
/// While `discovery` is open, each message on it means "new jobs were
/// queued": they are loaded and join the run, which ends only once the
/// channel is closed and the work is done. Pass `None` to drain only what is
/// queued now.
pub async fn drain(
    catalog: &mut Catalog,
    targets: &[Target],
    retry: RetryConfig,
    max_concurrent: usize,
    observer: Arc<dyn RunObserver>,
    mut discovery: Option<mpsc::Receiver<()>>,
    shutdown: impl Future<Output = ()>,
) -> Result<DrainReport, CatalogError> {
    let mut run = Run {
        catalog,
        targets: targets.iter().map(|t| (t.id, t.clone())).collect(),
        retry,
        max_concurrent: max_concurrent.max(1),
        observer,
        destination_ids: targets.iter().map(|t| t.id).collect(),
        last_loaded: JobId(i64::MIN),
        queue: VecDeque::new(),
        sleeping: Vec::new(),
        flights: HashMap::new(),
        tasks: JoinSet::new(),
        task_jobs: HashMap::new(),
        busy: HashSet::new(),
        tries: HashMap::new(),
        breakers: HashMap::new(),
        held: BTreeMap::new(),
        report: DrainReport::default(),
    };
    for target in targets {
        if let Err(e) = target.destination.check().await {
            tracing::warn!(destination = %target.name, "destination unavailable: {e}");
            run.breakers.insert(target.id, Breaker { consecutive: BREAKER_THRESHOLD, open: Some(e.message) });
        }
    }
    run.load_new()?;
    tokio::pin!(shutdown);
    loop {
        run.fill()?;
        if run.tasks.is_empty() && run.sleeping.is_empty() && discovery.is_none() {
            break;
        }
        let wake = run.sleeping.iter().map(|(at, _)| *at).min();
        let discovering = discovery.is_some();
        let discovered = async {
            match discovery.as_mut() {
                Some(channel) => channel.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = discovered, if discovering => {
                if signal.is_none() {
                    discovery = None;
                }
                run.load_new()?;
            }
            Some(joined) = run.tasks.join_next_with_id(), if !run.tasks.is_empty() => {
                let (task, outcome) = match joined {
                    Ok((task, outcome)) => (task, outcome),
                    Err(e) => (e.id(), Err(DestinationError::transient(format!("upload task failed: {e}")))),
                };
                if let Some(job) = run.task_jobs.remove(&task) {
                    run.complete(job, outcome)?;
                }
            }
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => run.wake_due()?,
            () = &mut shutdown => {
                run.interrupt_all()?;
                break;
            }
        }
    }
    let mut report = run.report;
    report.holds =
        run.held.into_iter().map(|(destination, (reason, jobs))| Hold { destination, reason, jobs }).collect();
    Ok(report)
}

struct Flight {
    running: Job,
    pending: PendingJob,
    sent: Arc<AtomicU64>,
}

#[derive(Default)]
struct Breaker {
    consecutive: u32,
    open: Option<String>,
}

struct Run<'c> {
    catalog: &'c mut Catalog,
    destination_ids: Vec<DestinationId>,
    /// Highest job id loaded so far; newer jobs are loaded as discovery reports them.
    last_loaded: JobId,
    targets: HashMap<DestinationId, Target>,
    retry: RetryConfig,
    max_concurrent: usize,
    observer: Arc<dyn RunObserver>,
    queue: VecDeque<PendingJob>,
    sleeping: Vec<(Instant, PendingJob)>,
    flights: HashMap<JobId, Flight>,
    tasks: JoinSet<Result<Uploaded, DestinationError>>,
    task_jobs: HashMap<tokio::task::Id, JobId>,
    busy: HashSet<(DestinationId, ContentHash)>,
    tries: HashMap<JobId, u32>,
    breakers: HashMap<DestinationId, Breaker>,
    held: BTreeMap<String, (String, u64)>,
    report: DrainReport,
}

impl Run<'_> {
    /// Adds jobs queued since the last load to the run.
    fn load_new(&mut self) -> Result<(), CatalogError> {
        let fresh = self.catalog.pending_after(&self.destination_ids, self.last_loaded)?;
        if let Some(last) = fresh.last() {
            self.last_loaded = last.job.id;
        }
        self.observer.queued(fresh.len() as u64, fresh.iter().map(|p| p.stat.size).sum());
        self.queue.extend(fresh);
        Ok(())
    }

    /// Starts jobs until every slot is busy or nothing startable is left.
    fn fill(&mut self) -> Result<(), CatalogError> {
        while self.tasks.len() < self.max_concurrent {
            let busy = &self.busy;
            let Some(index) = self.queue.iter().position(|p| !busy.contains(&(p.job.destination_id, p.hash.clone())))
            else {
                break;
            };
            let Some(pending) = self.queue.remove(index) else { break };
            self.dispatch(pending)?;
        }
        Ok(())
    }

    fn hold(&mut self, pending: &PendingJob, reason: String) {
        let name = self.targets.get(&pending.job.destination_id).map_or_else(String::new, |t| t.name.clone());
        self.held.entry(name).or_insert((reason, 0)).1 += 1;
        self.observer.job_done();
    }

    /// Starts one job, or settles it without uploading (cancelled, already
    /// stored, destination held).
    fn dispatch(&mut self, pending: PendingJob) -> Result<(), CatalogError> {
        let destination_id = pending.job.destination_id;
        if let Some(reason) = self.breakers.get(&destination_id).and_then(|b| b.open.clone()) {
            self.hold(&pending, reason);
            return Ok(());
        }
        let path = pending.path();
        let now = Timestamp::now();
        let modified = match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cancelled = pending.job.cancel("the file was deleted before it was uploaded".into())?;
                self.catalog.apply(&pending.job, &cancelled, now)?;
                self.report.cancelled += 1;
                self.observer.job_done();
                return Ok(());
            }
            Ok(m) if stat_of(&m) != pending.stat => {
                if self.catalog.is_current(pending.job.asset_id)? {
                    self.hold(&pending, "files changed after the scan; the next run uploads them".into());
                } else {
                    let cancelled = pending.job.cancel("superseded by a newer version of the file".into())?;
                    self.catalog.apply(&pending.job, &cancelled, now)?;
                    self.report.cancelled += 1;
                    self.observer.job_done();
                }
                return Ok(());
            }
            Ok(m) => UNIX_EPOCH + Duration::new(m.mtime().max(0) as u64, m.mtime_nsec().clamp(0, 999_999_999) as u32),
            // The upload reports the read error with its classification.
            Err(_) => SystemTime::UNIX_EPOCH,
        };

        if let Some(receipt) = self.catalog.find_receipt(destination_id, &pending.hash)? {
            let running = pending.job.start(now)?;
            self.catalog.apply(&pending.job, &running, now)?;
            self.settle(&running, &Uploaded::AlreadyPresent(receipt), pending.stat.size)?;
            return Ok(());
        }

        let Some(target) = self.targets.get(&destination_id) else { return Ok(()) };
        let running = pending.job.start(now)?;
        self.catalog.apply(&pending.job, &running, now)?;
        let sent = Arc::new(AtomicU64::new(0));
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
        };
        let destination = Arc::clone(&target.destination);
        let task = self.tasks.spawn(async move { destination.upload(request, progress).await }).id();
        self.task_jobs.insert(task, running.id);
        self.busy.insert((destination_id, pending.hash.clone()));
        self.flights.insert(running.id, Flight { running, pending, sent });
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
        if let Some(breaker) = self.breakers.get_mut(&running.destination_id) {
            breaker.consecutive = 0;
        }
        self.observer.job_done();
        Ok(())
    }

    fn complete(&mut self, job: JobId, outcome: Result<Uploaded, DestinationError>) -> Result<(), CatalogError> {
        let Some(flight) = self.flights.remove(&job) else { return Ok(()) };
        self.busy.remove(&(flight.running.destination_id, flight.pending.hash.clone()));
        match outcome {
            Ok(uploaded) => {
                let sent = flight.sent.load(Ordering::Relaxed);
                if matches!(uploaded, Uploaded::AlreadyPresent(_)) {
                    self.observer.bytes(-(sent as i64));
                }
                self.settle(&flight.running, &uploaded, flight.pending.stat.size)
            }
            Err(error) => {
                self.observer.bytes(-(flight.sent.load(Ordering::Relaxed) as i64));
                self.failed(flight, &error)
            }
        }
    }

    fn failed(&mut self, flight: Flight, error: &DestinationError) -> Result<(), CatalogError> {
        let Flight { running, mut pending, .. } = flight;
        let path = pending.path();
        let now = Timestamp::now();
        if !error.retryable() {
            tracing::warn!(path = %path.display(), "upload failed: {error}");
            self.catalog.apply(&running, &running.fail(error.message.clone())?, now)?;
            self.observer.job_done();
            return Ok(());
        }
        let tries = self.tries.entry(running.id).or_insert(0);
        *tries += 1;
        let tries = *tries;
        let failures = running.attempts + 1;
        let budget_left = self.retry.max_attempts == 0 || failures < self.retry.max_attempts;
        let delay = error.retry_after.unwrap_or_else(|| self.retry.in_run.delay(tries, jitter()));
        if tries < self.retry.attempts_per_run && budget_left && delay <= self.retry.in_run.cap {
            tracing::warn!(path = %path.display(), "upload failed, retrying in {}: {error}", humantime::format_duration(round(delay)));
            let waiting = running.defer(error.message.clone(), now.after(delay))?;
            self.catalog.apply(&running, &waiting, now)?;
            self.report.retries += 1;
            pending.job = waiting;
            self.sleeping.push((Instant::now() + delay, pending));
            return Ok(());
        }
        let decision =
            decide_retry(now, self.retry.backoff, failures, self.retry.max_attempts, error.retry_after, jitter());
        match decision {
            RetryDecision::RetryAt(at) => {
                tracing::warn!(path = %path.display(), "upload failed; next attempt at {}: {error}", at.to_rfc3339());
                self.catalog.apply(&running, &running.defer(error.message.clone(), at)?, now)?;
                let breaker = self.breakers.entry(running.destination_id).or_default();
                breaker.consecutive += 1;
                if breaker.consecutive >= BREAKER_THRESHOLD && breaker.open.is_none() {
                    tracing::warn!(
                        "{BREAKER_THRESHOLD} uploads in a row failed; sending no more to this destination in this run"
                    );
                    breaker.open = Some(format!("{BREAKER_THRESHOLD} uploads in a row failed; last error: {error}"));
                }
            }
            RetryDecision::GiveUp => {
                let message = format!("{error} (gave up after {failures} attempts)");
                tracing::warn!(path = %path.display(), "upload failed for good: {message}");
                self.catalog.apply(&running, &running.fail(message)?, now)?;
            }
        }
        self.observer.job_done();
        Ok(())
    }

    /// Moves in-run retries whose delay has passed back to the queue.
    fn wake_due(&mut self) -> Result<(), CatalogError> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.sleeping).into_iter().partition(|(at, _)| *at <= now);
        self.sleeping = later;
        for (_, mut pending) in due {
            let queued = pending.job.requeue()?;
            self.catalog.apply(&pending.job, &queued, Timestamp::now())?;
            pending.job = queued;
            self.queue.push_front(pending);
        }
        Ok(())
    }

    /// Shutdown: every running job goes back to `queued`, uncharged.
    fn interrupt_all(&mut self) -> Result<(), CatalogError> {
        self.tasks.abort_all();
        for (_, flight) in self.flights.drain() {
            let queued = flight.running.interrupt(crate::model::WaitingOn::Nothing)?;
            self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
        }
        self.report.interrupted = true;
        Ok(())
    }
}

fn jitter() -> f64 {
    fastrand::f64()
}

fn round(delay: Duration) -> Duration {
    Duration::from_millis(delay.as_millis() as u64)
}
