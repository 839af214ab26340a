//! `photosync backup`'s run of the scheduler: everything it may upload
//! now, under the conditions as they were when it started.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{DrainReport, MeteredUse, Mode, RunObserver, Scheduler, Settings, Target, UploadWindow};
use crate::catalog::{Catalog, CatalogError};
use crate::discover::gate::ScanGate;
use crate::policy::{Decision, HoldReason};

/// Runs every queued job at `targets` until none is left that this run may
/// do, or until `shutdown` completes (running jobs then return to `queued`,
/// uncharged). While `discovery` is open, each message on it means "the
/// catalog changed": new jobs are loaded and join the run, which ends only
/// once the channel is closed and the work is done; its gate holds the scan
/// back while the queue is full of jobs waiting for running uploads.
/// A `hold` from the conditions policy holds every job for the whole run;
/// `bandwidth` limits all uploads together (bytes per second); a file that
/// cannot finish before the allowed `window` ends waits for the next one.
#[allow(clippy::too_many_arguments)] // the one-shot run's resources, each distinct
pub async fn drain(
    catalog: &mut Catalog,
    targets: &[Target],
    settings: Settings,
    observer: Arc<dyn RunObserver>,
    discovery: Option<(mpsc::Receiver<()>, ScanGate)>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<DrainReport, CatalogError> {
    let settings = Settings { mode: Mode::OneShot, ..settings };
    let mut scheduler = Scheduler::new(catalog, targets, settings, observer);
    let discovery = discovery.map(|(found, gate)| {
        scheduler.gate_scan(gate);
        found
    });
    scheduler.apply_conditions(limits.hold.map_or(Decision::Run, Decision::HoldOff));
    scheduler.set_bandwidth(limits.bandwidth);
    scheduler.set_window(limits.window);
    scheduler.set_metered(limits.metered)?;
    scheduler.run(discovery, None, shutdown).await?;
    Ok(scheduler.into_report())
}

/// What a one-shot run may do, as the conditions are when it starts.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Why uploads are held, if they are.
    pub hold: Option<HoldReason>,
    /// The upload rate limit (bytes per second).
    pub bandwidth: Option<u64>,
    /// The allowed window uploads are in.
    pub window: Option<UploadWindow>,
    /// The metered network uploads run on, with a data budget.
    pub metered: Option<MeteredUse>,
}
