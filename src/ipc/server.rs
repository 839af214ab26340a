//! The daemon side of the control socket: binding safely, checking peers,
//! the hello, and one task per connection. What requests do is the
//! [`Handler`]'s business.
//!
//! Connections are capped ([`MAX_CONNECTIONS`]) and one that sits idle for
//! [`IDLE_TIMEOUT`] is closed; when the cap is reached, the connection idle
//! the longest makes room for the new one. A thousand idle clients cannot
//! keep `status` from being answered or use up the daemon's files.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::framing::{FrameError, read_frame, write_frame};
use super::protocol::{ErrorCode, MAX_REQUEST, MAX_RESPONSE, ProtocolError, Request, Response, VERSION};
use crate::runtime::PrivateDirError;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may wait between requests before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_mins(1);

/// What the accept loop knows of each connection: whether it waits for a
/// request (and since when), and how to close it.
struct Slot {
    idle_since: Option<Instant>,
    close: CancellationToken,
}

type Slots = Arc<Mutex<HashMap<u64, Slot>>>;

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
    #[error("cannot create {path}: {source}")]
    Io {
        /// The socket or its folder.
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
    crate::runtime::make_private(path.parent().unwrap_or(Path::new("."))).map_err(|e| match e {
        PrivateDirError::NotOurs(dir) => BindError::NotOurs(dir),
        PrivateDirError::Io { path, source } => BindError::Io { path, source },
    })?;
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
    let slots: Slots = Arc::default();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    if !make_room(&slots) {
                        reply_error(&mut stream, ErrorCode::Unavailable, "the daemon is busy with other clients; try again").await;
                        continue;
                    }
                    next_id += 1;
                    let close = CancellationToken::new();
                    lock(&slots).insert(next_id, Slot { idle_since: Some(Instant::now()), close: close.clone() });
                    let (handler, slots) = (Arc::clone(&handler), Arc::clone(&slots));
                    let id = next_id;
                    connections.spawn(async move {
                        tokio::select! {
                            () = connection(stream, handler, uid, &slots, id) => {}
                            () = close.cancelled() => {}
                        }
                        lock(&slots).remove(&id);
                    });
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

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Below the cap, or made so by closing the connection idle the longest.
/// `false` when every connection is busy with a request.
fn make_room(slots: &Slots) -> bool {
    let mut slots = lock(slots);
    if slots.len() < MAX_CONNECTIONS {
        return true;
    }
    let oldest = slots.iter().filter_map(|(id, slot)| slot.idle_since.map(|since| (since, *id))).min();
    let Some((_, id)) = oldest else { return false };
    if let Some(slot) = slots.remove(&id) {
        tracing::debug!("closing an idle control connection to make room");
        slot.close.cancel();
    }
    true
}

/// Marks a connection busy (`None`) or idle since now.
fn mark(slots: &Slots, id: u64, idle: bool) {
    if let Some(slot) = lock(slots).get_mut(&id) {
        slot.idle_since = idle.then(Instant::now);
    }
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

async fn connection(mut stream: UnixStream, handler: Arc<dyn Handler>, uid: u32, slots: &Slots, id: u64) {
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
        mark(slots, id, true);
        let Ok(frame) = tokio::time::timeout(IDLE_TIMEOUT, read_frame::<Request>(&mut stream, MAX_REQUEST)).await
        else {
            return;
        };
        mark(slots, id, false);
        let request = match frame {
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
