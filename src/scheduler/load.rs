//! Loading the queue from the catalog. Memory holds a window of it: at
//! each destination the jobs that go first, at most
//! [`Settings::queue_window`](super::Settings::queue_window); the rest
//! waits in the catalog and is loaded as the window empties (the whole
//! queue of a big library took about 1 KiB per photo). The window is
//! filled afresh at the start and after a wake-up; the jobs queued since
//! join it at each discovery signal (its last ones going back to the
//! catalog when it overflows); nothing is loaded while uploads are stopped
//! (a first scan on battery queues the whole library).

use std::collections::HashSet;

use super::Scheduler;
use crate::catalog::{CatalogError, PendingJob, Queued};
use crate::model::{DestinationId, JobId};
use crate::policy::Deadline;

impl Scheduler<'_> {
    /// Fills the window with the queued jobs that go first (after
    /// recovery, a retry, or a wake-up), or loads none while uploads are
    /// stopped.
    pub(super) fn reload(&mut self) -> Result<(), CatalogError> {
        self.next_retry = self.catalog.next_retry()?.map(Deadline::at);
        if self.stopped() {
            self.unloaded = true;
            return Ok(());
        }
        self.unloaded = false;
        // What is queued from now on comes with the next discovery signal.
        let up_to = self.catalog.last_seq()?;
        self.last_loaded = self.last_loaded.max(up_to);
        let total =
            self.catalog.queued_totals(&self.destination_ids, up_to)?.into_values().fold(Queued::default(), plus);
        // Those who watch learn of the jobs they have not been told of:
        // neither in memory nor left in the catalog after being counted.
        let told = plus(self.in_memory(), self.outside);
        self.observer.queued(total.jobs.saturating_sub(told.jobs), total.bytes.saturating_sub(told.bytes));
        for destination in self.destination_ids.clone() {
            self.spilled.insert(destination);
            self.top_up(destination)?;
        }
        let loaded = self.in_memory();
        self.outside =
            Queued { jobs: total.jobs.saturating_sub(loaded.jobs), bytes: total.bytes.saturating_sub(loaded.bytes) };
        Ok(())
    }

    /// Loads what [`Scheduler::reload`] left in the catalog once uploads
    /// may run again, and tops up each destination's window that has
    /// emptied to a quarter while jobs wait in the catalog (each top-up
    /// reads every job queued there to rank them: seldom, and many at once).
    pub(super) fn load_unloaded(&mut self) -> Result<(), CatalogError> {
        if self.stopped() {
            return Ok(());
        }
        if self.unloaded {
            return self.reload();
        }
        let low = self.settings.queue_window.div_ceil(4);
        let due: Vec<DestinationId> =
            self.spilled.iter().copied().filter(|&destination| self.queue.count(destination) < low).collect();
        for destination in due {
            self.top_up(destination)?;
        }
        Ok(())
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
        // The window keeps the jobs that go first; the last ones wait in the catalog.
        for destination in self.destination_ids.clone() {
            while self.queue.count(destination) > self.settings.queue_window {
                let Some(last) = self.queue.pop_last(destination) else { break };
                self.outside = plus(self.outside, Queued { jobs: 1, bytes: last.stat.size });
                self.spilled.insert(destination);
            }
        }
    }

    /// Fills `destination`'s window from the catalog with the queued jobs
    /// that go first among those not in memory (queued up to the last
    /// load: later ones come with the next discovery signal).
    fn top_up(&mut self, destination: DestinationId) -> Result<(), CatalogError> {
        let room = self.settings.queue_window.saturating_sub(self.queue.count(destination));
        if room == 0 {
            return Ok(());
        }
        // Queued in the catalog, and in memory already.
        let aside = self.aside.iter().map(|(p, _)| p).chain(self.sleeping.iter().map(|(_, p)| p));
        let known: HashSet<JobId> =
            self.queue.iter().chain(aside).filter(|p| p.job.destination_id == destination).map(|p| p.job.id).collect();
        let limit = room + known.len();
        let found = self.catalog.pending_ranked(destination, self.last_loaded, self.settings.order, limit)?;
        let everything = found.len() < limit;
        let fresh: Vec<PendingJob> = found.into_iter().filter(|p| !known.contains(&p.job.id)).collect();
        if everything && fresh.len() <= room {
            self.spilled.remove(&destination);
        }
        let fresh: Vec<PendingJob> = fresh.into_iter().take(room).collect();
        let loaded = Queued { jobs: fresh.len() as u64, bytes: fresh.iter().map(|p| p.stat.size).sum() };
        self.outside = Queued {
            jobs: self.outside.jobs.saturating_sub(loaded.jobs),
            bytes: self.outside.bytes.saturating_sub(loaded.bytes),
        };
        self.queue.merge(fresh);
        Ok(())
    }

    /// The queued jobs in memory (in the window and set aside).
    fn in_memory(&self) -> Queued {
        let jobs = self.queue.iter().chain(self.aside.iter().map(|(p, _)| p));
        jobs.fold(Queued::default(), |sum, p| plus(sum, Queued { jobs: 1, bytes: p.stat.size }))
    }
}

fn plus(a: Queued, b: Queued) -> Queued {
    Queued { jobs: a.jobs + b.jobs, bytes: a.bytes + b.bytes }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::scheduler::testing::{Told, library};
    use crate::scheduler::{Hold, Limits, RunObserver, Settings, drain};

    /// A backlog bigger than the window is held in memory a window at a
    /// time, in the queue's order, and every job of it is uploaded; those
    /// who watch are told of each job once.
    #[test]
    fn a_backlog_bigger_than_the_window_is_loaded_a_window_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut catalog, targets, settings) = library(dir.path(), 7, &["nas"], &[]);
        let settings = Settings { queue_window: 3, ..settings };
        let told = Arc::new(Told::default());
        let mut scheduler = Scheduler::new(&mut catalog, &targets, settings, Arc::clone(&told) as _);
        scheduler.reload().expect("reload");
        let names: Vec<&[u8]> = scheduler.queue.iter().map(|p| p.rel_path.as_slice()).collect();
        assert_eq!(names, [b"7.jpg", b"6.jpg", b"5.jpg"], "the newest three");
        assert!(scheduler.spilled.contains(&targets[0].id));
        assert_eq!(told.0.load(Ordering::Relaxed), 7, "told of the whole backlog");
        drop(scheduler);

        let told = Arc::new(Told::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let observer: Arc<dyn RunObserver> = Arc::clone(&told) as _;
        let report = runtime
            .block_on(drain(
                &mut catalog,
                &targets,
                settings,
                observer,
                None,
                Limits::default(),
                std::future::pending(),
            ))
            .expect("run");
        assert_eq!(report.uploaded, 7, "{report:?}");
        assert_eq!(told.0.load(Ordering::Relaxed), 7, "each job told once");
        for n in 1..=7 {
            assert!(dir.path().join(format!("nas/{n}.jpg")).exists(), "{n}.jpg");
        }
        assert_eq!(catalog.queued_counts(&[targets[0].id]).expect("counts").into_values().sum::<u64>(), 0);
    }

    /// A destination that cannot take uploads keeps its window full of
    /// jobs that cannot start: the other destination's jobs, waiting in
    /// the catalog beyond their own window, still all go, and the held
    /// ones are reported with those left in the catalog.
    #[test]
    fn a_held_destination_does_not_starve_the_others_beyond_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut catalog, targets, settings) = library(dir.path(), 6, &["usb", "nas"], &["usb"]);
        let settings = Settings { queue_window: 2, ..settings };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let report = runtime
            .block_on(drain(
                &mut catalog,
                &targets,
                settings,
                Arc::new(crate::scheduler::Silent),
                None,
                Limits::default(),
                std::future::pending(),
            ))
            .expect("run");
        assert_eq!(report.uploaded, 6, "{report:?}");
        for n in 1..=6 {
            assert!(dir.path().join(format!("nas/{n}.jpg")).exists(), "{n}.jpg");
        }
        let usb: Vec<&Hold> = report.holds.iter().filter(|h| h.destination == "usb").collect();
        assert_eq!(usb.iter().map(|h| h.jobs).sum::<u64>(), 6, "every job held is reported: {:?}", report.holds);
    }
}
