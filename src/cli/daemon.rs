//! `photosync daemon`: run in the foreground until SIGTERM or SIGINT;
//! SIGHUP reloads the config.

use std::path::Path;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Exit;
use photosync::config::Config;
use photosync::daemon;

/// Arguments of `photosync daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config_path: &Path, config: Config, _args: &Args) -> anyhow::Result<Exit> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let (reload, reloads) = mpsc::channel(1);
        let forward_hangups = tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = reload.try_send(());
            }
        });
        let shutdown = async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            daemon::notify_service_manager("STOPPING=1");
        };
        let ready = |_: &Path| daemon::notify_service_manager("READY=1");
        let result = daemon::run(config_path, config, shutdown, reloads, ready).await;
        forward_hangups.abort();
        anyhow::Ok(result?)
    })?;
    Ok(Exit::Done)
}
