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
    scheduler.into_report()
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::scheduler::Hold;
    use crate::scheduler::testing::{Told, library};

    /// A first scan on battery queues the whole library, and nothing of it
    /// may start: the held run counts it in the catalog and loads none of it
    /// (loaded, 100,000 photos took 100 MiB and most of a rescan's time).
    #[test]
    fn a_held_run_counts_the_queue_without_loading_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut catalog, targets, settings) = library(dir.path(), 3, &["nas"], &[]);
        let settings = Settings { max_concurrent: 2, ..settings };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

        let loaded = Arc::new(Told::default());
        let hold = Some(HoldReason::OnBattery { percent: Some(41), ups: false });
        let limits = Limits { hold, ..Limits::default() };
        let observer: Arc<dyn RunObserver> = Arc::clone(&loaded) as _;
        let report = runtime
            .block_on(drain(&mut catalog, &targets, settings, observer, None, limits, std::future::pending()))
            .expect("held run");
        let expected = Hold { destination: "nas".into(), reason: "on battery (41%)".into(), jobs: 3 };
        assert_eq!(report.holds, [expected]);
        assert_eq!(loaded.0.load(Ordering::Relaxed), 0, "nothing was loaded");

        let observer: Arc<dyn RunObserver> = Arc::clone(&loaded) as _;
        runtime
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
        assert_eq!(loaded.0.load(Ordering::Relaxed), 3, "loaded once uploads may run");
    }
}
