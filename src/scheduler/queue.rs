//! The order of the queue: photos found while the daemon runs before the
//! backlog, then by capture time.

use std::collections::{BTreeMap, HashMap};

use crate::catalog::PendingJob;
use crate::config::Order;
use crate::model::DestinationId;

/// The jobs waiting to start, in rank order but for jobs put back at its
/// front or end on purpose, which keep their places relative to the rest.
///
/// Kept in a B-tree so that a scan's batches of fresh jobs go into their
/// places without moving the rest: merging them into a flat list moved the
/// whole backlog once per batch, quadratic in a first scan.
pub(super) struct Queue {
    order: Order,
    jobs: BTreeMap<Place, PendingJob>,
    /// How many of `jobs` are at each destination.
    counts: HashMap<DestinationId, usize>,
}

/// A job's place: its rank, nudged before or after a neighbour's for a job
/// put back at the front or the end; the job's id breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    rank: (bool, i64, i64),
    nudge: i64,
    job: i64,
}

impl Queue {
    pub(super) fn new(order: Order) -> Self {
        Queue { order, jobs: BTreeMap::new(), counts: HashMap::new() }
    }

    /// Adds `fresh` jobs in rank order.
    pub(super) fn merge(&mut self, fresh: Vec<PendingJob>) {
        for pending in fresh {
            let place = Place { rank: rank(&pending, self.order), nudge: 0, job: pending.job.id.0 };
            self.insert(place, pending);
        }
    }

    fn insert(&mut self, place: Place, pending: PendingJob) {
        let destination = pending.job.destination_id;
        if self.jobs.insert(place, pending).is_none() {
            *self.counts.entry(destination).or_default() += 1;
        }
    }

    fn remove(&mut self, place: &Place) -> Option<PendingJob> {
        let pending = self.jobs.remove(place)?;
        if let Some(count) = self.counts.get_mut(&pending.job.destination_id) {
            *count = count.saturating_sub(1);
        }
        Some(pending)
    }

    /// How many jobs at `destination` are queued.
    pub(super) fn count(&self, destination: DestinationId) -> usize {
        self.counts.get(&destination).copied().unwrap_or(0)
    }

    /// Takes out the last job at `destination`.
    pub(super) fn pop_last(&mut self, destination: DestinationId) -> Option<PendingJob> {
        let place = *self.jobs.iter().rev().find(|(_, p)| p.job.destination_id == destination)?.0;
        self.remove(&place)
    }

    /// Puts `pending` before every job queued.
    pub(super) fn push_front(&mut self, pending: PendingJob) {
        let place = match self.jobs.first_key_value() {
            Some((first, _)) => Place { nudge: first.nudge - 1, job: pending.job.id.0, ..*first },
            None => Place { rank: rank(&pending, self.order), nudge: 0, job: pending.job.id.0 },
        };
        self.insert(place, pending);
    }

    /// Puts `pending` after every job queued.
    pub(super) fn push_back(&mut self, pending: PendingJob) {
        let place = match self.jobs.last_key_value() {
            Some((last, _)) => Place { nudge: last.nudge + 1, job: pending.job.id.0, ..*last },
            None => Place { rank: rank(&pending, self.order), nudge: 0, job: pending.job.id.0 },
        };
        self.insert(place, pending);
    }

    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The jobs in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &PendingJob> {
        self.jobs.values()
    }

    /// Takes out the first job that `startable` admits.
    pub(super) fn take_first(&mut self, mut startable: impl FnMut(&PendingJob) -> bool) -> Option<PendingJob> {
        let place = *self.jobs.iter().find(|(_, p)| startable(p))?.0;
        self.remove(&place)
    }
}

/// Where a job stands in the queue: photos found live (while the daemon
/// runs) before the backlog; within each, by capture time (newest or oldest
/// first, as configured), in discovery order where times tie; versions
/// whose time has not been read yet last.
pub(super) fn rank(pending: &PendingJob, order: Order) -> (bool, i64, i64) {
    let rank = match (pending.taken_at, order) {
        (Some(t), Order::Newest) => -t,
        (Some(t), Order::Oldest) => t,
        (None, _) => i64::MAX,
    };
    (!pending.live, rank, pending.seq)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::FileStat;
    use crate::model::{AssetId, AssetInfo, Capture, CaptureSource, JobState, MediaKind};
    use crate::model::{ContentHash, DestinationId, Job, JobId, WaitingOn};

    fn pending(seq: i64, year: Option<i16>, live: bool) -> PendingJob {
        PendingJob {
            job: Job {
                id: JobId(seq),
                asset_id: AssetId(seq),
                destination_id: DestinationId(1),
                attempts: 0,
                state: JobState::Queued { waiting_on: WaitingOn::Nothing },
            },
            source: PathBuf::from("/s"),
            rel_path: format!("{seq}.jpg").into_bytes(),
            stat: FileStat { size: 1, mtime_ns: 1, inode: 1 },
            hash: ContentHash::from_digest(&[seq as u8; 32]),
            seq,
            taken_at: year.map(|year| i64::from(year) * 1000),
            info: year.map(|year| AssetInfo {
                kind: MediaKind::Photo,
                capture: Capture {
                    local: jiff::civil::date(year, 6, 1).at(12, 0, 0, 0),
                    offset: Some(jiff::tz::Offset::UTC),
                    source: CaptureSource::Exif,
                },
                camera: None,
                group: None,
            }),
            live,
        }
    }

    #[test]
    fn live_photos_go_first_then_the_backlog_by_capture_time() {
        let jobs = [
            pending(1, Some(2015), false),
            pending(2, None, false),
            pending(3, Some(2020), false),
            pending(4, Some(2001), true),
            pending(5, Some(2015), false),
            pending(6, Some(2010), false),
        ];
        let sorted = |order| {
            let mut queue: Vec<&PendingJob> = jobs.iter().collect();
            queue.sort_by_cached_key(|p| rank(p, order));
            queue.iter().map(|p| p.seq).collect::<Vec<_>>()
        };
        assert_eq!(sorted(Order::Newest), [4, 3, 1, 5, 6, 2]);
        assert_eq!(sorted(Order::Oldest), [4, 6, 1, 5, 3, 2]);
    }

    fn seqs(queue: &Queue) -> Vec<i64> {
        queue.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn fresh_jobs_merge_into_their_places() {
        let mut queue = Queue::new(Order::Newest);
        queue.merge(vec![pending(3, Some(2020), false), pending(1, Some(2015), false), pending(6, Some(2010), false)]);
        let fresh = vec![pending(7, Some(2012), false), pending(8, Some(2030), false), pending(9, Some(2000), true)];
        queue.merge(fresh);
        assert_eq!(seqs(&queue), [9, 8, 3, 1, 7, 6]);
    }

    /// A job put back at the front or the end keeps its place relative to
    /// the rest; fresh jobs still go by rank around it.
    #[test]
    fn jobs_put_back_keep_their_places() {
        let mut queue = Queue::new(Order::Newest);
        queue.merge(vec![pending(1, Some(2015), false), pending(2, Some(2010), false)]);
        queue.push_front(pending(3, Some(2001), false));
        queue.push_back(pending(4, Some(2030), false));
        queue.push_front(pending(5, Some(2002), false));
        assert_eq!(seqs(&queue), [5, 3, 1, 2, 4]);
        queue.merge(vec![pending(6, Some(2020), false), pending(7, Some(2012), false)]);
        assert_eq!(seqs(&queue), [6, 5, 3, 1, 7, 2, 4], "fresh jobs rank around the ones put back");
        let taken = queue.take_first(|p| p.seq % 2 == 1).expect("an odd one");
        assert_eq!(taken.seq, 5);
        assert_eq!(seqs(&queue), [6, 3, 1, 7, 2, 4]);
    }
}
