//! The one-shot pipeline behind `photosync backup`: recover, scan every
//! source, upload everything queued, and say what is left.
//!
//! It owns no policy of its own: discovery, the queue and retries are the
//! same code the daemon uses. What it adds is the order of the steps and the
//! final tally that the CLI turns into a summary and an exit code.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, JobFilter, JobView, StateCounts};
use crate::config::{Config, PolicyConfig, SourceConfig};
use crate::discover::gate::{ScanWait, scan_gate};
use crate::discover::{ScanReport, scan_source};
use crate::error::Error;
use crate::model::{StateName, Timestamp};
use crate::policy::{Conditions, Decision, Network, Overrides, decide};
use crate::scheduler::{
    DrainReport, Limits, MeteredUse, Mode, QUEUE_WINDOW, RunObserver, Settings, drain, open_targets, upload_window,
};

/// Progress of a whole backup run.
pub trait BackupObserver: RunObserver {
    /// Called as a scan proceeds with its running tally.
    fn scanning(&self, _report: &ScanReport) {}
    /// Every source has been scanned.
    fn scan_finished(&self) {}
}

/// Everything a backup run did and left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Runs one backup. Sources are scanned on a blocking thread with its own
/// catalog connection while uploads of what it finds already run, so reading
/// and hashing overlap with copying. When the conditions policy holds work
/// back (battery, metered link, outside the window; `overrides` lift some of
/// that), the scan still runs and every job is left queued with the reason.
/// `shutdown` interrupts both cleanly.
pub async fn run(
    config: &Config,
    catalog: &mut Catalog,
    overrides: Overrides,
    observer: Arc<dyn BackupObserver>,
    shutdown: impl Future<Output = ()>,
) -> Result<BackupOutcome, Error> {
    let now = Timestamp::now();
    let recovered = catalog.recover(now)?;
    if recovered > 0 {
        tracing::info!(recovered, "resumed jobs an earlier run left running");
    }
    let targets = open_targets(catalog, config)?;
    catalog.requeue_due(now)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (found, discovery) = mpsc::channel(1);
    let (gate, wait) = scan_gate();
    let scanner = {
        let (sources, path, stop, observer) =
            (config.sources.clone(), config.catalog_path(), Arc::clone(&stop), Arc::clone(&observer));
        tokio::task::spawn_blocking(move || scan_all(&sources, &path, &stop, observer.as_ref(), &found, &wait))
    };

    let conditions = crate::conditions::read(&config.policy.probe).await;
    let hold = match decide(&conditions, &config.policy.rules, overrides) {
        Decision::Run => None,
        Decision::HoldOff(reason) => {
            tracing::info!("holding uploads: {reason}");
            Some(reason)
        }
    };
    let run_observer: Arc<dyn RunObserver> = observer.clone();
    let settings = Settings {
        retry: config.retry,
        max_concurrent: config.max_concurrent,
        mode: Mode::OneShot,
        order: config.order,
        budget: config.policy.budget,
        queue_window: QUEUE_WINDOW,
    };
    let bandwidth = config.policy.bandwidth.limit_at(conditions.minute_of_day);
    let window =
        upload_window(&config.policy.rules.windows, Timestamp::now()).filter(|_| !overrides.ignore_power_and_window);
    let metered = metered_use(&config.policy, &conditions, overrides, None).await;
    let limits = Limits { hold, bandwidth, window, metered };
    let drained = drain(catalog, &targets, settings, run_observer, Some((discovery, gate)), limits, shutdown).await;
    // Interrupted or failed: stop the scan too, then report the first error.
    stop.store(true, Ordering::Relaxed);
    let scans = scanner.await.map_err(|e| Error::Runtime(std::io::Error::other(e)))?;
    let drained = drained?;
    let scans = scans?;

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

/// The metered network uploads would run on, when a data budget is set
/// and the link is metered: its budget binds them unless `--allow-metered`
/// lifts it (what that run sends is counted all the same). When the system
/// cannot name the network for a moment, the one it named before
/// (`previous`) is kept, so a failed look-up never opens a fresh budget.
pub async fn metered_use(
    policy: &PolicyConfig,
    conditions: &Conditions,
    overrides: Overrides,
    previous: Option<&MeteredUse>,
) -> Option<MeteredUse> {
    policy.budget?;
    if !matches!(conditions.network, Network::Metered { .. }) {
        return None;
    }
    let link = match crate::conditions::metered_link().await {
        Some(link) => link,
        None => previous.map_or_else(|| crate::conditions::fallback_link(&policy.probe), |p| p.link.clone()),
    };
    Some(MeteredUse { link, enforce: !overrides.allow_metered })
}

/// Scans every source on its own catalog connection, telling the upload
/// loop through `found` whenever the catalog changed (new jobs, new stats),
/// and waiting at `wait` while the uploads have enough to do.
fn scan_all(
    sources: &[SourceConfig],
    catalog_path: &Path,
    stop: &AtomicBool,
    observer: &dyn BackupObserver,
    found: &mpsc::Sender<()>,
    wait: &ScanWait,
) -> Result<Vec<ScanReport>, Error> {
    let mut catalog = Catalog::open(catalog_path)?;
    let mut reports = Vec::with_capacity(sources.len());
    for source in sources {
        let report = scan_source(&mut catalog, source, None, false, stop, &mut |report, written| {
            observer.scanning(report);
            if written > 0 {
                // A full channel already holds a wake-up; one is enough.
                let _ = found.try_send(());
                wait.wait();
            }
        })?;
        tracing::info!(source = %source.path.display(), media = report.media_files, new = report.new_versions, "scanned");
        reports.push(report);
    }
    observer.scan_finished();
    Ok(reports)
}
