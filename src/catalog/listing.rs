//! What people are shown of the queue: job listings and counts per state,
//! and the receipts `photosync verify` proves against the destinations.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::scan::{Table, recorded_stat};
use super::{Catalog, CatalogError, FileStat, Result};
use crate::model::{ContentHash, DestinationId, JobId, Receipt, RemoteKey, StateName, Timestamp, WaitingOn};

fn corrupt(what: impl Into<String>) -> CatalogError {
    CatalogError::Corrupt(what.into())
}

/// One row of `photosync jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: JobId,
    /// Lifecycle state.
    pub state: StateName,
    /// Attempts charged.
    pub attempts: u32,
    /// Destination label.
    pub destination: String,
    /// Absolute source path (lossy UTF-8).
    pub path: String,
    /// Asset size in bytes.
    pub size: u64,
    /// For queued jobs: what they wait on.
    pub waiting_on: Option<WaitingOn>,
    /// For jobs in `retry_wait`: when they are due.
    pub next_attempt_at: Option<Timestamp>,
    /// The current error (`retry_wait`, failed) or cancel reason.
    pub error: Option<String>,
    /// The most recent error, kept after recovery.
    pub last_error: Option<String>,
    /// Where the destination stores it, once uploaded.
    pub receipt_key: Option<String>,
    /// The receipt is the service's word that it has the file (Google
    /// Photos gives back no hash to compare), not bytes photosync checked.
    pub acknowledged_only: bool,
    /// Last transition time.
    pub updated_at: Timestamp,
    /// For a member of a group, the absolute path of the group's key file.
    pub group: Option<String>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<StateName>,
    /// Only jobs for destinations in the current config.
    pub active_only: bool,
}

/// Number of jobs in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts([u64; StateName::ALL.len()]);

impl StateCounts {
    /// Jobs in `state`.
    pub fn get(&self, state: StateName) -> u64 {
        self.0[state as usize]
    }
}

/// The columns of a [`JobView`], for [`view`].
const VIEW_QUERY: &str = "SELECT j.id, j.state, j.attempts, d.name, a.source, a.rel_path, a.size, j.waiting_on,
        j.next_attempt_at, j.error, j.last_error, j.receipt_key, j.updated_at, a.group_key, j.receipt_version
     FROM jobs j JOIN assets a ON a.id = j.asset_id JOIN destinations d ON d.id = j.destination_id";

/// The query of [`Catalog::list`]: one state's jobs are found by their
/// index (a condition that may or may not name a state read every job: a
/// `photosync backup` asked for its failed jobs by reading all 100,000
/// after a rescan).
fn list_query(filter: JobFilter) -> String {
    let state = if filter.state.is_some() { "j.state = ?1" } else { "?1 IS NULL" };
    format!("{VIEW_QUERY} WHERE {state} AND (?2 = 0 OR d.active = 1) ORDER BY j.id")
}

fn view(row: &rusqlite::Row<'_>) -> Result<JobView> {
    let id = JobId(row.get(0)?);
    let state_text: String = row.get(1)?;
    let state = StateName::parse(&state_text).ok_or_else(|| corrupt(format!("job {id}: unknown state")))?;
    let source: String = row.get(4)?;
    let rel: Vec<u8> = row.get(5)?;
    let waiting_on: Option<String> = row.get(7)?;
    let receipt_key: Option<Vec<u8>> = row.get(11)?;
    let absolute = |rel: &[u8]| format!("{}/{}", source.trim_end_matches('/'), String::from_utf8_lossy(rel));
    let group: Option<Vec<u8>> = row.get(13)?;
    Ok(JobView {
        id,
        state,
        attempts: row.get(2)?,
        destination: row.get(3)?,
        path: absolute(&rel),
        size: row.get::<_, i64>(6)? as u64,
        waiting_on: waiting_on.as_deref().and_then(WaitingOn::parse),
        next_attempt_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
        error: row.get(9)?,
        last_error: row.get(10)?,
        receipt_key: receipt_key.map(|k| String::from_utf8_lossy(&k).into_owned()),
        acknowledged_only: row.get::<_, Option<String>>(14)?.as_deref()
            == Some(crate::destination::googlephotos::ACKNOWLEDGED),
        updated_at: Timestamp(row.get(12)?),
        group: group.map(|key| absolute(&key)),
    })
}

impl Catalog {
    /// Jobs for display, newest first within each state ordering by id.
    pub fn list(&self, filter: JobFilter) -> Result<Vec<JobView>> {
        let mut stmt = self.conn.prepare(&list_query(filter))?;
        let mut rows = stmt.query(params![filter.state.map(StateName::as_str), filter.active_only])?;
        let mut views = Vec::new();
        while let Some(row) = rows.next()? {
            views.push(view(row)?);
        }
        Ok(views)
    }

    /// The jobs of the version of `rel_path` in `source` that the last scan
    /// recorded, and the stat it had then; `None` if no scan recorded it as
    /// a photo or video.
    pub fn current_jobs(&self, source: &str, rel_path: &[u8]) -> Result<Option<(FileStat, Vec<JobView>)>> {
        let Some(recorded) = recorded_stat(&self.conn, Table::Files, source, rel_path)? else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(&format!(
            "{VIEW_QUERY} WHERE j.asset_id = (SELECT asset_id FROM files WHERE source = ?1 AND rel_path = ?2)
             ORDER BY j.id"
        ))?;
        let mut rows = stmt.query(params![source, rel_path])?;
        let mut views = Vec::new();
        while let Some(row) = rows.next()? {
            views.push(view(row)?);
        }
        Ok(Some((recorded, views)))
    }

    /// The stat `rel_path` in `source` had when it was read and found not
    /// to be a photo or video.
    pub fn not_media_stat(&self, source: &str, rel_path: &[u8]) -> Result<Option<FileStat>> {
        recorded_stat(&self.conn, Table::NotMedia, source, rel_path)
    }

    /// How many jobs for destinations in the current config are in each state.
    pub fn counts(&self) -> Result<StateCounts> {
        let mut counts = StateCounts::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT j.state, COUNT(*) FROM jobs j JOIN destinations d ON d.id = j.destination_id
             WHERE d.active = 1 GROUP BY j.state",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            let state = StateName::parse(&text).ok_or_else(|| corrupt(format!("unknown state {text:?}")))?;
            counts.0[state as usize] = row.get::<_, i64>(1)? as u64;
        }
        Ok(counts)
    }

    /// Jobs still to do at `destination`: queued, running or waiting to retry.
    pub fn jobs_to_do(&self, destination: crate::model::DestinationId) -> Result<u64> {
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM jobs WHERE destination_id = ?1 AND state IN ('queued', 'running', 'retry_wait')",
            )?
            .query_row([destination.0], |r| r.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// An acknowledged job's receipt, for `photosync verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// The job.
    pub job: JobId,
    /// Where the content went.
    pub destination: DestinationId,
    /// The source file it came from (lossy UTF-8).
    pub path: String,
    /// What the destination confirmed.
    pub receipt: Receipt,
}

impl Catalog {
    /// Every acknowledged receipt at the given destinations, by job id.
    pub fn receipts(&self, destinations: &[DestinationId]) -> Result<Vec<ReceiptRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT j.id, j.destination_id, a.source, a.rel_path, j.receipt_key, j.receipt_size, j.receipt_sha256,
                    j.receipt_version
             FROM jobs j JOIN assets a ON a.id = j.asset_id
             WHERE j.state = 'acknowledged' AND j.receipt_key IS NOT NULL ORDER BY j.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut receipts = Vec::new();
        while let Some(row) = rows.next()? {
            let (job, destination) = (JobId(row.get(0)?), DestinationId(row.get(1)?));
            if !destinations.contains(&destination) {
                continue;
            }
            let source: String = row.get(2)?;
            let rel: Vec<u8> = row.get(3)?;
            let hex: String = row.get(6)?;
            let sha256 =
                ContentHash::from_hex(&hex).ok_or_else(|| corrupt(format!("job {job}: bad receipt_sha256")))?;
            receipts.push(ReceiptRow {
                job,
                destination,
                path: format!("{}/{}", source.trim_end_matches('/'), String::from_utf8_lossy(&rel)),
                receipt: Receipt {
                    key: RemoteKey(row.get(4)?),
                    size: row.get::<_, i64>(5)? as u64,
                    sha256,
                    version: row.get(7)?,
                },
            });
        }
        Ok(receipts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: listing one state's jobs (a `photosync backup` asks for
    /// the failed and the waiting ones at its end) read every job, with a
    /// condition that might or might not name a state: 36 ms of a rescan
    /// with 100,000 jobs, for none found.
    #[test]
    fn a_list_of_one_state_reads_only_that_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let plan = |filter: JobFilter| -> Vec<String> {
            let mut explain =
                catalog.conn.prepare(&format!("EXPLAIN QUERY PLAN {}", list_query(filter))).expect("plan");
            let steps = explain.query_map(params![filter.state.map(StateName::as_str), false], |r| r.get(3));
            steps.expect("steps").collect::<rusqlite::Result<_>>().expect("step")
        };
        let failed = plan(JobFilter { state: Some(StateName::Failed), active_only: false });
        assert!(failed.iter().any(|step| step.starts_with("SEARCH j USING INDEX jobs_by_state")), "{failed:?}");
        let all = plan(JobFilter::default());
        assert!(all.iter().any(|step| step.starts_with("SCAN j")), "{all:?}");
    }
}
