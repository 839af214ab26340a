//! Talking to a running daemon from the CLI.

use std::future::Future;

use anyhow::Context as _;

use photosync::config::Config;
use photosync::ipc::client::{Client, ClientError};
use photosync::ipc::protocol::{Request, Response};
use photosync::ipc::{runtime_dir, socket_path};

/// Runs `future` on a small runtime (the CLI is otherwise synchronous).
pub fn block_on<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Sends one request to the daemon. `Ok(None)` when no daemon is running.
pub fn ask(config: &Config, request: &Request) -> anyhow::Result<Option<Response>> {
    let socket = socket_path(&runtime_dir(config.runtime_dir.as_deref(), &config.state_dir));
    let answer = block_on(async {
        let mut client = Client::connect(&socket).await?;
        client.request(request).await
    })?;
    match answer {
        Ok(response) => Ok(Some(response)),
        Err(ClientError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Like [`ask`], but a missing daemon is an error (exit code 3).
pub fn require(config: &Config, request: &Request) -> anyhow::Result<Response> {
    let socket = socket_path(&runtime_dir(config.runtime_dir.as_deref(), &config.state_dir));
    ask(config, request)?.ok_or_else(|| ClientError::NotRunning(socket).into())
}

/// An answer of the wrong kind.
pub fn unexpected(response: &Response) -> anyhow::Error {
    anyhow::Error::new(ClientError::Unexpected(format!("{response:?}")))
}
