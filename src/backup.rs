//! The one-shot pipeline behind `photosync backup`: recover, scan every
//! source, upload everything queued, and say what is left.
//!
//! It owns no policy of its own: discovery, the queue and retries are the
//! same code the daemon uses. What it adds is the order of the steps and the
//! final tally that the CLI turns into a summary and an exit code.

use std::future::Future;
use std::sync::Arc;

use crate::catalog::{Catalog, JobFilter, JobView, StateCounts};
use crate::config::Config;
use crate::destination;
use crate::discover::{ScanReport, scan_source};
use crate::error::Error;
use crate::model::{StateName, Timestamp};
use crate::scheduler::{DrainReport, RunObserver, Target, drain};

/// Progress of a whole backup run.
pub trait BackupObserver: RunObserver {
    /// Called as a scan proceeds with its running tally.
    fn scanning(&self, _report: &ScanReport) {}
}

/// Everything a backup run did and left.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// `running` jobs from an interrupted earlier run that were requeued.
    pub recovered: usize,
    /// One report per source, in config order.
    pub scans: Vec<ScanReport>,
    /// What the upload phase did.
    pub drain: DrainReport,
    /// Jobs per state at the end (current destinations only).
    pub counts: StateCounts,
    /// Every job in `failed` (from this run or earlier ones).
    pub failed: Vec<JobView>,
    /// Every job in `retry_wait`.
    pub retry_wait: Vec<JobView>,
}

/// Runs one backup. `shutdown` interrupts the upload phase cleanly.
pub async fn run(
    config: &Config,
    catalog: &mut Catalog,
    observer: Arc<dyn BackupObserver>,
    shutdown: impl Future<Output = ()>,
) -> Result<BackupOutcome, Error> {
    let now = Timestamp::now();
    let recovered = catalog.recover(now)?;
    if recovered > 0 {
        tracing::info!(recovered, "resumed jobs an earlier run left running");
    }
    let ids = catalog.sync_destinations(&config.destinations)?;
    catalog.requeue_due(now)?;

    let mut scans = Vec::with_capacity(config.sources.len());
    for source in &config.sources {
        let report = tokio::task::block_in_place(|| {
            scan_source(catalog, source, Timestamp::now(), &mut |r| observer.scanning(r))
        })?;
        tracing::info!(source = %source.path.display(), media = report.media_files, new = report.new_versions, "scanned");
        scans.push(report);
    }

    let targets: Vec<Target> = config
        .destinations
        .iter()
        .zip(ids)
        .map(|(d, id)| Target { id, name: d.name.clone(), destination: destination::open(d) })
        .collect();
    let run_observer: Arc<dyn RunObserver> = observer.clone();
    let drained = drain(catalog, &targets, config.retry, config.max_concurrent, run_observer, shutdown).await?;

    let only = |state| JobFilter { state: Some(state), active_only: true };
    Ok(BackupOutcome {
        recovered,
        scans,
        drain: drained,
        counts: catalog.counts()?,
        failed: catalog.list(only(StateName::Failed))?,
        retry_wait: catalog.list(only(StateName::RetryWait))?,
    })
}
