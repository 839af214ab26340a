//! The order of the queue: photos found while the daemon runs before the
//! backlog, then by capture time.

use std::collections::VecDeque;

use crate::catalog::PendingJob;
use crate::config::Order;

/// Adds `fresh` jobs to `queue` in rank order: they are sorted, then merged
/// with the queue (itself in rank order but for jobs put back at its front
/// or end on purpose, which keep their places relative to the rest).
pub(super) fn merge(queue: &mut VecDeque<PendingJob>, mut fresh: Vec<PendingJob>, order: Order) {
    if fresh.is_empty() {
        return;
    }
    fresh.sort_by_cached_key(|p| rank(p, order));
    let old = std::mem::take(queue);
    let mut fresh = fresh.into_iter().peekable();
    for job in old {
        while fresh.peek().is_some_and(|f| rank(f, order) < rank(&job, order)) {
            queue.extend(fresh.next());
        }
        queue.push_back(job);
    }
    queue.extend(fresh);
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

    #[test]
    fn fresh_jobs_merge_into_their_places() {
        let mut queue: VecDeque<PendingJob> =
            [pending(3, Some(2020), false), pending(1, Some(2015), false), pending(6, Some(2010), false)].into();
        let fresh = vec![pending(7, Some(2012), false), pending(8, Some(2030), false), pending(9, Some(2000), true)];
        merge(&mut queue, fresh, Order::Newest);
        let seqs: Vec<i64> = queue.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [9, 8, 3, 1, 7, 6]);
    }
}
