//! Loading the queue from the catalog: every queued job at the start and
//! after a wake-up, those queued since at each discovery signal, and none
//! while uploads are stopped (a first scan on battery queues the whole
//! library; the jobs wait in the catalog until uploads may run).

use std::collections::HashSet;

use super::Scheduler;
use crate::catalog::{CatalogError, PendingJob};
use crate::model::JobId;
use crate::policy::Deadline;

impl Scheduler<'_> {
    /// Loads every queued job (after recovery, a retry, or a wake-up), or
    /// none while uploads are stopped.
    pub(super) fn reload(&mut self) -> Result<(), CatalogError> {
        self.next_retry = self.catalog.next_retry()?.map(Deadline::at);
        if self.stopped() {
            self.unloaded = true;
            return Ok(());
        }
        self.unloaded = false;
        let pending = self.catalog.pending(&self.destination_ids)?;
        // Jobs set aside are queued in the catalog too; they must not be queued twice.
        let aside = self.aside.iter().map(|(p, _)| p);
        let known: HashSet<JobId> = self.queue.iter().chain(aside).map(|p| p.job.id).collect();
        let fresh: Vec<PendingJob> = pending.into_iter().filter(|p| !known.contains(&p.job.id)).collect();
        self.add(fresh);
        Ok(())
    }

    /// Loads what [`Scheduler::reload`] left in the catalog once uploads
    /// may run again.
    pub(super) fn load_unloaded(&mut self) -> Result<(), CatalogError> {
        if self.unloaded && !self.stopped() { self.reload() } else { Ok(()) }
    }

    /// Whether nothing may start: the user paused, or the system or the
    /// conditions hold uploads.
    pub(super) fn stopped(&self) -> bool {
        self.paused.is_some() || self.hold().is_some()
    }

    /// Loads jobs queued or revived since the last load, and gives the jobs
    /// set aside another look.
    pub(super) fn load_new(&mut self) -> Result<(), CatalogError> {
        if self.stopped() {
            self.unloaded = true;
            return self.reconsider_aside();
        }
        self.load_unloaded()?;
        let fresh = self.catalog.pending_after(&self.destination_ids, self.last_loaded)?;
        self.add(fresh);
        self.reconsider_aside()
    }

    fn add(&mut self, fresh: Vec<PendingJob>) {
        if let Some(last) = fresh.iter().map(|p| p.seq).max() {
            self.last_loaded = self.last_loaded.max(last);
        }
        self.observer.queued(fresh.len() as u64, fresh.iter().map(|p| p.stat.size).sum());
        self.queue.merge(fresh);
    }
}
