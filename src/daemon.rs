//! `photosync daemon`: wires discovery, the scheduler and the control
//! socket together, and owns start-up recovery, reload and shutdown.
//!
//! Start-up: take the state directory's lock (a second daemon, or a
//! `backup` run, is refused), bind the socket (replacing a stale one),
//! return every `running` job to `queued`, then run discovery and the
//! scheduler until shutdown. A reload (SIGHUP) stops both cleanly, re-reads
//! the config and starts them again; the socket stays up throughout and
//! answers "unavailable" for the moment in between. Shutdown stops uploads
//! at a chunk boundary, requeues them uncharged, and removes the socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{RwLock, mpsc, oneshot};

use crate::backup::BackupOutcome;
use crate::catalog::{Catalog, JobFilter, RunLock};
use crate::conditions;
use crate::config::{Config, PolicyConfig};
use crate::discover::watch::{Discovery, WatchSettings};
use crate::error::Error;
use crate::ipc::protocol::{DaemonStatus, ErrorCode, ProtocolError, Request, Response};
use crate::ipc::server::{self, Handler};
use crate::ipc::{runtime_dir, socket_path};
use crate::model::{JobId, StateName, Timestamp};
use crate::policy::{Conditions, Hysteresis, Overrides, decide};
use crate::scheduler::{Command, DrainReport, Mode, Scheduler, SchedulerStatus, Settings, Silent, open_targets};

/// Runs the daemon until `shutdown` completes. Each message on `reload`
/// re-reads the config from `config_path`. `ready` is called once the socket
/// answers (for systemd's `Type=notify`).
pub async fn run(
    config_path: &Path,
    mut config: Config,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
    ready: impl FnOnce(&Path),
) -> Result<(), Error> {
    let _lock = RunLock::acquire(&config.state_dir)?;
    raise_open_file_limit();
    let socket = socket_path(&runtime_dir(config.runtime_dir.as_deref(), &config.state_dir));
    let listener = server::bind(&socket).map_err(|e| Error::Socket(e.to_string()))?;
    let catalog_path = config.catalog_path();
    let mut catalog = Catalog::open(&catalog_path)?;
    let recovered = catalog.recover(Timestamp::now())?;
    if recovered > 0 {
        tracing::info!(recovered, "resumed jobs left running by the last run");
    }

    let service = Arc::new(Service { handles: RwLock::new(None), catalog_path, started_at: Timestamp::now() });
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, service.clone(), async {
        let _ = server_stopped.await;
    }));
    ready(&socket);
    tracing::info!(socket = %socket.display(), "photosync daemon started");

    tokio::pin!(shutdown);
    let result = loop {
        let mut reloading = false;
        let stop = async {
            tokio::select! {
                () = &mut shutdown => {}
                Some(()) = reload.recv() => reloading = true,
            }
        };
        if let Err(e) = serve_config(&config, &mut catalog, &service, stop).await {
            break Err(e);
        }
        if !reloading {
            break Ok(());
        }
        match Config::load(config_path) {
            Ok(new) => {
                if new.state_dir != config.state_dir || new.runtime_dir != config.runtime_dir {
                    tracing::warn!("state_dir and runtime_dir changes take effect after a restart");
                }
                tracing::info!(config = %config_path.display(), "configuration reloaded");
                config = Config { state_dir: config.state_dir, runtime_dir: config.runtime_dir, ..new };
            }
            Err(e) => tracing::error!("configuration not reloaded, keeping the running one: {e}"),
        }
    };

    let _ = stop_server.send(());
    let _ = server.await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("photosync daemon stopped");
    result
}

/// Runs discovery and the scheduler for one configuration until `stop`.
async fn serve_config(
    config: &Config,
    catalog: &mut Catalog,
    service: &Service,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let targets = open_targets(catalog, &config.destinations)?;
    let (found, discovered) = mpsc::channel(1);
    let settings = WatchSettings { settle: config.settle, rescan_interval: config.rescan_interval };
    let discovery = Arc::new(Discovery::start(config.sources.clone(), &service.catalog_path, settings, found)?);
    let (commands, inbox) = mpsc::channel(32);
    *service.handles.write().await = Some(Handles { commands: commands.clone(), discovery: Arc::clone(&discovery) });

    let settings = Settings { retry: config.retry, max_concurrent: config.max_concurrent, mode: Mode::Service };
    let mut scheduler = Scheduler::new(catalog, &targets, settings, Arc::new(Silent));
    // Know the conditions before the first upload starts.
    let first = conditions::read(&config.policy.probe).await;
    scheduler.apply_conditions(decide(&first, &config.policy.rules, Overrides::default()));
    scheduler.set_bandwidth(config.policy.bandwidth.limit_at(first.minute_of_day));
    let conditions = tokio::spawn(watch_conditions(config.policy.clone(), first, commands.clone()));
    let result = scheduler.run(Some(discovered), Some(inbox), stop).await;
    conditions.abort();
    *service.handles.write().await = None;
    drop(scheduler);
    drop(discovery);
    Ok(result?)
}

/// Reads the conditions every `poll_interval` and tells the scheduler when
/// the policy's verdict changes (holds at once, resumes only after the
/// hysteresis time of good conditions) or the bandwidth timetable crosses a
/// boundary.
/// `first` is the reading the scheduler started with.
async fn watch_conditions(policy: PolicyConfig, first: Conditions, commands: mpsc::Sender<Command>) {
    let start = tokio::time::Instant::now();
    let hysteresis = policy.rules.hysteresis;
    let mut sent = decide(&first, &policy.rules, Overrides::default());
    let mut state = Hysteresis::new(sent.clone());
    let mut rate = policy.bandwidth.limit_at(first.minute_of_day);
    // Announced changes (system bus signals, Darwin notifications) wake the loop at once; polling covers the rest.
    let mut changes = conditions::changes().await;
    loop {
        let pending = state.pending_until(hysteresis).map(|at| at.saturating_sub(start.elapsed()));
        let wait = pending.map_or(policy.poll_interval, |p| p.min(policy.poll_interval));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            event = next_change(&mut changes) => {
                if event.is_none() {
                    changes = None;
                }
            }
        }
        let conditions = conditions::read(&policy.probe).await;
        let limit = policy.bandwidth.limit_at(conditions.minute_of_day);
        if limit != rate {
            rate = limit;
            if commands.send(Command::Bandwidth(rate)).await.is_err() {
                return;
            }
        }
        let raw = decide(&conditions, &policy.rules, Overrides::default());
        let effective = state.update(raw, start.elapsed(), hysteresis).clone();
        if effective != sent {
            if commands.send(Command::Conditions(effective.clone())).await.is_err() {
                return;
            }
            sent = effective;
        }
    }
}

async fn next_change(changes: &mut Option<impl futures_util::Stream<Item = ()> + Unpin>) -> Option<()> {
    use futures_util::StreamExt as _;
    match changes {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Lets the daemon open as many files as its hard limit allows (up to
/// 65,536): control connections, catalog connections and the files being
/// read and uploaded all need one.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(65_536);
    if limit.current.is_some_and(|current| current < wanted) {
        let raised = Rlimit { current: Some(wanted), maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the open file limit: {e}");
        }
    }
}

/// Tells systemd (`Type=notify`) about the daemon's state, when started by it.
pub fn notify_service_manager(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return,
        None => socket.send_to(state.as_bytes(), PathBuf::from(&path)),
    };
    if let Err(e) = sent {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

#[derive(Clone)]
struct Handles {
    commands: mpsc::Sender<Command>,
    discovery: Arc<Discovery>,
}

/// The control socket's handler: one method per request.
struct Service {
    handles: RwLock<Option<Handles>>,
    catalog_path: PathBuf,
    started_at: Timestamp,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ProtocolError::new(code, message))
}

#[async_trait]
impl Handler for Service {
    async fn handle(&self, request: Request) -> Response {
        let Some(handles) = self.handles.read().await.clone() else {
            return refused(ErrorCode::Unavailable, "the daemon is reloading its configuration; try again");
        };
        let result = match request {
            Request::Hello { .. } => Err(ProtocolError::new(ErrorCode::BadRequest, "hello was already exchanged")),
            Request::Status => self.status(&handles).await,
            Request::Pause { until } => {
                ask(&handles, |reply| Command::Pause { until, reply }).await.map(|()| Response::Done)
            }
            Request::Resume => ask(&handles, Command::Resume).await.map(|()| Response::Done),
            Request::Retry { jobs } => retry(&handles, jobs).await,
            Request::Scan => scan(&handles).await.map(|scans| Response::Scanned { scans }),
            Request::Jobs { state } => self.jobs(state).await,
            Request::Backup => self.backup(&handles).await,
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
            scheduler,
        })))
    }

    async fn jobs(&self, state: Option<StateName>) -> Result<Response, ProtocolError> {
        let jobs = self.read(move |c| c.list(JobFilter { state, active_only: false })).await?;
        Ok(Response::Jobs { jobs })
    }

    /// Scans, waits for the queue to drain (or be held), and reports what
    /// happened since the request arrived.
    async fn backup(&self, handles: &Handles) -> Result<Response, ProtocolError> {
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
        Ok(Response::Backup(Box::new(BackupOutcome { recovered: 0, scans, drain, counts, failed, retry_wait })))
    }
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
