//! The control socket's handler: one method per request, each asking the
//! scheduler or discovery through [`Handles`], or reading the catalog
//! read-only. While the scheduler is not running (a reload, or a catalog
//! failure being waited out) requests are answered "unavailable", saying why.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::{RwLock, mpsc, oneshot, watch};

use super::wire;
use crate::backup::BackupOutcome;
use crate::catalog::{Catalog, JobFilter};
use crate::conditions;
use crate::config::PolicyConfig;
use crate::discover::watch::Discovery;
use crate::ipc::protocol::{DaemonStatus, ErrorCode, ProtocolError, Request, Response};
use crate::ipc::server::Handler;
use crate::model::{JobId, StateName, Timestamp};
use crate::policy::{Overrides, decide};
use crate::scheduler::{Command, DrainReport, SchedulerStatus, Target};
use crate::verify::{self, VerifyOptions};

use std::sync::Arc;

/// What requests reach while a configuration runs.
#[derive(Clone)]
pub struct Handles {
    /// The scheduler's command channel.
    pub commands: mpsc::Sender<Command>,
    /// Discovery, for scans and its state.
    pub discovery: Arc<Discovery>,
    /// The running `[policy]`, for conditions read on request.
    pub policy: PolicyConfig,
    /// Overrides in force (`backup --now`), shared with the conditions watcher.
    pub overrides: Arc<watch::Sender<Overrides>>,
    /// The destinations, for `verify`.
    pub targets: Vec<Target>,
    /// The sources, for `why`.
    pub sources: Vec<crate::config::SourceConfig>,
    /// Until when idle sleep is held off while uploading (`keep_awake`).
    pub keeping_awake: watch::Receiver<Option<Timestamp>>,
}

/// The control socket's handler: one method per request.
pub struct Service {
    /// Set while a configuration runs.
    pub handles: RwLock<Option<Handles>>,
    /// Why requests cannot be served now, when it is not a reload.
    pub trouble: Mutex<Option<String>>,
    /// The catalog, for read-only listings.
    pub catalog_path: PathBuf,
    /// When the daemon started.
    pub started_at: Timestamp,
}

impl Service {
    /// A handler for the catalog at `catalog_path`, nothing running yet.
    pub fn new(catalog_path: PathBuf) -> Service {
        Service { handles: RwLock::new(None), trouble: Mutex::new(None), catalog_path, started_at: Timestamp::now() }
    }

    /// Records (or clears) why requests cannot be served now.
    pub fn set_trouble(&self, trouble: Option<String>) {
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = trouble;
    }
}

pub(super) fn refused(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ProtocolError::new(code, message))
}

#[async_trait]
impl Handler for Service {
    async fn handle(&self, request: Request) -> Response {
        let Some(handles) = self.handles.read().await.clone() else {
            let trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let why = trouble.unwrap_or_else(|| "the daemon is reloading its configuration; try again".into());
            return refused(ErrorCode::Unavailable, why);
        };
        let result = match request {
            Request::Hello { .. } => Err(ProtocolError::new(ErrorCode::BadRequest, "hello was already exchanged")),
            Request::Status => self.status(&handles).await,
            Request::Pause { until } => {
                ask(&handles, |reply| Command::Pause { until, reply }).await.map(|()| Response::Done)
            }
            Request::Resume => ask(&handles, Command::Resume).await.map(|()| Response::Done),
            Request::SignedIn { destination } => {
                ask(&handles, |reply| Command::SignedIn { destination, reply }).await.map(|()| Response::Done)
            }
            Request::Retry { jobs } => retry(&handles, jobs).await,
            Request::Scan => {
                scan(&handles).await.map(|scans| Response::Scanned { scans: scans.iter().map(wire::scan).collect() })
            }
            Request::Jobs { state } => self.jobs(state).await,
            Request::Verify { options, repair } => self.verify(&handles, options, repair).await,
            Request::Backup { now, allow_metered } => {
                let overrides = Overrides { ignore_power_and_window: now, allow_metered };
                self.backup(&handles, overrides).await
            }
            Request::Why { paths } => self.why(&handles, paths).await,
        };
        result.unwrap_or_else(Response::Error)
    }
}

/// Sends a command to the scheduler and waits for its reply.
async fn ask<T>(handles: &Handles, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ProtocolError> {
    let gone = || ProtocolError::new(ErrorCode::Unavailable, "the scheduler is stopping");
    let (reply, answer) = oneshot::channel();
    handles.commands.send(command(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

async fn scan(handles: &Handles) -> Result<Vec<crate::discover::ScanReport>, ProtocolError> {
    handles.discovery.scan_now().await.map_err(|e| ProtocolError::new(ErrorCode::Internal, e))
}

async fn retry(handles: &Handles, jobs: Vec<JobId>) -> Result<Response, ProtocolError> {
    let results = ask(handles, |reply| Command::Retry { jobs, reply })
        .await?
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, e))?;
    let (mut queued, mut refused) = (Vec::new(), Vec::new());
    for result in results {
        match result {
            Ok(id) => queued.push(id),
            Err(reason) => refused.push(reason),
        }
    }
    Ok(Response::Retried { queued, refused })
}

impl Service {
    async fn why(&self, handles: &Handles, paths: Vec<std::path::PathBuf>) -> Result<Response, ProtocolError> {
        let sources = handles.sources.clone();
        let answers: Vec<crate::why::Answer> =
            self.read(move |c| paths.iter().map(|p| crate::why::answer(&sources, Some(c), p)).collect()).await?;
        Ok(Response::Why { answers: answers.iter().map(wire::why).collect() })
    }

    /// Runs a read-only catalog query off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Catalog) -> Result<T, crate::catalog::CatalogError> + Send + 'static,
    ) -> Result<T, ProtocolError> {
        let path = self.catalog_path.clone();
        let internal = |e: String| ProtocolError::new(ErrorCode::Internal, e);
        tokio::task::spawn_blocking(move || match Catalog::open_read_only(&path)? {
            Some(catalog) => query(&catalog).map(Some),
            None => Ok(None),
        })
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?
        .ok_or_else(|| internal("the catalog is missing".into()))
    }

    async fn status(&self, handles: &Handles) -> Result<Response, ProtocolError> {
        let scheduler: SchedulerStatus = ask(handles, Command::Status).await?;
        let (state, reason) = describe(&scheduler);
        let discovery = handles.discovery.state();
        Ok(Response::Status(Box::new(DaemonStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            state,
            reason,
            scanning: discovery.scanning(),
            watching: discovery.watching(),
            last_scan: discovery.last_scan(),
            skipped: discovery.left_out().map(|l| wire::skipped(&l.skipped, l.unreadable, l.unsettled)),
            scheduler: wire::scheduler(&scheduler),
            keeping_awake_until: *handles.keeping_awake.borrow(),
        })))
    }

    async fn jobs(&self, state: Option<StateName>) -> Result<Response, ProtocolError> {
        let jobs = self.read(move |c| c.list(JobFilter { state, active_only: false })).await?;
        Ok(Response::Jobs { jobs: jobs.iter().map(wire::job).collect() })
    }

    /// Checks the receipts at the destinations asked for; with `repair`,
    /// has the scheduler queue what is missing or corrupt again.
    async fn verify(&self, handles: &Handles, options: VerifyOptions, repair: bool) -> Result<Response, ProtocolError> {
        let targets =
            verify::chosen(&handles.targets, &options).map_err(|e| ProtocolError::new(ErrorCode::Invalid, e))?;
        let ids: Vec<_> = targets.iter().map(|t| t.id).collect();
        let receipts = self.read(move |c| c.receipts(&ids)).await?;
        let mut report = verify::verify(receipts, &targets, &options, &verify::Quiet).await;
        if repair && report.found_damage() {
            let jobs = report.broken_jobs();
            report.repaired = ask(handles, |reply| Command::Repair { jobs, reply })
                .await?
                .map_err(|e| ProtocolError::new(ErrorCode::Internal, e))?;
        }
        Ok(Response::Verified(Box::new(report)))
    }

    /// Scans, waits for the queue to drain (or be held), and reports what
    /// happened since the request arrived. `overrides` (`--now`,
    /// `--allow-metered`) lift holds for as long as the backup runs.
    async fn backup(&self, handles: &Handles, overrides: Overrides) -> Result<Response, ProtocolError> {
        let lifted = overrides != Overrides::default();
        if lifted {
            set_overrides(handles, overrides).await?;
        }
        let result = self.drain(handles).await;
        if lifted {
            set_overrides(handles, Overrides::default()).await?;
        }
        result
    }

    async fn drain(&self, handles: &Handles) -> Result<Response, ProtocolError> {
        let before: SchedulerStatus = ask(handles, Command::Status).await?;
        let scans = scan(handles).await?;
        let after: DrainReport = ask(handles, Command::WaitIdle).await?;
        let drain = DrainReport {
            uploaded: after.uploaded - before.totals.uploaded,
            already_present: after.already_present - before.totals.already_present,
            bytes_uploaded: after.bytes_uploaded - before.totals.bytes_uploaded,
            cancelled: after.cancelled - before.totals.cancelled,
            retries: after.retries - before.totals.retries,
            failed: after.failed - before.totals.failed,
            holds: after.holds,
            interrupted: false,
        };
        let only = |state| JobFilter { state: Some(state), active_only: true };
        let (counts, failed, retry_wait) = self
            .read(move |c| Ok((c.counts()?, c.list(only(StateName::Failed))?, c.list(only(StateName::RetryWait))?)))
            .await?;
        let outcome = BackupOutcome { recovered: 0, scans, drain, counts, failed, retry_wait };
        Ok(Response::Backup(Box::new(wire::backup(&outcome))))
    }
}

/// Puts `overrides` in force: the conditions watcher decides with them
/// from now on, and the scheduler hears the verdict (and whether a data
/// budget binds) before anything it is asked next (commands are handled in
/// order).
async fn set_overrides(handles: &Handles, overrides: Overrides) -> Result<(), ProtocolError> {
    handles.overrides.send_replace(overrides);
    let now = conditions::read(&handles.policy.probe).await;
    let decision = decide(&now, &handles.policy.rules, overrides);
    let gone = || ProtocolError::new(ErrorCode::Unavailable, "the scheduler is stopping");
    // Whether the data budget binds this backup (`--allow-metered` lifts it).
    let metered = crate::backup::metered_use(&handles.policy, &now, overrides, None).await;
    handles.commands.send(Command::Metered(metered)).await.map_err(|_| gone())?;
    handles.commands.send(Command::Conditions(decision)).await.map_err(|_| gone())
}

/// The one-word state and its reason, as `status` shows them.
fn describe(status: &SchedulerStatus) -> (String, Option<String>) {
    if let Some(pause) = status.paused {
        let until = pause.until.map_or_else(|| " until resumed".to_owned(), |t| format!(" until {}", t.to_rfc3339()));
        return ("paused".into(), Some(format!("paused by user{until}")));
    }
    if let Some(reason) = &status.held_by {
        return ("holding".into(), Some(reason.clone()));
    }
    if !status.holds.is_empty() {
        let reasons: Vec<String> = status.holds.iter().map(|h| format!("{}: {}", h.destination, h.reason)).collect();
        return ("holding".into(), Some(reasons.join("; ")));
    }
    if status.uploads.is_empty() { ("idle".into(), None) } else { ("uploading".into(), None) }
}
