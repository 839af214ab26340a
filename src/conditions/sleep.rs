//! Sleep on Linux, through logind (`org.freedesktop.login1.Manager` on
//! the system bus; systemd's "Inhibitor Locks" document): while uploads are
//! in flight photosync holds a *delay* inhibitor on sleep, so that when
//! logind announces `PrepareForSleep(true)` there is time to stop them at a
//! chunk boundary, with their progress kept and no attempt charged. The
//! lock is released as soon as the uploads have stopped, and at the latest
//! after half of logind's `InhibitDelayMaxUSec`; it is never a *block*
//! lock, and never held while idle. `PrepareForSleep(false)` reports the
//! wake. Without logind (a container, a server without a system bus) there
//! is nothing to watch: that is said once, at debug level.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zbus::zvariant::OwnedFd;
use zbus::{Connection, Proxy};

/// What happened around a system sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepEvent {
    /// The system is about to sleep.
    Sleeping,
    /// It has woken.
    Woke,
}

/// logind's default `InhibitDelayMaxUSec` (5 s), when it does not say.
const DEFAULT_DELAY: Duration = Duration::from_secs(5);

const SERVICE: &str = "org.freedesktop.login1";
const PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

/// How long after a sleep was announced, in time the machine was awake
/// (the monotonic clock stops while it sleeps), the wake is taken as
/// lost and assumed: nothing stays held forever on a missed signal.
const WAKE_LOST: Duration = Duration::from_mins(5);

/// Watches logind on the system bus until `uploading` closes: holds the
/// delay inhibitor while it says uploads are in flight, and sends each
/// sleep and wake to `events`.
pub async fn guard(uploading: watch::Receiver<bool>, events: mpsc::Sender<SleepEvent>) {
    if let Ok(Ok(bus)) = tokio::time::timeout(Duration::from_secs(2), Connection::system()).await {
        guard_on(&bus, uploading, events).await;
    } else {
        tracing::debug!("no system bus: uploads are not stopped before a sleep");
    }
}

/// [`guard`] with logind on `bus`.
pub async fn guard_on(bus: &Connection, mut uploading: watch::Receiver<bool>, events: mpsc::Sender<SleepEvent>) {
    let Some((proxy, mut signals)) = connect(bus).await else {
        tracing::debug!("no logind on the system bus: uploads are not stopped before a sleep");
        return;
    };
    let delay = proxy.get_property::<u64>("InhibitDelayMaxUSec").await.map_or(DEFAULT_DELAY, Duration::from_micros);
    let mut lock: Option<OwnedFd> = None;
    // Set from a sleep's announcement until its wake: no new lock is
    // taken, and the one held goes once the uploads have stopped, at the
    // latest by `release_by`.
    let mut sleeping: Option<Instant> = None;
    let mut release_by: Option<Instant> = None;
    loop {
        let busy = *uploading.borrow();
        if busy && sleeping.is_none() && lock.is_none() {
            lock = inhibit(&proxy).await;
        } else if !busy && lock.is_some() {
            lock = None;
            release_by = None;
        }
        let deadline = release_by.filter(|_| lock.is_some());
        let event = tokio::select! {
            changed = uploading.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            signal = signals.next() => {
                let Some(message) = signal else { return };
                let Ok(starting) = message.body().deserialize::<bool>() else { continue };
                if starting {
                    tracing::info!("the system is going to sleep");
                    release_by = lock.is_some().then(|| Instant::now() + delay / 2);
                    SleepEvent::Sleeping
                } else {
                    tracing::info!("the system woke");
                    release_by = None;
                    SleepEvent::Woke
                }
            }
            () = sleep_until(deadline) => {
                tracing::warn!("uploads did not stop within half of logind's sleep delay; letting the system sleep");
                lock = None;
                release_by = None;
                continue;
            }
            () = sleep_until(sleeping.map(|since| since + WAKE_LOST)) => {
                tracing::warn!("no wake was announced after a sleep; carrying on as awake");
                release_by = None;
                SleepEvent::Woke
            }
        };
        sleeping = (event == SleepEvent::Sleeping).then(Instant::now);
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connect(bus: &Connection) -> Option<(Proxy<'static>, zbus::proxy::SignalStream<'static>)> {
    let proxy = Proxy::new(bus, SERVICE, PATH, MANAGER).await.ok()?;
    let signals = proxy.receive_signal("PrepareForSleep").await.ok()?;
    Some((proxy, signals))
}

/// Takes a delay inhibitor on sleep; `None` (said at debug level) when
/// logind refuses.
async fn inhibit(proxy: &Proxy<'_>) -> Option<OwnedFd> {
    let why = "uploading photos: they are stopped cleanly first";
    match proxy.call::<_, _, OwnedFd>("Inhibit", &("sleep", "photosync", why, "delay")).await {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!("logind refused a sleep inhibitor: {e}");
            None
        }
    }
}
