//! Queued jobs as the scheduler loads them: with what an upload needs to
//! know of each asset, all of them, those queued since a point, or the
//! best-ranked few at a destination (the scheduler keeps a window of the
//! queue in memory; the rest waits here).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{ToSql, params};

use super::jobs::{JOB_COLUMNS, corrupt, job_from_row};
use super::{Catalog, FileStat, Result};
use crate::config::Order;
use crate::model::{AssetInfo, ContentHash, DestinationId, Job, JobId};

/// A queued job with everything an upload needs to know about its asset.
#[derive(Debug, Clone)]
pub struct PendingJob {
    /// The job, in `queued` state.
    pub job: Job,
    /// The source folder the asset was found in.
    pub source: PathBuf,
    /// Its path relative to the source, as raw bytes.
    pub rel_path: Vec<u8>,
    /// The stat recorded when its content was hashed.
    pub stat: FileStat,
    /// Its content hash.
    pub hash: ContentHash,
    /// When discovery (re)queued it, in catalog order: jobs queued or
    /// revived since the scheduler last looked have a higher number.
    pub seq: i64,
    /// What it is and when it was taken (`None` for a version recorded
    /// before capture times were kept and not read since).
    pub info: Option<AssetInfo>,
    /// Found while the daemon ran (it goes before the backlog).
    pub live: bool,
    /// When it was taken, seconds since the epoch (for the queue's order).
    pub taken_at: Option<i64>,
}

impl PendingJob {
    /// The asset's absolute path.
    pub fn path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        self.source.join(std::ffi::OsStr::from_bytes(&self.rel_path))
    }
}

/// How many jobs are queued at a destination, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    /// Jobs.
    pub jobs: u64,
    /// Their files' bytes.
    pub bytes: u64,
}

/// The condition of [`Catalog::pending_after`]. It names the destinations
/// (the ids, integers, written out): the index goes by state, destination
/// and seq, and with the state alone the search would read every queued
/// job after every batch a scan writes, quadratic in a first scan.
fn after_condition(destinations: &[DestinationId]) -> String {
    let ids = if destinations.is_empty() {
        "SELECT id FROM destinations".to_owned()
    } else {
        destinations.iter().map(|d| d.0.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!("j.state = 'queued' AND j.destination_id IN ({ids}) AND j.seq > ?1")
}

impl Catalog {
    /// Every queued job at the given destinations whose [`PendingJob::seq`]
    /// is above `after` (queued or revived since an earlier call), oldest first.
    pub fn pending_after(&self, destinations: &[DestinationId], after: i64) -> Result<Vec<PendingJob>> {
        self.pending_where(&after_condition(destinations), &[&after], "j.id", destinations)
    }

    /// One job as the scheduler needs it, read afresh (its asset's stat may
    /// have changed since it was loaded); `None` unless it is queued.
    pub fn pending_job(&self, id: JobId) -> Result<Option<PendingJob>> {
        let all = self.pending_where("j.state = 'queued' AND j.id = ?1", &[&id.0], "j.id", &[])?;
        Ok(all.into_iter().next())
    }

    /// Every queued job at the given destinations, oldest first, with its asset.
    pub fn pending(&self, destinations: &[DestinationId]) -> Result<Vec<PendingJob>> {
        self.pending_after(destinations, i64::MIN)
    }

    /// The first `limit` jobs queued at `destination` up to
    /// [`PendingJob::seq`] `up_to`, in the order uploads take them: photos
    /// found live first, then by capture time (`order`; unknown times
    /// last), then in discovery order (the scheduler's queue order).
    pub fn pending_ranked(
        &self,
        destination: DestinationId,
        up_to: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<PendingJob>> {
        let by_time = match order {
            Order::Newest => "a.captured_at DESC",
            Order::Oldest => "a.captured_at ASC",
        };
        let ranked = format!("a.live DESC, a.captured_at IS NULL, {by_time}, j.seq");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The jobs chosen by their ids first: sorting whole rows for every
        // job queued took twice as long.
        let condition = format!(
            "j.id IN (SELECT j.id FROM jobs j JOIN assets a ON a.id = j.asset_id
                      WHERE j.state = 'queued' AND j.destination_id = ?1 AND j.seq <= ?2
                      ORDER BY {ranked} LIMIT ?3)"
        );
        self.pending_where(&condition, &[&destination.0, &up_to, &limit], &ranked, &[])
    }

    /// How many jobs are queued at each of the given destinations (what
    /// [`Catalog::pending`] would load, counted without loading it).
    pub fn queued_counts(&self, destinations: &[DestinationId]) -> Result<BTreeMap<DestinationId, u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination_id, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY destination_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut counts = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let destination = DestinationId(row.get(0)?);
            if destinations.contains(&destination) {
                counts.insert(destination, row.get::<_, i64>(1)?.unsigned_abs());
            }
        }
        Ok(counts)
    }

    /// The jobs queued at each of the given destinations up to
    /// [`PendingJob::seq`] `up_to`, and their bytes.
    pub fn queued_totals(&self, destinations: &[DestinationId], up_to: i64) -> Result<BTreeMap<DestinationId, Queued>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT j.destination_id, COUNT(*), COALESCE(SUM(a.size), 0) FROM jobs j JOIN assets a ON a.id = j.asset_id
             WHERE j.state = 'queued' AND j.seq <= ?1 GROUP BY j.destination_id",
        )?;
        let mut rows = stmt.query(params![up_to])?;
        let mut totals = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let destination = DestinationId(row.get(0)?);
            if destinations.contains(&destination) {
                let queued =
                    Queued { jobs: row.get::<_, i64>(1)?.unsigned_abs(), bytes: row.get::<_, i64>(2)?.unsigned_abs() };
                totals.insert(destination, queued);
            }
        }
        Ok(totals)
    }

    /// The highest [`PendingJob::seq`] given so far.
    pub fn last_seq(&self) -> Result<i64> {
        Ok(self.conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM jobs")?.query_row([], |r| r.get(0))?)
    }

    /// Queued jobs matching `condition` (with `values` bound), in `order`,
    /// at the given destinations (any when empty).
    fn pending_where(
        &self,
        condition: &str,
        values: &[&dyn ToSql],
        order: &str,
        destinations: &[DestinationId],
    ) -> Result<Vec<PendingJob>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, a.source, a.rel_path, a.size, a.mtime_ns, a.inode, a.sha256, j.seq, a.live, a.captured_at, {}
             FROM jobs j JOIN assets a ON a.id = j.asset_id
             WHERE {condition} ORDER BY {order}",
            super::info::COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(values)?;
        let mut pending = Vec::new();
        while let Some(row) = rows.next()? {
            let job = job_from_row(row, 0)?;
            if !destinations.is_empty() && !destinations.contains(&job.destination_id) {
                continue;
            }
            let hex: String = row.get(18)?;
            let hash =
                ContentHash::from_hex(&hex).ok_or_else(|| corrupt(format!("asset {}: bad sha256", job.asset_id.0)))?;
            pending.push(PendingJob {
                source: PathBuf::from(row.get::<_, String>(13)?),
                rel_path: row.get(14)?,
                stat: FileStat {
                    size: row.get::<_, i64>(15)? as u64,
                    mtime_ns: row.get(16)?,
                    inode: row.get::<_, i64>(17)? as u64,
                },
                hash,
                seq: row.get(19)?,
                live: row.get(20)?,
                taken_at: row.get(21)?,
                info: super::info::from_row(row, 22)?,
                job,
            });
        }
        Ok(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps `SQLite` plans for the scheduler's look for jobs queued
    /// since its last one.
    fn plan(catalog: &Catalog, destinations: &[DestinationId]) -> Vec<String> {
        let sql = format!("EXPLAIN QUERY PLAN SELECT j.id FROM jobs j WHERE {}", after_condition(destinations));
        let mut explain = catalog.conn.prepare(&sql).expect("plan");
        let steps = explain.query_map(params![0], |r| r.get(3)).expect("steps");
        steps.collect::<rusqlite::Result<_>>().expect("step")
    }

    /// Regression: every change of a job's state moved its entry in two
    /// indexes that both began with the state (by destination; by seq).
    /// One index serves both now.
    #[test]
    fn jobs_are_indexed_by_state_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let by_state: Vec<String> = catalog
            .conn
            .prepare(
                "SELECT il.name FROM pragma_index_list('jobs') il
                 WHERE (SELECT name FROM pragma_index_info(il.name) WHERE seqno = 0) = 'state'",
            )
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(by_state, ["jobs_by_state"]);
    }

    /// The look for newly queued jobs seeks each destination's new ones by
    /// seq, whether it names the destinations or not: reading every queued
    /// job after each batch a scan writes made a first scan quadratic.
    #[test]
    fn newly_queued_jobs_are_sought_by_seq_at_each_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        for destinations in [&[][..], &[DestinationId(1), DestinationId(3)][..]] {
            let steps = plan(&catalog, destinations);
            assert!(
                steps.iter().any(|s| s.contains("INDEX jobs_by_state (state=? AND destination_id=? AND seq>?)")),
                "{steps:?}"
            );
        }
    }
}
