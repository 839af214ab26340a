//! The daemon side of the control socket: binding safely, checking peers,
//! the hello, and one task per connection. What requests do is the
//! [`Handler`]'s business.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::framing::{FrameError, read_frame, write_frame};
use super::protocol::{ErrorCode, MAX_REQUEST, MAX_RESPONSE, ProtocolError, Request, Response, VERSION};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers requests. Called once per request, concurrently across connections.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one request (never a hello).
    async fn handle(&self, request: Request) -> Response;
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A daemon already answers on this socket.
    #[error("a photosync daemon is already running (it answers on {0})")]
    InUse(PathBuf),
    /// The runtime directory belongs to someone else.
    #[error("{0} belongs to another user; refusing to put the control socket there")]
    NotOurs(PathBuf),
    /// Anything else.
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Creates the socket at `path`: its directory 0700 and ours, the socket
/// 0600. A stale socket left by a crashed daemon is replaced; a live one is
/// an error.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io_error = |source| BindError::Io { path: path.to_owned(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
    let meta = std::fs::metadata(dir).map_err(io_error)?;
    if meta.uid() != rustix::process::getuid().as_raw() {
        return Err(BindError::NotOurs(dir.to_owned()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error)?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => return Err(BindError::InUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(io_error)?;
        }
        Err(e) => return Err(io_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    Ok(listener)
}

/// Accepts connections until `shutdown` completes.
pub async fn serve(listener: UnixListener, handler: Arc<dyn Handler>, shutdown: impl Future<Output = ()>) {
    let uid = rustix::process::getuid().as_raw();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, Arc::clone(&handler), uid));
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    connections.abort_all();
}

async fn reply_error(stream: &mut UnixStream, code: ErrorCode, message: impl Into<String>) {
    let response = Response::Error(ProtocolError::new(code, message));
    let _ = write_frame(stream, &response, MAX_RESPONSE).await;
}

/// The error a framing failure deserves, and whether the connection can go on.
fn frame_error(error: &FrameError) -> Option<(ErrorCode, String, bool)> {
    match error {
        FrameError::Closed | FrameError::Io(_) => None,
        FrameError::TooLarge { .. } => Some((ErrorCode::TooLarge, error.to_string(), false)),
        // The whole frame was read, so the stream is still in step.
        FrameError::Malformed(_) => Some((ErrorCode::BadRequest, error.to_string(), true)),
    }
}

async fn connection(mut stream: UnixStream, handler: Arc<dyn Handler>, uid: u32) {
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == uid => {}
        Ok(peer) => {
            tracing::warn!(peer_uid = peer.uid(), "refused a control connection from another user");
            return reply_error(&mut stream, ErrorCode::Forbidden, "this daemon belongs to another user").await;
        }
        Err(e) => {
            return reply_error(&mut stream, ErrorCode::Forbidden, format!("cannot identify the peer: {e}")).await;
        }
    }
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<Request>(&mut stream, MAX_REQUEST)).await;
    match hello {
        Err(_) => return,
        Ok(Ok(Request::Hello { version })) if version == VERSION => {
            let hello = Response::Hello {
                version: VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
            };
            if write_frame(&mut stream, &hello, MAX_RESPONSE).await.is_err() {
                return;
            }
        }
        Ok(Ok(Request::Hello { version })) => {
            let message = format!("protocol version {version} is not supported; this daemon speaks {VERSION}");
            return reply_error(&mut stream, ErrorCode::VersionMismatch, message).await;
        }
        Ok(Ok(_)) => return reply_error(&mut stream, ErrorCode::VersionMismatch, "expected a hello first").await,
        Ok(Err(e)) => {
            if let Some((code, message, _)) = frame_error(&e) {
                reply_error(&mut stream, code, message).await;
            }
            return;
        }
    }
    loop {
        let request = match read_frame::<Request>(&mut stream, MAX_REQUEST).await {
            Ok(Request::Hello { .. }) => {
                reply_error(&mut stream, ErrorCode::BadRequest, "hello was already exchanged").await;
                continue;
            }
            Ok(request) => request,
            Err(e) => match frame_error(&e) {
                Some((code, message, go_on)) => {
                    tracing::debug!("bad control message: {message}");
                    reply_error(&mut stream, code, message).await;
                    if go_on {
                        continue;
                    }
                    return;
                }
                None => return,
            },
        };
        let response = handler.handle(request).await;
        if let Err(e) = write_frame(&mut stream, &response, MAX_RESPONSE).await {
            tracing::debug!("control reply not sent: {e}");
            return;
        }
    }
}
