//! The CLI side of the control socket.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::framing::{FrameError, read_frame, write_frame};
use super::protocol::{ErrorCode, MAX_REQUEST, MAX_RESPONSE, ProtocolError, Request, Response, VERSION};

/// How to start the daemon, said when none answers.
#[cfg(target_os = "macos")]
const START: &str = "start it with `launchctl kickstart gui/$(id -u)/com.photosync.daemon` \
    (installed as in the README's \"Run as a service\"), or run `photosync daemon`";
#[cfg(not(target_os = "macos"))]
const START: &str = "start it with `systemctl --user start photosync` (the service installed as in the README), or run `photosync daemon`";

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("the photosync daemon is not running (no answer on {}); {START}", .0.display())]
    NotRunning(PathBuf),
    /// A daemon may run, but this user may not talk to it (another user's
    /// socket or runtime folder).
    #[error("cannot reach the daemon at {path}: {reason}")]
    NotReachable {
        /// The socket.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("the daemon refused: {0}")]
    Refused(ProtocolError),
    /// The daemon said something unexpected.
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
    /// The connection failed.
    #[error("control socket: {0}")]
    Frame(#[from] FrameError),
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        Self::Refused(e)
    }
}

/// A connection to the daemon, past the hello.
pub struct Client {
    stream: UnixStream,
    /// The daemon's process id.
    pub daemon_pid: u32,
}

impl Client {
    /// Connects and exchanges hellos.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let mut stream = match UnixStream::connect(path).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                return Err(ClientError::NotRunning(path.to_owned()));
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let reason = "permission denied (the socket belongs to another user)".to_owned();
                return Err(ClientError::NotReachable { path: path.to_owned(), reason });
            }
            Err(e) => return Err(ClientError::Frame(e.into())),
        };
        // A daemon that refuses us (another user) may answer and close before
        // reading the hello; its answer is still there to read.
        let sent = write_frame(&mut stream, &Request::Hello { version: VERSION }, MAX_REQUEST).await;
        let answer = read_frame(&mut stream, MAX_RESPONSE).await;
        let answer = match (sent, answer) {
            (_, Ok(answer)) => answer,
            (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e.into()),
        };
        match answer {
            Response::Hello { pid, .. } => Ok(Client { stream, daemon_pid: pid }),
            Response::Error(e) if e.code == ErrorCode::Forbidden => {
                Err(ClientError::NotReachable { path: path.to_owned(), reason: e.message })
            }
            Response::Error(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends one request and returns the answer; an error answer becomes
    /// [`ClientError::Refused`].
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, request, MAX_REQUEST).await?;
        match read_frame(&mut self.stream, MAX_RESPONSE).await? {
            Response::Error(e) => Err(e.into()),
            response => Ok(response),
        }
    }
}
