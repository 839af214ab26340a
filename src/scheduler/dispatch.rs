//! Starting jobs and settling what their uploads report, and the jobs set
//! aside meanwhile: a file changed since its scan, a file missing from its
//! source, a source that is not available. Nothing here concludes that a
//! photo is gone while its source folder is not there to be asked.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::collections::HashSet;

use super::{Aside, Breaker, Flight, Scheduler};
use crate::catalog::{CatalogError, FileStat, PendingJob};
use crate::config::SourceConfig;
use crate::destination::{DestinationError, Moved, ProgressFn, Retry, UploadRequest, Uploaded};
use crate::discover::source::{Availability, availability};
use crate::discover::stat_of;
use crate::model::{Job, JobId, Timestamp, WaitingOn};

/// Why a file that is not where its job expects it was cancelled.
const DELETED: &str = "the file was deleted before it was uploaded";

/// Why a version of a file that was edited meanwhile was cancelled.
const SUPERSEDED: &str = "superseded by a newer version of the file";

impl Scheduler<'_> {
    /// Starts one job, or settles it without uploading (already stored,
    /// file gone), or sets it aside (file changed since the scan, file or
    /// source missing).
    pub(super) fn dispatch(&mut self, mut pending: PendingJob) -> Result<(), CatalogError> {
        let destination_id = pending.job.destination_id;
        let path = pending.path();
        let modified = match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.missing(pending),
            Ok(m) if stat_of(&m) != pending.stat => return self.changed(pending, stat_of(&m)),
            Ok(m) => UNIX_EPOCH + Duration::new(m.mtime().max(0) as u64, m.mtime_nsec().clamp(0, 999_999_999) as u32),
            // The upload reports the read error with its classification.
            Err(_) => SystemTime::UNIX_EPOCH,
        };

        // Same size, time and inode, but its path holds a newer version now
        // (an edit that kept the file's time): nothing of this one is left.
        if !self.catalog.is_current(pending.job.asset_id)? {
            return self.cancel_gone(pending, SUPERSEDED);
        }

        let now = Timestamp::now();
        let shared = self.targets.get(&destination_id).is_some_and(|t| t.destination.content_identifies(&path));
        if shared && let Some(receipt) = self.catalog.find_receipt(destination_id, &pending.hash)? {
            let running = pending.job.start(now)?;
            self.catalog.apply(&pending.job, &running, now)?;
            self.settle(&running, &Uploaded::AlreadyPresent(receipt), 0)?;
            // An earlier attempt of this job, cut short, may have left something.
            self.discard_leftovers(&pending);
            return Ok(());
        }

        let Some(target) = self.targets.get(&destination_id) else { return Ok(()) };
        let needs_info = (target.layout.needs_info() || target.destination.needs_info()) && pending.info.is_none();
        if needs_info && let Some(source) = target.sources.get(&pending.source).cloned() {
            self.describe(&mut pending, &source, &path)?;
        }
        let Some(target) = self.targets.get(&destination_id) else { return Ok(()) };
        let key = target.key_for(&pending);
        if needs_info && self.busy_keys.contains(&(destination_id, key.0.clone())) {
            // Its key, known only now, is being written by another job.
            self.queue.push_back(pending);
            return Ok(());
        }
        let destination = Arc::clone(&target.destination);
        let subject = Arc::new(crate::destination::Subject {
            rel_path: pending.rel_path.clone(),
            source: target.source_name(&pending).into_owned(),
            info: pending.info.clone(),
        });
        let (live_video, group_key, sha1) = if destination.needs_info() {
            (self.live_video(&pending)?, self.group_key(&pending)?, self.catalog.sha1_of(&pending.hash)?)
        } else {
            (None, None, None)
        };
        let running = pending.job.start(now)?;
        self.catalog.apply(&pending.job, &running, now)?;
        if let Some(reason) = self.broken.get(&destination_id) {
            self.catalog.apply(&running, &running.fail(reason.clone())?, now)?;
            self.report.failed += 1;
            self.observer.job_done();
            return Ok(());
        }
        let (sent, resumed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let cancel = CancellationToken::new();
        let progress: ProgressFn = {
            let (sent, resumed, observer) = (Arc::clone(&sent), Arc::clone(&resumed), Arc::clone(&self.observer));
            Arc::new(move |moved| {
                let n = match moved {
                    Moved::Sent(n) => {
                        sent.fetch_add(n, Ordering::Relaxed);
                        n
                    }
                    Moved::Resumed(n) => {
                        resumed.fetch_add(n, Ordering::Relaxed);
                        n
                    }
                };
                observer.bytes(n as i64);
            })
        };
        let request = UploadRequest {
            job: running.id,
            source: path,
            key: key.clone(),
            size: pending.stat.size,
            hash: pending.hash.clone(),
            modified,
            taken: pending.info.as_ref().and_then(|i| i.capture.rfc3339(&jiff::tz::TimeZone::system())),
            subject,
            live_video,
            group_key,
            sha1,
            cancel: cancel.clone(),
            throttle: Arc::clone(&self.throttle),
        };
        // Spawned once the batch holding its `running` is committed.
        let prepared = super::fill::Prepared { job: running.id, size: pending.stat.size, request, progress };
        self.plan(destination_id, &destination, prepared);
        self.busy.insert((destination_id, pending.hash.clone()));
        self.busy_keys.insert((destination_id, key.0.clone()));
        let started = Instant::now();
        self.flights.insert(running.id, Flight { running, pending, key, sent, resumed, counted: 0, cancel, started });
        if self.meter.is_some() {
            self.meter_due.get_or_insert(Instant::now() + super::meter::FLUSH);
        }
        Ok(())
    }

    /// The video of the Live Photo whose still `pending` is, if it is one.
    fn live_video(&self, pending: &PendingJob) -> Result<Option<crate::destination::Member>, CatalogError> {
        let Some(source) = key_source(pending) else { return Ok(None) };
        Ok(self.catalog.live_video(source, &pending.rel_path)?.map(|found| member(pending, found)))
    }

    /// The key file (the photo) of the group `pending` is a member of.
    fn group_key(&self, pending: &PendingJob) -> Result<Option<crate::destination::Member>, CatalogError> {
        let Some(group) = pending.info.as_ref().and_then(|i| i.group.as_ref()) else { return Ok(None) };
        let Some(source) = pending.source.to_str() else { return Ok(None) };
        let found = self.catalog.current_version(source, &group.key)?;
        Ok(found.map(|(hash, size)| member(pending, (group.key.clone(), hash, size))))
    }

    /// Reads what the asset of `pending` is and when it was taken, for a
    /// version recorded before capture times were kept, and records it.
    /// A file that cannot be read now keeps none (its upload reports why).
    fn describe(
        &mut self,
        pending: &mut PendingJob,
        source: &SourceConfig,
        path: &std::path::Path,
    ) -> Result<(), CatalogError> {
        match crate::discover::describe(source, path, pending.stat.mtime_ns, &mut self.folders) {
            Ok(Some(info)) => {
                self.catalog.record_info(pending.job.asset_id, &info)?;
                // What the catalog holds is what every later attempt renders
                // (a scan may have described it first).
                pending.info = self.catalog.asset_info(pending.job.asset_id)?;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(path = %path.display(), "cannot read the capture time: {e}"),
        }
        Ok(())
    }

    /// The file is not at its path. If its source folder is not there
    /// either, the job waits for the source. If the source is there and a
    /// complete scan no longer records the file, it was deleted: the job is
    /// cancelled (and revived should the file come back). Otherwise the job
    /// waits for the file, or for the next complete scan to say it is gone.
    fn missing(&mut self, pending: PendingJob) -> Result<(), CatalogError> {
        let root = pending.source.to_string_lossy().into_owned();
        match availability(self.catalog, &pending.source, &root)? {
            Availability::Available { .. } => {
                if self.catalog.is_current(pending.job.asset_id)? {
                    self.set_aside(pending, Aside::FileMissing)
                } else {
                    self.cancel_gone(pending, DELETED)
                }
            }
            Availability::Unavailable(reason) | Availability::Broken(reason) => {
                self.set_aside(pending, Aside::SourceUnavailable(reason))
            }
        }
    }

    /// The file's stat differs from the one its content was hashed with:
    /// either a newer version replaced it (cancel: that version has a job of
    /// its own), or discovery has recorded the new stat already (a touch:
    /// same content; go on with what the catalog says now), or discovery
    /// has yet to read it again (wait for that).
    fn changed(&mut self, pending: PendingJob, now: FileStat) -> Result<(), CatalogError> {
        if !self.catalog.is_current(pending.job.asset_id)? {
            return self.cancel_gone(pending, SUPERSEDED);
        }
        match self.catalog.pending_job(pending.job.id)? {
            Some(fresh) if fresh.stat == now => {
                self.queue.push_front(fresh);
                Ok(())
            }
            _ => self.set_aside(pending, Aside::Changed),
        }
    }

    /// Keeps a job out of the queue until discovery signals again; records
    /// what it waits for, so `photosync jobs` can say why.
    pub(super) fn set_aside(&mut self, mut pending: PendingJob, why: Aside) -> Result<(), CatalogError> {
        let waiting_on = why.waiting_on();
        if matches!(why, Aside::SourceUnavailable(_)) && self.source_recheck.is_none() {
            self.source_recheck = Some(Instant::now() + super::SOURCE_RECHECK);
        }
        if pending.job.state != (crate::model::JobState::Queued { waiting_on }) {
            let waiting = pending.job.wait(waiting_on)?;
            self.catalog.apply(&pending.job, &waiting, Timestamp::now())?;
            pending.job = waiting;
        }
        self.aside.push((pending, why));
        Ok(())
    }

    /// Cancels a job whose content is no longer at its path, unless
    /// discovery recorded it there again meanwhile (then it is set aside to
    /// be looked at afresh).
    fn cancel_gone(&mut self, pending: PendingJob, reason: &str) -> Result<(), CatalogError> {
        if !self.catalog.cancel_unless_current(&pending.job, reason, Timestamp::now())? {
            return self.set_aside(pending, Aside::Changed);
        }
        tracing::info!(path = %pending.path().display(), "{reason}");
        self.report.cancelled += 1;
        self.observer.job_done();
        self.discard_leftovers(&pending);
        Ok(())
    }

    /// Releases, beside the uploads, what an earlier attempt of a job that
    /// ended without its own upload may have left: an open multipart
    /// upload, a temporary copy.
    fn discard_leftovers(&mut self, pending: &PendingJob) {
        let Some(target) = self.targets.get(&pending.job.destination_id) else { return };
        let (destination, job) = (Arc::clone(&target.destination), pending.job.id);
        let (key, hash) = (target.key_for(pending), pending.hash.clone());
        // Started once the transitions around it are committed.
        self.cleanups.push(Box::pin(async move {
            if let Err(e) = destination.discard(job, &key, &hash).await {
                tracing::warn!(job = %job, "could not clean up after the job: {e}");
            }
        }));
    }

    /// Gives every job set aside another look, read afresh from the
    /// catalog (discovery may have recorded a new stat for its file).
    pub(super) fn reconsider_aside(&mut self) -> Result<(), CatalogError> {
        for (pending, _) in std::mem::take(&mut self.aside) {
            if let Some(fresh) = self.catalog.pending_job(pending.job.id)? {
                self.queue.push_back(fresh);
            }
        }
        Ok(())
    }

    /// Looks again at each source folder jobs wait for; the jobs of those
    /// that are back go on (discovery may not have noticed a short absence).
    pub(super) fn recheck_sources(&mut self) -> Result<(), CatalogError> {
        self.source_recheck = None;
        let mut roots: Vec<std::path::PathBuf> = self
            .aside
            .iter()
            .filter(|(_, why)| matches!(why, Aside::SourceUnavailable(_)))
            .map(|(p, _)| p.source.clone())
            .collect();
        roots.sort();
        roots.dedup();
        let mut back = Vec::new();
        for root in roots {
            let text = root.to_string_lossy().into_owned();
            if matches!(availability(self.catalog, &root, &text)?, Availability::Available { .. }) {
                tracing::info!(source = %root.display(), "the source is available again");
                back.push(root);
            }
        }
        let (returning, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.aside)
            .into_iter()
            .partition(|(p, why)| matches!(why, Aside::SourceUnavailable(_)) && back.contains(&p.source));
        self.aside = still;
        if self.aside.iter().any(|(_, why)| matches!(why, Aside::SourceUnavailable(_))) {
            self.source_recheck = Some(Instant::now() + super::SOURCE_RECHECK);
        }
        for (pending, _) in returning {
            if let Some(fresh) = self.catalog.pending_job(pending.job.id)? {
                self.queue.push_back(fresh);
            }
        }
        Ok(())
    }

    /// Records a receipt: `running → succeeded → acknowledged`, written as
    /// one change (`succeeded` is what recovery acknowledges anyway). `sent`
    /// is what this attempt wrote.
    pub(super) fn settle(&mut self, running: &Job, uploaded: &Uploaded, sent: u64) -> Result<(), CatalogError> {
        let acknowledged = running.succeed(uploaded.receipt().clone())?.acknowledge()?;
        self.catalog.apply(running, &acknowledged, Timestamp::now())?;
        match uploaded {
            Uploaded::Stored(_) => {
                self.report.uploaded += 1;
                self.report.bytes_uploaded += sent;
            }
            Uploaded::AlreadyPresent(receipt) => {
                self.report.already_present += 1;
                self.observer.bytes(receipt.size as i64);
            }
        }
        self.tries.remove(&running.id);
        self.throttles.remove(&running.id);
        if let Some(breaker) = self.breakers.get_mut(&running.destination_id) {
            if breaker.resting && breaker.open.is_some() {
                // Sent before the service asked for fewer: the rest goes on.
                breaker.consecutive = 0;
            } else {
                *breaker = Breaker::default();
            }
        }
        self.observer.job_done();
        Ok(())
    }

    /// Settles the jobs of an upload task that ended, in the order they
    /// were dispatched.
    pub(super) fn joined(&mut self, joined: super::Joined) -> Result<(), CatalogError> {
        let (task, outcomes) = match joined {
            Ok((task, outcomes)) => (task, Ok(outcomes)),
            Err(e) => (e.id(), Err(format!("upload task failed: {e}"))),
        };
        let Some(super::fill::Running { jobs, .. }) = self.task_jobs.remove(&task) else { return Ok(()) };
        if jobs.len() > 1 {
            self.sample_batch(&jobs, outcomes.as_ref().ok());
            self.settling_batch = Some(HashSet::new());
        }
        let settled = match outcomes {
            Ok(outcomes) => outcomes.into_iter().try_for_each(|(job, outcome)| self.complete(job, outcome)),
            Err(failed) => jobs
                .into_iter()
                .try_for_each(|job| self.complete(job, Err(DestinationError::transient(failed.clone())))),
        };
        self.settling_batch = None;
        settled
    }

    /// Records the rate a batch reached as one sample (its bytes over the
    /// time since it started): each of its jobs waited for the ones copied
    /// before it.
    fn sample_batch(&mut self, jobs: &[JobId], outcomes: Option<&super::Outcomes>) {
        let stored = |job: &JobId| {
            outcomes.is_some_and(|o| o.iter().any(|(j, r)| j == job && matches!(r, Ok(Uploaded::Stored(_)))))
        };
        let flights: Vec<&Flight> = jobs.iter().filter(|j| stored(j)).filter_map(|j| self.flights.get(j)).collect();
        if let Some(started) = flights.iter().map(|f| f.started).min() {
            let sent = flights.iter().map(|f| f.sent.load(Ordering::Relaxed)).sum();
            self.throughput.record(sent, started.elapsed());
        }
    }

    fn complete(&mut self, job: JobId, outcome: Result<Uploaded, DestinationError>) -> Result<(), CatalogError> {
        // What it sent (retries and all) counts against a data budget.
        self.flush_meter_of(job)?;
        let Some(flight) = self.flights.remove(&job) else { return Ok(()) };
        let destination = flight.running.destination_id;
        self.busy.remove(&(destination, flight.pending.hash.clone()));
        self.busy_keys.remove(&(destination, flight.key.0.clone()));
        let sent = flight.sent.load(Ordering::Relaxed);
        let moved = sent + flight.resumed.load(Ordering::Relaxed);
        match outcome {
            Ok(uploaded) => {
                if matches!(uploaded, Uploaded::AlreadyPresent(_)) {
                    self.observer.bytes(-(moved as i64));
                } else if self.settling_batch.is_none() {
                    // (A batch's rate is one sample: `sample_batch`.)
                    self.throughput.record(sent, flight.started.elapsed());
                }
                self.settle(&flight.running, &uploaded, sent)
            }
            Err(error) if error.retry == Retry::Throttled => {
                self.observer.bytes(-(moved as i64));
                self.throttled(flight, &error)
            }
            Err(error) if error.retry == Retry::Held => {
                self.observer.bytes(-(moved as i64));
                let queued = flight.running.interrupt(WaitingOn::Nothing)?;
                self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
                let mut pending = flight.pending;
                pending.job = queued;
                self.remember_error(pending.job.id, &pending.path(), &error.message);
                self.queue.push_front(pending);
                self.hold_for_user(destination, &error);
                Ok(())
            }
            Err(error) if matches!(error.retry, Retry::Interrupted | Retry::SourceChanged) => {
                self.observer.bytes(-(moved as i64));
                let waiting_on = match (&self.paused, self.hold()) {
                    (Some(_), _) => WaitingOn::Paused,
                    (None, Some(reason)) => reason.waiting_on(),
                    (None, None) => WaitingOn::Nothing,
                };
                let queued = flight.running.interrupt(waiting_on)?;
                self.catalog.apply(&flight.running, &queued, Timestamp::now())?;
                let mut pending = flight.pending;
                pending.job = queued;
                if error.retry == Retry::Interrupted {
                    self.queue.push_front(pending);
                    return Ok(());
                }
                self.source_changed(pending, &error)
            }
            Err(error) => {
                self.observer.bytes(-(moved as i64));
                self.failed(flight, &error)
            }
        }
    }

    /// An upload found its file changed (or gone) since the scan: what was
    /// stored, if anything, is not acknowledged as the scanned version. The
    /// file is looked at again: gone, replaced, or changed in place (then
    /// the stat cache forgets it, so the next scan reads it again even if
    /// its size and time did not change).
    fn source_changed(&mut self, pending: PendingJob, error: &DestinationError) -> Result<(), CatalogError> {
        let path = pending.path();
        tracing::warn!(path = %path.display(), "{error}; it is read again before it is uploaded");
        self.remember_error(pending.job.id, &path, &error.message);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.missing(pending),
            Ok(m) if stat_of(&m) != pending.stat => self.changed(pending, stat_of(&m)),
            _ if !self.catalog.is_current(pending.job.asset_id)? => self.cancel_gone(pending, SUPERSEDED),
            _ => {
                let source = pending.source.to_string_lossy().into_owned();
                self.catalog.forget_stat(&source, &pending.rel_path)?;
                self.set_aside(pending, Aside::Changed)
            }
        }
    }
}

/// `pending`'s source, when `pending` is a photo that may head a group (a
/// Live Photo's still).
fn key_source(pending: &PendingJob) -> Option<&str> {
    let is_key = pending.info.as_ref().is_some_and(|i| i.kind == crate::model::MediaKind::Photo && i.group.is_none());
    pending.source.to_str().filter(|_| is_key)
}

/// The file of `pending`'s group found at `rel` below its source.
fn member(
    pending: &PendingJob,
    (rel, hash, size): (Vec<u8>, crate::model::ContentHash, u64),
) -> crate::destination::Member {
    crate::destination::Member {
        path: pending.source.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&rel)),
        size,
        hash,
    }
}
