//! `photosync daemon`: wires discovery, the scheduler and the control
//! socket together, and owns start-up recovery, reload and shutdown.
//!
//! Start-up: take the state directory's lock (a second daemon, or a
//! `backup` run, is refused), bind the socket (replacing a stale one),
//! return every `running` job to `queued`, then run discovery and the
//! scheduler until shutdown. A reload (SIGHUP) stops both cleanly, re-reads
//! the config and starts them again, keeping a user's pause; the socket stays
//! up throughout and answers "unavailable" for the moment in between. A
//! catalog failure (busy, disk full, I/O error) does not end the daemon:
//! discovery and the scheduler stop as after a crash, and start again after
//! a backoff, recovering from the catalog as at start-up. Shutdown stops
//! uploads at a chunk boundary, requeues them uncharged, and removes the
//! socket. `service` answers the control socket.

mod service;
mod watcher;
pub mod wire;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use self::service::{Handles, Service};
use self::watcher::Watcher;
use crate::backup::metered_use;
use crate::catalog::{Catalog, RunLock};
use crate::conditions;
use crate::conditions::sleep::SleepEvent;
use crate::config::Config;
use crate::discover::watch::{Discovery, WatchSettings};
use crate::error::Error;
use crate::ipc::server;
use crate::ipc::{runtime_dir, socket_path};
use crate::model::Timestamp;
use crate::policy::{Overrides, Power, decide};
use crate::scheduler::{Command, Mode, Pause, QUEUE_WINDOW, Scheduler, Settings, Silent, open_targets, upload_window};

/// The first wait after a catalog failure; it doubles up to [`CATALOG_RETRY_CAP`].
const CATALOG_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between attempts to use a failing catalog.
const CATALOG_RETRY_CAP: Duration = Duration::from_mins(1);

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

    let service = Arc::new(Service::new(catalog_path.clone()));
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, service.clone(), async {
        let _ = server_stopped.await;
    }));
    ready(&socket);
    tracing::info!(socket = %socket.display(), "photosync daemon started");

    tokio::pin!(shutdown);
    // A user's pause outlives reloads and catalog failures.
    let mut pause: Option<Pause> = None;
    let mut backoff = CATALOG_RETRY;
    let result = loop {
        let mut reloading = false;
        let stop = async {
            tokio::select! {
                () = &mut shutdown => {}
                Some(()) = reload.recv() => reloading = true,
            }
        };
        match serve_config(&config, &mut catalog, &service, &mut pause, stop).await {
            Ok(()) => backoff = CATALOG_RETRY,
            Err(Error::Catalog(e)) => {
                let wait = humantime::format_duration(backoff);
                tracing::error!("the catalog failed: {e}; starting again in {wait}");
                service.set_trouble(Some(format!("the catalog failed ({e}); the daemon starts again in {wait}")));
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break Ok(()),
                }
                backoff = (backoff * 2).min(CATALOG_RETRY_CAP);
                // As after a crash: a fresh connection, running jobs back to the queue.
                match Catalog::open(&catalog_path).and_then(|mut c| c.recover(Timestamp::now()).map(|_| c)) {
                    Ok(reopened) => catalog = reopened,
                    Err(e) => tracing::error!("the catalog still fails: {e}"),
                }
                continue;
            }
            Err(e) => break Err(e),
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

/// Runs discovery and the scheduler for one configuration until `stop`,
/// starting with the user's `pause` and leaving it as the user left it.
async fn serve_config(
    config: &Config,
    catalog: &mut Catalog,
    service: &Service,
    pause: &mut Option<Pause>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let targets = open_targets(catalog, config)?;
    let (found, discovered) = mpsc::channel(1);
    let settings = WatchSettings { settle: config.settle, rescan_interval: config.rescan_interval };
    let discovery = Arc::new(Discovery::start(config.sources.clone(), &service.catalog_path, settings, found)?);
    let (commands, inbox) = mpsc::channel(32);
    let (overrides, overridden) = watch::channel(Overrides::default());
    let (keeping_awake, awake_until) = watch::channel(None);
    *service.handles.write().await = Some(Handles {
        keeping_awake: awake_until,
        commands: commands.clone(),
        discovery: Arc::clone(&discovery),
        policy: config.policy.clone(),
        overrides: Arc::new(overrides),
        targets: targets.clone(),
        sources: config.sources.clone(),
    });
    service.set_trouble(None);

    let settings = Settings {
        retry: config.retry,
        max_concurrent: config.max_concurrent,
        mode: Mode::Service,
        order: config.order,
        budget: config.policy.budget,
        queue_window: QUEUE_WINDOW,
    };
    let mut scheduler = Scheduler::new(catalog, &targets, settings, Arc::new(Silent));
    scheduler.restore_pause(*pause);
    // Know the conditions before the first upload starts.
    let first = conditions::read(&config.policy.probe).await;
    scheduler.apply_conditions(decide(&first, &config.policy.rules, Overrides::default()));
    scheduler.set_bandwidth(config.policy.bandwidth.limit_at(first.minute_of_day));
    scheduler.set_window(upload_window(&config.policy.rules.windows, Timestamp::now()));
    let metered = metered_use(&config.policy, &first, Overrides::default(), None).await;
    scheduler.set_metered(metered.clone())?;
    // Stop uploads cleanly before the system sleeps, and read the
    // conditions again when it wakes.
    let (uploading, uploading_seen) = watch::channel(false);
    scheduler.report_uploading(uploading);
    let (slept, sleep_events) = mpsc::channel(4);
    let (relayed, watcher_events) = mpsc::channel(4);
    #[cfg(target_os = "macos")]
    let power_state = {
        let program = std::path::Path::new("/usr/bin/notifyutil");
        tokio::spawn(conditions::macos::watch_power_state(program, slept.clone()))
    };
    let (mains, on_mains) = watch::channel(first.power == Power::External);
    let awake = config
        .policy
        .keep_awake
        .map(|max| tokio::spawn(conditions::awake::keep_awake(max, uploading_seen.clone(), on_mains, keeping_awake)));
    let sleep_guard = tokio::spawn(conditions::sleep::guard(uploading_seen, slept));
    let relay = tokio::spawn(relay_sleep(sleep_events, commands.clone(), relayed));
    let watcher = Watcher::new(config.policy.clone(), &first, metered, overridden, commands.clone(), mains);
    let conditions = tokio::spawn(watcher.run(Some(watcher_events)));
    let result = scheduler.run(Some(discovered), Some(inbox), stop).await;
    conditions.abort();
    relay.abort();
    if let Some(awake) = awake {
        awake.abort();
    }
    #[cfg(target_os = "macos")]
    power_state.abort();
    sleep_guard.abort();
    *service.handles.write().await = None;
    *pause = scheduler.pause();
    drop(scheduler);
    drop(discovery);
    Ok(result?)
}

/// Tells the scheduler of each sleep and wake straight away (a coming sleep
/// stops uploads even while the conditions watcher is busy reading, and
/// nothing but the wake lifts it), then the conditions watcher, which holds
/// after the wake until the conditions have held good for the hysteresis.
/// A guard that ends while the system sleeps counts as a wake.
async fn relay_sleep(
    mut events: mpsc::Receiver<SleepEvent>,
    commands: mpsc::Sender<Command>,
    watcher: mpsc::Sender<SleepEvent>,
) {
    let mut asleep = false;
    while let Some(event) = events.recv().await {
        asleep = event == SleepEvent::Sleeping;
        if commands.send(Command::Sleep(asleep)).await.is_err() || watcher.send(event).await.is_err() {
            return;
        }
    }
    if asleep {
        let _ = watcher.send(SleepEvent::Woke).await;
        let _ = commands.send(Command::Sleep(false)).await;
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
