//! Staying awake while uploading (`keep_awake = "while-uploading"`, off by
//! default): on mains power, while uploads run, *idle* sleep is held off,
//! for at most `keep_awake_max` in one go. Closing the lid or asking for
//! sleep is never held off: on Linux the lock is logind's `idle` inhibitor
//! (systemd's "Inhibitor Locks" document: `idle` covers only the automatic
//! sleep of an idle system), on macOS `caffeinate -i -w PID` (caffeinate(8):
//! `-i` prevents idle sleep, `-w` ends it with the daemon).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::Timestamp;

/// Holds idle sleep off while `uploading` and `mains` both say so, for at
/// most `max` in one go (then not again until the uploads have stopped);
/// `held` tells until when it is held off (`None`: not held). Ends when
/// either channel closes.
pub async fn keep_awake(
    max: Duration,
    mut uploading: watch::Receiver<bool>,
    mut mains: watch::Receiver<bool>,
    held: watch::Sender<Option<Timestamp>>,
) {
    let mut lock: Option<Lock> = None;
    let mut until: Option<Instant> = None;
    let mut spent = false;
    loop {
        let busy = *uploading.borrow();
        spent &= busy;
        let wanted = busy && *mains.borrow() && !spent;
        if wanted && lock.is_none() {
            lock = Lock::take().await;
            if lock.is_some() {
                until = Some(Instant::now() + max);
                held.send_replace(Some(Timestamp::now().after(max)));
                tracing::info!("holding idle sleep off while uploading on mains power");
            }
        } else if !wanted && lock.is_some() {
            lock = None;
            until = None;
            held.send_replace(None);
            tracing::info!("no longer holding idle sleep off");
        }
        tokio::select! {
            changed = uploading.changed() => if changed.is_err() { return },
            changed = mains.changed() => if changed.is_err() { return },
            () = sleep_until(until) => {
                tracing::info!("held idle sleep off for {}: letting the system sleep when idle", humantime::format_duration(max));
                spent = true;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An idle-sleep lock; released when dropped.
struct Lock {
    #[cfg(not(target_os = "macos"))]
    _fd: zbus::zvariant::OwnedFd,
    #[cfg(target_os = "macos")]
    _caffeinate: tokio::process::Child,
}

impl Lock {
    /// Takes the lock; `None` (said once at debug level each time) when the
    /// system offers none.
    #[cfg(not(target_os = "macos"))]
    async fn take() -> Option<Lock> {
        let bus = tokio::time::timeout(Duration::from_secs(2), zbus::Connection::system()).await.ok()?.ok()?;
        let proxy = zbus::Proxy::new(
            &bus,
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
        )
        .await
        .ok()?;
        let why = "uploading photos on mains power";
        match proxy.call::<_, _, zbus::zvariant::OwnedFd>("Inhibit", &("idle", "photosync", why, "block")).await {
            Ok(fd) => Some(Lock { _fd: fd }),
            Err(e) => {
                tracing::debug!("logind refused an idle inhibitor: {e}");
                None
            }
        }
    }

    #[cfg(target_os = "macos")]
    #[expect(clippy::unused_async, reason = "the Linux lock is taken over D-Bus")]
    async fn take() -> Option<Lock> {
        let pid = std::process::id().to_string();
        let child = tokio::process::Command::new("/usr/bin/caffeinate")
            .args(["-i", "-w", &pid])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(child) => Some(Lock { _caffeinate: child }),
            Err(e) => {
                tracing::debug!("cannot run caffeinate: {e}");
                None
            }
        }
    }
}
