//! Starting uploads: a turn of the loop dispatches the jobs it can start
//! in one transaction and spawns their uploads once it is committed; an
//! upload task is one file, or a batch of small files for a destination
//! that takes them together. What ends is settled the same way: every task
//! that has ended by then, in one transaction.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::{Scheduler, meter, window};
use crate::catalog::{CatalogError, PendingJob};
use crate::destination::{Batching, Destination, DestinationError, ProgressFn, UploadRequest, Uploaded};
use crate::model::{DestinationId, JobId};

/// Most jobs one transaction of [`Scheduler::fill`] dispatches.
const FILL_TURN: usize = 512;

/// What an upload task ended with: the outcome of each of its jobs.
pub(super) type Outcomes = Vec<(JobId, Result<Uploaded, DestinationError>)>;

/// An upload task's end, as the task set reports it.
pub(super) type Joined = Result<(tokio::task::Id, Outcomes), tokio::task::JoinError>;

/// A job dispatched in the open batch of transitions, uploaded once the
/// batch is committed.
pub(super) struct Prepared {
    pub(super) job: JobId,
    pub(super) size: u64,
    pub(super) request: UploadRequest,
    pub(super) progress: ProgressFn,
}

/// An upload task under way: its jobs, and the destination whose batch of
/// small files it is, if it is one.
pub(super) struct Running {
    pub(super) jobs: Vec<JobId>,
    batch_of: Option<DestinationId>,
}

/// Which new upload tasks may start: one of a single file (at most
/// `max_concurrent` run at once), and batches for which destinations
/// (each up to [`Batching::per_slot`] times as many, but one at a time
/// when `max_concurrent` is 1).
struct Room {
    single: bool,
    batches: Vec<DestinationId>,
}

impl Room {
    fn any(&self) -> bool {
        self.single || !self.batches.is_empty()
    }
}

/// How `destination` takes a file of `size` bytes: in a batch, or alone.
fn batching_for(destination: &dyn Destination, size: u64) -> Option<Batching> {
    destination.batching().filter(|b| size <= b.bytes)
}

/// What one upload task will send: one file, or a batch of small files to
/// a destination that takes them together ([`Destination::upload_many`]).
pub(super) struct Planned {
    destination_id: DestinationId,
    destination: Arc<dyn Destination>,
    batching: Option<Batching>,
    bytes: u64,
    uploads: Vec<Prepared>,
}

impl Planned {
    /// Whether this batch takes a file of `size` bytes for `destination`.
    fn takes(&self, destination: DestinationId, size: u64) -> bool {
        self.destination_id == destination
            && self.batching.is_some_and(|b| self.uploads.len() < b.files && self.bytes + size <= b.bytes)
    }

    /// Whether this batch takes more files.
    fn has_room(&self) -> bool {
        self.batching.is_some_and(|b| self.uploads.len() < b.files && self.bytes < b.bytes)
    }

    /// The destination whose batch this is, if it is one.
    fn batch_of(&self) -> Option<DestinationId> {
        self.batching.map(|_| self.destination_id)
    }

    /// Spawns the upload on `tasks`; returns its task and what it runs.
    pub(super) fn spawn(self, tasks: &mut JoinSet<Outcomes>) -> (tokio::task::Id, Running) {
        let batch_of = self.batch_of();
        let jobs: Vec<JobId> = self.uploads.iter().map(|u| u.job).collect();
        let destination = self.destination;
        let mut uploads = self.uploads;
        let task = if uploads.len() == 1 {
            let Prepared { job, request, progress, .. } = uploads.remove(0);
            tasks.spawn(async move { vec![(job, destination.upload(request, progress).await)] })
        } else {
            let ids = jobs.clone();
            let uploads: Vec<_> = uploads.into_iter().map(|u| (u.request, u.progress)).collect();
            tasks.spawn(async move {
                let mut results = destination.upload_many(uploads).await.into_iter();
                ids.into_iter()
                    .map(|job| {
                        let missing = || Err(DestinationError::transient("the destination gave no result for it"));
                        (job, results.next().unwrap_or_else(missing))
                    })
                    .collect()
            })
        };
        (task.id(), Running { jobs, batch_of })
    }
}

impl Scheduler<'_> {
    /// Starts jobs until every slot is busy or nothing startable is left:
    /// their `running` transitions are committed together, then their
    /// uploads spawned. A slot is one upload task of a file, or (with more
    /// than one slot) [`Batching::per_slot`] tasks of a batch of small
    /// files for a destination that takes them together.
    pub(super) fn fill(&mut self) -> Result<(), CatalogError> {
        let slots = self.settings.max_concurrent.max(1);
        self.load_unloaded()?;
        if self.paused.is_some() || self.hold().is_some() || self.queue.is_empty() || !self.room(slots).any() {
            return Ok(());
        }
        loop {
            self.catalog.begin_batch()?;
            let filled = self.fill_batch(slots);
            let ended = match filled {
                Ok(more) => self.catalog.commit_batch().map(|()| more),
                Err(e) => {
                    self.catalog.rollback_batch();
                    Err(e)
                }
            };
            let starting = std::mem::take(&mut self.starting);
            let more = ended?;
            for planned in starting {
                let (task, running) = planned.spawn(&mut self.tasks);
                self.task_jobs.insert(task, running);
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Dispatches jobs while there is room; `true` when it stopped at
    /// [`FILL_TURN`] jobs (each may stat a file, read a folder: the write
    /// lock is not held for long) with room left.
    fn fill_batch(&mut self, slots: usize) -> Result<bool, CatalogError> {
        let budget = self.window_budget();
        for _ in 0..FILL_TURN {
            let room = self.room(slots);
            if !room.any() && !self.starting.iter().any(Planned::has_room) {
                return Ok(false);
            }
            let meter_room = self.metered_room();
            let (breakers, busy, busy_keys, targets) = (&self.breakers, &self.busy, &self.busy_keys, &self.targets);
            let starting = &self.starting;
            let startable = |p: &PendingJob| {
                let destination = p.job.destination_id;
                let new_task = match targets.get(&destination).and_then(|t| batching_for(&*t.destination, p.stat.size))
                {
                    Some(_) => room.batches.contains(&destination),
                    None => room.single,
                };
                (new_task || starting.iter().any(|planned| planned.takes(destination, p.stat.size)))
                    && breakers.get(&destination).is_none_or(|b| b.open.is_none())
                    && window::fits(p, budget)
                    && meter::fits(p, meter_room)
                    && !busy.contains(&(destination, p.hash.clone()))
                    && targets.get(&destination).is_none_or(|t| !busy_keys.contains(&(destination, t.key_for(p).0)))
            };
            let Some(pending) = self.queue.take_first(startable) else { return Ok(false) };
            self.dispatch(pending)?;
        }
        Ok(true)
    }

    /// Adds a dispatched upload to a batch for its destination that takes
    /// it, or plans a task of its own.
    pub(super) fn plan(
        &mut self,
        destination_id: DestinationId,
        destination: &Arc<dyn Destination>,
        prepared: Prepared,
    ) {
        if let Some(open) = self.starting.iter_mut().find(|p| p.takes(destination_id, prepared.size)) {
            open.bytes += prepared.size;
            open.uploads.push(prepared);
            return;
        }
        let batching = batching_for(&**destination, prepared.size);
        self.starting.push(Planned {
            destination_id,
            destination: Arc::clone(destination),
            batching,
            bytes: prepared.size,
            uploads: vec![prepared],
        });
    }

    /// Which new upload tasks may start now, counting those under way and
    /// those planned in the open batch of transitions.
    fn room(&self, slots: usize) -> Room {
        let kinds = || self.task_jobs.values().map(|r| r.batch_of).chain(self.starting.iter().map(Planned::batch_of));
        let single = kinds().filter(Option::is_none).count() < slots;
        let batches = self
            .targets
            .iter()
            .filter(|(id, target)| {
                let per_slot = target.destination.batching().map_or(0, |b| b.per_slot);
                // One slot is one upload at a time, batch or not, strictly in
                // order: what someone who asks for one wants.
                let most = if slots == 1 { per_slot.min(1) } else { slots.saturating_mul(per_slot) };
                kinds().filter(|k| k == &Some(**id)).count() < most
            })
            .map(|(id, _)| *id)
            .collect();
        Room { single, batches }
    }

    /// Settles `first` and every other upload that has ended by now, their
    /// transitions committed together.
    pub(super) fn joined_together(&mut self, first: Joined) -> Result<(), CatalogError> {
        self.catalog.begin_batch()?;
        let mut settled = self.joined(first);
        while settled.is_ok()
            && let Some(next) = self.tasks.try_join_next_with_id()
        {
            settled = self.joined(next);
        }
        match settled {
            Ok(()) => self.catalog.commit_batch(),
            Err(e) => {
                self.catalog.rollback_batch();
                Err(e)
            }
        }
    }

    /// Tells those who watch the uploads what this turn left: the sleep
    /// guard whether any is in flight, a scan whether to wait for them.
    pub(super) fn tell_watchers(&self) {
        if let Some(uploading) = &self.uploading {
            let now = !self.flights.is_empty();
            uploading.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
        if let Some(gate) = &self.scan_gate {
            // Jobs that may wait long (a destination held, a window, a budget) hold no scan back.
            let flowing =
                self.window.is_none() && self.meter.is_none() && self.breakers.values().all(|b| b.open.is_none());
            gate.set(self.queue.len(), flowing && !self.tasks.is_empty());
        }
    }
}
