//! What the scheduler tells people: the run's totals, the holds and why,
//! uploads in progress, recent errors; `photosync status` and the
//! `backup` summary are built from these.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::Scheduler;
use crate::catalog::{Backlog, CatalogError, StateCounts};
use crate::config::Order;
use crate::model::{DestinationId, JobId, Timestamp};
use crate::policy::Deadline;

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
    /// Bytes sent (a resumed upload counts only what it sent this time).
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
    /// Bytes at the destination so far (sent, or kept from an earlier attempt).
    pub bytes_done: u64,
    /// Size of the file.
    pub bytes_total: u64,
    /// Average rate since the upload started, bytes per second.
    pub rate: f64,
    /// Seconds to go at that rate, when known.
    pub eta_seconds: Option<f64>,
    /// For a member of a group, the path of the group's key file.
    pub group: Option<String>,
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

/// A destination's daily request quota, and what its backlog needs of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaStatus {
    /// Destination label.
    pub destination: String,
    /// Requests sent today.
    pub used: u64,
    /// Requests allowed per day.
    pub limit: u64,
    /// Seconds until the count starts again.
    pub resets_in_seconds: u64,
    /// Requests per file acknowledged today, when there was one.
    pub per_file: Option<f64>,
    /// Files waiting for this destination.
    pub files_waiting: u64,
    /// Days (today counting as the first) the files waiting take at this
    /// rate (at one request per file before any was made).
    pub days: u64,
}

impl QuotaStatus {
    fn new(destination: &str, quota: crate::destination::Quota, files_waiting: u64) -> QuotaStatus {
        let per_file = (quota.items > 0).then(|| quota.used as f64 / quota.items as f64);
        let needed = (files_waiting as f64 * per_file.unwrap_or(1.0)).ceil() as u64;
        let left_today = quota.limit.saturating_sub(quota.used);
        let days = match needed {
            0 => 0,
            n if n <= left_today => 1,
            n => 1 + (n - left_today).div_ceil(quota.limit.max(1)),
        };
        QuotaStatus {
            destination: destination.to_owned(),
            used: quota.used,
            limit: quota.limit,
            resets_in_seconds: quota.resets_in.as_secs(),
            per_file,
            files_waiting,
            days,
        }
    }
}

/// The scheduler's view for `photosync status`.
#[derive(Debug, Clone, PartialEq)]
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
    /// What is left, by capture time.
    pub backlog: Backlog,
    /// Which photos of the backlog go first.
    pub order: Order,
    /// The data budget of the metered network uploads run on.
    pub budget: Option<super::BudgetStatus>,
    /// Daily request quotas of the destinations that have one.
    pub quotas: Vec<QuotaStatus>,
}

impl Scheduler<'_> {
    pub(super) fn holds(&self) -> Result<Vec<Hold>, CatalogError> {
        let mut holds: BTreeMap<(&str, &str), Hold> = BTreeMap::new();
        let aside = self.aside.iter().map(|(p, why)| (p, why.reason()));
        let held = self.queue.iter().filter_map(|p| {
            let breaker = self.breakers.get(&p.job.destination_id)?;
            breaker.open.as_ref().map(|(reason, _)| (p, reason.as_str()))
        });
        let policy = self.hold().map(ToString::to_string);
        let stopped = match (&self.paused, &policy) {
            (Some(_), _) => Some("paused by user"),
            (None, Some(reason)) => Some(reason.as_str()),
            (None, None) => None,
        };
        let paused = self.queue.iter().filter(|p| stopped.is_some() && !self.is_held(p.job.destination_id));
        let paused = paused.map(|p| (p, stopped.unwrap_or_default()));
        let budget = self.window_budget();
        let too_big = self.too_big_reason().unwrap_or_default();
        let room = self.metered_room();
        let over_budget = self.over_budget_reason().unwrap_or_default();
        let waiting = self.queue.iter().filter(|p| stopped.is_none() && !self.is_held(p.job.destination_id));
        let waiting = waiting.filter_map(|p| {
            if !super::window::fits(p, budget) {
                Some((p, too_big.as_str()))
            } else if !super::meter::fits(p, room) {
                Some((p, over_budget.as_str()))
            } else {
                None
            }
        });
        let name = |destination: DestinationId| self.targets.get(&destination).map_or("?", |t| t.name.as_str());
        for (pending, reason) in held.chain(aside).chain(paused).chain(waiting) {
            tally(&mut holds, name(pending.job.destination_id), reason, 1);
        }
        // Jobs left in the catalog (while uploads were stopped, or beyond
        // the window) wait for the same reason as those in memory, when all
        // of those wait.
        if self.unloaded || !self.spilled.is_empty() {
            // What the jobs of each destination in memory wait for (the upload
            // window, the data budget), where every one of them does.
            let mut all_wait: BTreeMap<DestinationId, Option<&str>> = BTreeMap::new();
            for pending in self.queue.iter() {
                let reason = if !super::window::fits(pending, budget) {
                    Some(too_big.as_str())
                } else if !super::meter::fits(pending, room) {
                    Some(over_budget.as_str())
                } else {
                    None
                };
                let all = all_wait.entry(pending.job.destination_id).or_insert(reason);
                if reason.is_none() {
                    *all = None;
                }
            }
            for (destination, queued) in self.catalog.queued_counts(&self.destination_ids)? {
                if !self.unloaded && !self.spilled.contains(&destination) {
                    continue;
                }
                let in_memory = self.queue.count(destination)
                    + self.aside.iter().filter(|(p, _)| p.job.destination_id == destination).count();
                let left = queued.saturating_sub(in_memory as u64);
                let breaker = self.breakers.get(&destination).and_then(|b| b.open.as_ref());
                let reason = breaker.map(|(reason, _)| reason.as_str()).or(stopped);
                let reason = reason.or_else(|| all_wait.get(&destination).copied().flatten());
                if let Some(reason) = reason.filter(|_| left > 0) {
                    tally(&mut holds, name(destination), reason, left);
                }
            }
        }
        Ok(holds.into_values().collect())
    }

    /// The request quotas of the destinations that have one, with the
    /// files waiting for each (those waiting to retry too).
    pub(super) fn quotas(&self) -> Result<Vec<QuotaStatus>, CatalogError> {
        let mut targets: Vec<_> = self.targets.values().collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let mut quotas = Vec::new();
        for target in targets {
            if let Some(quota) = target.destination.quota() {
                quotas.push(QuotaStatus::new(&target.name, quota, self.catalog.jobs_to_do(target.id)?));
            }
        }
        Ok(quotas)
    }

    pub(super) fn status(&self) -> Result<SchedulerStatus, CatalogError> {
        let counts: StateCounts = self.catalog.counts()?;
        let mut uploads: Vec<UploadStatus> = self
            .flights
            .values()
            .map(|f| {
                let sent = f.sent.load(Ordering::Relaxed);
                let done = sent + f.resumed.load(Ordering::Relaxed);
                let elapsed = f.started.elapsed().as_secs_f64();
                let rate = if elapsed > 0.0 { sent as f64 / elapsed } else { 0.0 };
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
                    group: f
                        .pending
                        .info
                        .as_ref()
                        .and_then(|i| i.group.as_ref())
                        .map(|g| f.pending.source.join(std::ffi::OsStr::from_bytes(&g.key)).display().to_string()),
                }
            })
            .collect();
        uploads.sort_by_key(|u| u.job);
        Ok(SchedulerStatus {
            paused: self.pause(),
            held_by: self.hold().map(ToString::to_string),
            uploads,
            holds: self.holds()?,
            counts: crate::model::StateName::ALL.iter().map(|s| (s.as_str().to_owned(), counts.get(*s))).collect(),
            next_retry: self.next_retry.map(Deadline::wall),
            recent_errors: self.recent_errors.iter().cloned().collect(),
            totals: DrainReport { holds: Vec::new(), ..self.report.clone() },
            backlog: self.catalog.backlog()?,
            order: self.settings.order,
            budget: self.budget_status(),
            quotas: self.quotas()?,
        })
    }
}

/// Counts `jobs` more held at the destination `name` for `reason`.
fn tally<'a>(holds: &mut BTreeMap<(&'a str, &'a str), Hold>, name: &'a str, reason: &'a str, jobs: u64) {
    holds
        .entry((name, reason))
        .or_insert_with(|| Hold { destination: name.to_owned(), reason: reason.to_owned(), jobs: 0 })
        .jobs += jobs;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Quota;

    #[test]
    fn a_backlog_takes_the_days_its_requests_need() {
        let quota = |used, items| Quota { used, limit: 100, items, resets_in: std::time::Duration::from_hours(2) };
        let days = |used, items, waiting| QuotaStatus::new("g", quota(used, items), waiting).days;
        assert_eq!(days(0, 0, 0), 0, "nothing waiting");
        assert_eq!(days(0, 0, 100), 1, "one request a file before any was made: today");
        assert_eq!(days(0, 0, 101), 2);
        assert_eq!(days(50, 25, 25), 1, "2 a file: 50 left today is enough");
        assert_eq!(days(50, 25, 26), 2);
        assert_eq!(days(50, 25, 125), 3, "250 requests: 50 today, then 100 a day");
        assert_eq!(days(120, 60, 1), 2, "over the quota already: tomorrow");
        let status = QuotaStatus::new("g", quota(30, 20), 7);
        assert_eq!(status.per_file, Some(1.5));
        assert_eq!(status.resets_in_seconds, 7200);
    }
}
