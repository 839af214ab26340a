//! The upload queue: destinations, job creation, transitions and listings.

use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError, Result};
use crate::config::DestinationConfig;
use crate::model::{
    AssetId, ContentHash, DestinationId, Job, JobId, JobState, Receipt, RemoteKey, StateName, Timestamp, WaitingOn,
};

pub(super) const JOB_COLUMNS: &str =
    "j.id, j.asset_id, j.destination_id, j.attempts, j.state, j.waiting_on, j.started_at,
    j.next_attempt_at, j.error, j.receipt_key, j.receipt_size, j.receipt_sha256, j.receipt_version";

pub(super) fn corrupt(what: impl Into<String>) -> CatalogError {
    CatalogError::Corrupt(what.into())
}

/// Decodes the `JOB_COLUMNS` starting at `base`.
pub(super) fn job_from_row(row: &Row<'_>, base: usize) -> Result<Job> {
    let id = JobId(row.get(base)?);
    let state_text: String = row.get(base + 4)?;
    let name =
        StateName::parse(&state_text).ok_or_else(|| corrupt(format!("job {id}: unknown state {state_text:?}")))?;
    let missing = |column: &str| corrupt(format!("job {id} is {name} but has no {column}"));
    let receipt = || -> Result<Option<Receipt>> {
        let key: Option<Vec<u8>> = row.get(base + 9)?;
        let Some(key) = key else { return Ok(None) };
        let size: i64 = row.get::<_, Option<i64>>(base + 10)?.ok_or_else(|| missing("receipt_size"))?;
        let hex: String = row.get::<_, Option<String>>(base + 11)?.ok_or_else(|| missing("receipt_sha256"))?;
        let sha256 = ContentHash::from_hex(&hex).ok_or_else(|| missing("valid receipt_sha256"))?;
        Ok(Some(Receipt { key: RemoteKey(key), size: size as u64, sha256, version: row.get(base + 12)? }))
    };
    let error = || -> Result<String> { row.get::<_, Option<String>>(base + 8)?.ok_or_else(|| missing("error")) };
    let state = match name {
        StateName::Queued => {
            let text: Option<String> = row.get(base + 5)?;
            let waiting_on = match text {
                None => WaitingOn::Nothing,
                Some(t) => WaitingOn::parse(&t).ok_or_else(|| missing("valid waiting_on"))?,
            };
            JobState::Queued { waiting_on }
        }
        StateName::Running => JobState::Running {
            started_at: Timestamp(row.get::<_, Option<i64>>(base + 6)?.ok_or_else(|| missing("started_at"))?),
        },
        StateName::RetryWait => JobState::RetryWait {
            next_attempt_at: Timestamp(row.get::<_, Option<i64>>(base + 7)?.ok_or_else(|| missing("next_attempt_at"))?),
            error: error()?,
        },
        StateName::Succeeded => JobState::Succeeded { receipt: receipt()?.ok_or_else(|| missing("receipt"))? },
        StateName::Failed => JobState::Failed { error: error()? },
        StateName::Acknowledged => JobState::Acknowledged { receipt: receipt()? },
        StateName::Cancelled => JobState::Cancelled { reason: error()? },
    };
    Ok(Job {
        id,
        asset_id: AssetId(row.get(base + 1)?),
        destination_id: DestinationId(row.get(base + 2)?),
        attempts: row.get(base + 3)?,
        state,
    })
}

/// The next discovery sequence number (see [`PendingJob::seq`]), as SQL.
macro_rules! next_seq {
    () => {
        "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs)"
    };
}
const NEXT_SEQ: &str = next_seq!();

/// Queues asset `?1` at destination `?2` (at time `?3`) unless it has a job
/// there. A row of values: an INSERT … SELECT that reads `jobs` (for the
/// next seq) made the database copy what it selected into a temporary table
/// first, for every file.
const ENQUEUE: &str = concat!(
    "INSERT OR IGNORE INTO jobs (asset_id, destination_id, state, waiting_on, attempts, created_at, updated_at, seq)
     VALUES (?1, ?2, 'queued', 'nothing', 0, ?3, ?3, ",
    next_seq!(),
    ")"
);

/// Writes a job's transition (see [`Catalog::apply`]).
const APPLY: &str = "UPDATE jobs SET state = ?3, waiting_on = ?4, attempts = ?5, started_at = ?6, next_attempt_at = ?7,
        error = ?8, last_error = COALESCE(?8, last_error), receipt_key = ?9, receipt_size = ?10,
        receipt_sha256 = ?11, receipt_version = ?12, updated_at = ?13
     WHERE id = ?1 AND state = ?2 AND attempts = ?14";

/// The stored content whose SHA-256 is `?2` at destination `?1`: searched
/// by the hash's first 8 bytes (the index keeps no more, schema 14), then
/// compared whole.
const FIND_RECEIPT: &str = "SELECT receipt_key, receipt_size, receipt_version FROM jobs
     WHERE destination_id = ?1 AND unhex(substr(receipt_sha256, 1, 16)) = unhex(substr(?2, 1, 16))
       AND receipt_sha256 = ?2 AND state IN ('succeeded', 'acknowledged')
     LIMIT 1";

/// Creates a queued job for `asset` at every active destination that has
/// none for it yet. Returns how many were created.
pub(super) fn enqueue_asset(
    conn: &rusqlite::Connection,
    asset: AssetId,
    destinations: &[DestinationId],
    now: Timestamp,
) -> Result<usize> {
    let mut insert = conn.prepare_cached(ENQUEUE)?;
    let mut queued = 0;
    for destination in destinations {
        queued += insert.execute(params![asset.0, destination.0, now.0])?;
    }
    Ok(queued)
}

/// The destinations new versions are queued for.
pub(super) fn active_destinations(conn: &rusqlite::Connection) -> Result<Vec<DestinationId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM destinations WHERE active = 1 ORDER BY id")?;
    let ids = stmt.query_map([], |r| r.get(0).map(DestinationId))?;
    Ok(ids.collect::<rusqlite::Result<_>>()?)
}

/// Queues again the cancelled jobs of `asset` at active destinations: its
/// content is at its path (again), so it must reach every destination. The
/// SQL form of [`Job::revive`]. Returns how many were revived.
pub(super) fn revive_asset(conn: &rusqlite::Connection, asset: AssetId, now: Timestamp) -> Result<usize> {
    let sql = format!(
        "UPDATE jobs SET state = 'queued', waiting_on = 'nothing', last_error = COALESCE(error, last_error),
                error = NULL, updated_at = ?2, seq = {NEXT_SEQ}
         WHERE asset_id = ?1 AND state = 'cancelled'
           AND destination_id IN (SELECT id FROM destinations WHERE active = 1)"
    );
    Ok(conn.prepare_cached(&sql)?.execute(params![asset.0, now.0])?)
}

/// The state columns a [`JobState`] is stored in.
struct StateColumns<'a> {
    waiting_on: Option<&'static str>,
    started_at: Option<i64>,
    next_attempt_at: Option<i64>,
    error: Option<&'a str>,
    receipt: Option<&'a Receipt>,
}

impl<'a> StateColumns<'a> {
    fn of(state: &'a JobState) -> Self {
        let mut c =
            StateColumns { waiting_on: None, started_at: None, next_attempt_at: None, error: None, receipt: None };
        match state {
            JobState::Queued { waiting_on } => c.waiting_on = Some(waiting_on.as_str()),
            JobState::Running { started_at } => c.started_at = Some(started_at.0),
            JobState::RetryWait { next_attempt_at, error } => {
                c.next_attempt_at = Some(next_attempt_at.0);
                c.error = Some(error);
            }
            JobState::Succeeded { receipt } => c.receipt = Some(receipt),
            JobState::Failed { error } => c.error = Some(error),
            JobState::Acknowledged { receipt } => c.receipt = receipt.as_ref(),
            JobState::Cancelled { reason } => c.error = Some(reason),
        }
        c
    }
}

impl Catalog {
    /// Records the configured destinations, keyed by type and location, and
    /// returns their ids in config order. A destination whose location
    /// changed becomes a new destination: receipts for the old location say
    /// nothing about the new one.
    pub fn sync_destinations(&mut self, destinations: &[DestinationConfig]) -> Result<Vec<DestinationId>> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let was_active = active_destinations(&tx)?;
        tx.execute("UPDATE destinations SET active = 0", [])?;
        let mut ids = Vec::with_capacity(destinations.len());
        for d in destinations {
            let id: i64 = tx.query_row(
                "INSERT INTO destinations (name, kind, location, active) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (kind, location) DO UPDATE SET name = excluded.name, active = 1
                 RETURNING id",
                params![d.name, d.kind.type_name(), d.kind.location()],
                |r| r.get(0),
            )?;
            ids.push(DestinationId(id));
            if !was_active.contains(&DestinationId(id)) {
                // New, or back: files recorded while it was not active have no job there.
                tx.execute("DELETE FROM queued_everywhere WHERE destination_id = ?1", params![id])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Creates a queued job for every current file of `source` at every
    /// active destination that has none yet. Returns how many were created.
    /// Runs after every scan, but asks only of destinations that became
    /// active since it last did for `source` (every scan writes the jobs of
    /// the versions it records at every active destination, so only those
    /// can lack one): asking of all 100,000 files was a tenth of a rescan.
    /// Where it asks, the pairs that have a job are passed over by their
    /// index, never offered to the insert (which took a new `seq` for each
    /// before ignoring it: 12 % of a rescan of 100,000 files).
    pub fn enqueue_current(&mut self, source: &str, now: Timestamp) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sql = format!(
            "INSERT OR IGNORE INTO jobs (asset_id, destination_id, state, waiting_on, attempts, created_at, updated_at, seq)
             SELECT f.asset_id, ?3, 'queued', 'nothing', 0, ?2, ?2, {NEXT_SEQ}
             FROM files f
             WHERE f.source = ?1
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.asset_id = f.asset_id AND j.destination_id = ?3)"
        );
        let mut created = 0;
        for destination in active_destinations(&tx)? {
            let asked: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM queued_everywhere WHERE source = ?1 AND destination_id = ?2)",
                )?
                .query_row(params![source, destination.0], |r| r.get(0))?;
            if asked {
                continue;
            }
            created += tx.prepare_cached(&sql)?.execute(params![source, now.0, destination.0])?;
            tx.prepare_cached("INSERT INTO queued_everywhere (source, destination_id) VALUES (?1, ?2)")?
                .execute(params![source, destination.0])?;
        }
        tx.commit()?;
        Ok(created)
    }

    /// Cancels a queued job whose file is gone (deleted, or replaced by a
    /// newer version), unless discovery has meanwhile recorded its content
    /// at its path again, in one guarded update. `Ok(false)`: it has, and
    /// the job stays queued.
    pub fn cancel_unless_current(&mut self, before: &Job, reason: &str, now: Timestamp) -> Result<bool> {
        let after = before.cancel(reason.to_owned())?;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 'cancelled', waiting_on = NULL, error = ?2, last_error = ?2, updated_at = ?3
                 WHERE id = ?1 AND state = 'queued' AND attempts = ?4
                   AND NOT EXISTS (SELECT 1 FROM files WHERE asset_id = ?5)",
            )?
            .execute(params![after.id.0, reason, now.0, before.attempts, before.asset_id.0])?;
        if changed == 1 {
            return Ok(true);
        }
        match self.job(before.id)? {
            Some(job) if job.state.name() == StateName::Queued => Ok(false),
            _ => Err(CatalogError::Stale(before.id)),
        }
    }

    /// Persists `after` as the new state of the job that was `before`, in one
    /// transaction. Fails with [`CatalogError::Stale`] if the row no longer
    /// matches `before` (another writer got there first).
    pub fn apply(&mut self, before: &Job, after: &Job, now: Timestamp) -> Result<()> {
        if before.id != after.id {
            return Err(corrupt(format!("transition from job {} to job {}", before.id, after.id)));
        }
        let c = StateColumns::of(&after.state);
        let receipt = c.receipt;
        let changed = self.conn.prepare_cached(APPLY)?.execute(params![
            after.id.0,
            before.state.name().as_str(),
            after.state.name().as_str(),
            c.waiting_on,
            after.attempts,
            c.started_at,
            c.next_attempt_at,
            c.error,
            receipt.map(|r| r.key.0.as_slice()),
            receipt.map(|r| r.size as i64),
            receipt.map(|r| r.sha256.as_hex()),
            receipt.and_then(|r| r.version.as_deref()),
            now.0,
            before.attempts,
        ])?;
        if changed == 1 { Ok(()) } else { Err(CatalogError::Stale(after.id)) }
    }

    /// Loads one job.
    pub fn job(&self, id: JobId) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id.0])?;
        rows.next()?.map(|row| job_from_row(row, 0)).transpose()
    }

    fn jobs_in_state(&self, state: StateName) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.state = ?1 ORDER BY j.id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![state.as_str()])?;
        let mut jobs = Vec::new();
        while let Some(row) = rows.next()? {
            jobs.push(job_from_row(row, 0)?);
        }
        Ok(jobs)
    }

    /// Start-up recovery: every `running` job returns to `queued` (no attempt
    /// charged) and every `succeeded` job is acknowledged. Returns how many
    /// jobs were recovered.
    pub fn recover(&mut self, now: Timestamp) -> Result<usize> {
        let mut recovered = 0;
        for job in self.jobs_in_state(StateName::Running)? {
            self.apply(&job, &job.interrupt(WaitingOn::Nothing)?, now)?;
            recovered += 1;
        }
        for job in self.jobs_in_state(StateName::Succeeded)? {
            self.apply(&job, &job.acknowledge()?, now)?;
            recovered += 1;
        }
        Ok(recovered)
    }

    /// Queues again acknowledged jobs whose receipt no longer holds at the
    /// destination (see [`Job::repair`]). Returns the jobs queued.
    pub fn repair(&mut self, ids: &[JobId], now: Timestamp) -> Result<Vec<JobId>> {
        let mut repaired = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(job) = self.job(id)? else { continue };
            if let Ok(queued) = job.repair() {
                self.apply(&job, &queued, now)?;
                repaired.push(id);
            }
        }
        Ok(repaired)
    }

    /// Moves every `retry_wait` job that is due by `now` back to `queued`.
    pub fn requeue_due(&mut self, now: Timestamp) -> Result<usize> {
        let mut woken = 0;
        for job in self.jobs_in_state(StateName::RetryWait)? {
            if let JobState::RetryWait { next_attempt_at, .. } = job.state
                && next_attempt_at <= now
            {
                self.apply(&job, &job.requeue()?, now)?;
                woken += 1;
            }
        }
        Ok(woken)
    }

    /// Moves the given jobs (or every failed and retry-waiting job when
    /// `ids` is empty) back to `queued`. Returns the jobs requeued; ids that
    /// do not exist or are not retryable are reported as errors.
    pub fn requeue(&mut self, ids: &[JobId], now: Timestamp) -> Result<Vec<Result<JobId, String>>> {
        let jobs: Vec<Result<Job, String>> = if ids.is_empty() {
            let mut all = self.jobs_in_state(StateName::Failed)?;
            all.extend(self.jobs_in_state(StateName::RetryWait)?);
            all.into_iter().map(Ok).collect()
        } else {
            ids.iter()
                .map(|&id| Ok(self.job(id)?.ok_or_else(|| format!("job {id} does not exist"))))
                .collect::<Result<_>>()?
        };
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            results.push(match job {
                Err(e) => Err(e),
                Ok(job) => match job.requeue() {
                    Ok(next) => {
                        self.apply(&job, &next, now)?;
                        Ok(job.id)
                    }
                    Err(e) => Err(e.to_string()),
                },
            });
        }
        Ok(results)
    }

    /// When the earliest job in `retry_wait` at an active destination is due.
    pub fn next_retry(&self) -> Result<Option<Timestamp>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MIN(j.next_attempt_at) FROM jobs j JOIN destinations d ON d.id = j.destination_id
                 WHERE j.state = 'retry_wait' AND d.active = 1",
            )?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?
            .map(Timestamp))
    }

    /// Whether the asset is what its path holds now (not superseded by a
    /// newer version).
    pub fn is_current(&self, asset: AssetId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM files WHERE asset_id = ?1)")?
            .query_row(params![asset.0], |r| r.get(0))?)
    }

    /// A receipt for content `hash` already stored at `destination`, if any.
    pub fn find_receipt(&self, destination: DestinationId, hash: &ContentHash) -> Result<Option<Receipt>> {
        Ok(self
            .conn
            .prepare_cached(FIND_RECEIPT)?
            .query_row(params![destination.0, hash.as_hex()], |r| {
                Ok(Receipt {
                    key: RemoteKey(r.get(0)?),
                    size: r.get::<_, i64>(1)? as u64,
                    sha256: hash.clone(),
                    version: r.get(2)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FileStat, JobFilter};
    use crate::config::DestinationKind;

    /// How many temporary tables the statement `sql` builds each time it runs.
    fn temporary_tables(catalog: &Catalog, sql: &str) -> usize {
        let mut explain = catalog.conn.prepare(&format!("EXPLAIN {sql}")).expect("explain");
        let unbound = std::iter::repeat_n(rusqlite::types::Null, explain.parameter_count());
        let opcodes = explain.query_map(rusqlite::params_from_iter(unbound), |r| r.get::<_, String>(1)).expect("rows");
        opcodes.map(|op| op.expect("opcode")).filter(|op| op == "OpenEphemeral").count()
    }

    /// Regression: every statement that queued a job or wrote its state
    /// built a temporary table (from the CHECK's IN list of states, and for
    /// the queueing INSERT … SELECT that read `jobs`): half the cost of each
    /// of a first backup's 300,000 job writes per 100,000 photos.
    #[test]
    fn writing_a_job_builds_no_temporary_table() {
        let (_dir, catalog, _) = setup();
        assert_eq!(temporary_tables(&catalog, ENQUEUE), 0, "queueing");
        assert_eq!(temporary_tables(&catalog, APPLY), 0, "a transition");
    }

    fn folder(name: &str) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Folder(crate::destination::folder::FolderConfig {
                path: format!("/mnt/{name}").into(),
            }),
            layout: crate::layout::Layout::default(),
        }
    }

    fn setup() -> (tempfile::TempDir, Catalog, DestinationId) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let ids = catalog.sync_destinations(&[folder("nas")]).expect("sync");
        let mut w = catalog.scan_writer("/src");
        let stat = FileStat { size: 3, mtime_ns: 1, inode: 1 };
        w.record(b"a.jpg", stat, ContentHash::from_digest(&[1; 32]), crate::catalog::info::example(), Timestamp(1))
            .expect("rec");
        let flushed = w.finish(Timestamp(1)).expect("finish");
        assert_eq!(flushed.jobs_queued, 1, "recording queues the job");
        assert_eq!(catalog.enqueue_current("/src", Timestamp(1)).expect("enqueue"), 0, "idempotent");
        (dir, catalog, ids[0])
    }

    fn receipt() -> Receipt {
        Receipt {
            key: RemoteKey(b"a.jpg".to_vec()),
            size: 3,
            sha256: ContentHash::from_digest(&[1; 32]),
            version: None,
        }
    }

    #[test]
    fn every_state_round_trips_through_the_catalog() {
        let (_dir, mut catalog, dest) = setup();
        let queued = catalog.pending(&[dest]).expect("pending").remove(0).job;
        let running = queued.start(Timestamp(2)).expect("start");
        catalog.apply(&queued, &running, Timestamp(2)).expect("apply");
        assert_eq!(catalog.job(running.id).expect("load"), Some(running.clone()));
        let waiting = running.defer("disk full".into(), Timestamp(99)).expect("defer");
        catalog.apply(&running, &waiting, Timestamp(3)).expect("apply");
        assert_eq!(catalog.job(waiting.id).expect("load"), Some(waiting.clone()));
        assert_eq!(catalog.requeue_due(Timestamp(50)).expect("wake"), 0);
        assert_eq!(catalog.requeue_due(Timestamp(99)).expect("wake"), 1);
        let queued = catalog.job(waiting.id).expect("load").expect("exists");
        let running = queued.start(Timestamp(100)).expect("start");
        catalog.apply(&queued, &running, Timestamp(100)).expect("apply");
        let done = running.succeed(receipt()).expect("succeed");
        catalog.apply(&running, &done, Timestamp(101)).expect("apply");
        let acked = done.acknowledge().expect("ack");
        catalog.apply(&done, &acked, Timestamp(102)).expect("apply");
        assert_eq!(catalog.job(acked.id).expect("load"), Some(acked.clone()));
        assert_eq!(acked.attempts, 1);
        assert_eq!(catalog.find_receipt(dest, &receipt().sha256).expect("find"), Some(receipt()));
        let views = catalog.list(JobFilter { state: Some(StateName::Acknowledged), active_only: true }).expect("list");
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].path, "/src/a.jpg");
        assert_eq!(views[0].last_error.as_deref(), Some("disk full"));
        assert_eq!(catalog.counts().expect("counts").get(StateName::Acknowledged), 1);
    }

    /// Content is found by the first 8 bytes of its hash through the index,
    /// then compared whole: of two hashes that share those bytes, each finds
    /// its own receipt, and a third that shares them finds none.
    #[test]
    fn a_receipt_is_found_by_its_whole_hash_among_hashes_sharing_a_prefix() {
        let (_dir, mut catalog, dest) = setup();
        let twin = ContentHash::from_digest(&[[1; 8].as_slice(), &[2; 24]].concat());
        let mut w = catalog.scan_writer("/src");
        let stat = FileStat { size: 3, mtime_ns: 1, inode: 2 };
        w.record(b"b.jpg", stat, twin.clone(), crate::catalog::info::example(), Timestamp(1)).expect("rec");
        w.finish(Timestamp(1)).expect("finish");
        for pending in catalog.pending(&[dest]).expect("pending") {
            let running = pending.job.start(Timestamp(2)).expect("start");
            catalog.apply(&pending.job, &running, Timestamp(2)).expect("apply");
            let key = RemoteKey(pending.rel_path.clone());
            let done = running.succeed(Receipt { key, size: 3, sha256: pending.hash.clone(), version: None });
            catalog.apply(&running, &done.expect("succeed"), Timestamp(3)).expect("apply");
        }
        assert_eq!(catalog.find_receipt(dest, &receipt().sha256).expect("find"), Some(receipt()));
        let found = catalog.find_receipt(dest, &twin).expect("find").expect("the twin's receipt");
        assert_eq!((found.key, found.sha256), (RemoteKey(b"b.jpg".to_vec()), twin));
        let third = ContentHash::from_digest(&[[1; 8].as_slice(), &[3; 24]].concat());
        assert_eq!(catalog.find_receipt(dest, &third).expect("find"), None);

        let mut explain = catalog.conn.prepare(&format!("EXPLAIN QUERY PLAN {FIND_RECEIPT}")).expect("plan");
        let steps: Vec<String> = explain
            .query_map(params![dest.0, third.as_hex()], |r| r.get(3))
            .expect("steps")
            .collect::<rusqlite::Result<_>>()
            .expect("step");
        assert!(steps.iter().any(|s| s.starts_with("SEARCH jobs USING INDEX jobs_by_receipt")), "{steps:?}");
    }

    /// A scan asks which files lack a job only of destinations that became
    /// active since its last ask: one taken out of the config and put back
    /// gets the files recorded while it was out (they have no job there),
    /// and a new one gets every file.
    #[test]
    fn a_destination_back_in_the_config_gets_the_files_recorded_while_it_was_out() {
        let (_dir, mut catalog, _) = setup();
        let jobs_at = |catalog: &Catalog, destination: DestinationId| -> i64 {
            let sql = "SELECT COUNT(*) FROM jobs WHERE destination_id = ?1";
            catalog.conn.query_row(sql, [destination.0], |r| r.get(0)).expect("count")
        };
        let usb = catalog.sync_destinations(&[folder("nas"), folder("usb")]).expect("usb added")[1];
        assert_eq!(catalog.enqueue_current("/src", Timestamp(2)).expect("enqueue"), 1, "a new destination");
        assert_eq!(catalog.enqueue_current("/src", Timestamp(2)).expect("enqueue"), 0);

        catalog.sync_destinations(&[folder("nas")]).expect("usb out");
        let mut w = catalog.scan_writer("/src");
        let stat = FileStat { size: 3, mtime_ns: 1, inode: 2 };
        w.record(b"b.jpg", stat, ContentHash::from_digest(&[2; 32]), crate::catalog::info::example(), Timestamp(3))
            .expect("rec");
        assert_eq!(w.finish(Timestamp(3)).expect("finish").jobs_queued, 1, "at the nas only");
        assert_eq!(catalog.enqueue_current("/src", Timestamp(3)).expect("enqueue"), 0);
        assert_eq!(jobs_at(&catalog, usb), 1);

        let back = catalog.sync_destinations(&[folder("nas"), folder("usb")]).expect("usb back");
        assert_eq!(back[1], usb, "the same destination");
        assert_eq!(catalog.enqueue_current("/src", Timestamp(4)).expect("enqueue"), 1, "b.jpg at the usb");
        assert_eq!(jobs_at(&catalog, usb), 2);
        assert_eq!(catalog.enqueue_current("/src", Timestamp(4)).expect("enqueue"), 0);
        assert_eq!(catalog.enqueue_current("/other", Timestamp(4)).expect("enqueue"), 0, "a source of no files");
    }

    #[test]
    fn stale_transitions_are_refused() {
        let (_dir, mut catalog, dest) = setup();
        let queued = catalog.pending(&[dest]).expect("pending").remove(0).job;
        let running = queued.start(Timestamp(2)).expect("start");
        catalog.apply(&queued, &running, Timestamp(2)).expect("first writer wins");
        let err = catalog.apply(&queued, &running, Timestamp(3)).expect_err("second writer loses");
        assert!(matches!(err, CatalogError::Stale(_)));
    }

    #[test]
    fn recovery_requeues_running_jobs_without_charging() {
        let (_dir, mut catalog, dest) = setup();
        let queued = catalog.pending(&[dest]).expect("pending").remove(0).job;
        let running = queued.start(Timestamp(2)).expect("start");
        catalog.apply(&queued, &running, Timestamp(2)).expect("apply");
        assert_eq!(catalog.recover(Timestamp(3)).expect("recover"), 1);
        let recovered = catalog.job(queued.id).expect("load").expect("exists");
        assert_eq!(recovered.state, JobState::Queued { waiting_on: WaitingOn::Nothing });
        assert_eq!(recovered.attempts, 0);
    }
}
