//! The messages on the control socket. Adding a command means one
//! [`Request`] variant, its payload type, and one handler in the daemon.
//!
//! Every message is a JSON object with a `type` tag. A client first sends
//! [`Request::Hello`] with [`VERSION`]; the daemon answers
//! [`Response::Hello`] or, on a mismatch, an error with
//! [`ErrorCode::VersionMismatch`]. Bump [`VERSION`] on any incompatible change.

use serde::{Deserialize, Serialize};

use super::wire;
use crate::model::{JobId, StateName, Timestamp};
use crate::verify::{VerifyOptions, VerifyReport};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;

/// Largest request the daemon reads (requests are small).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest response the CLI reads (a job listing can be large).
pub const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// CLI → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// First message on every connection.
    Hello {
        /// The client's [`VERSION`].
        version: u32,
    },
    /// What is the daemon doing, and why not more?
    Status,
    /// Stop uploading until `until` (or until resumed).
    Pause {
        /// When to resume by itself.
        until: Option<Timestamp>,
    },
    /// End a pause.
    Resume,
    /// The user signed in to this destination again (`photosync auth`):
    /// a destination held for it is tried again now.
    SignedIn {
        /// The destination's name.
        destination: String,
    },
    /// Queue these jobs again now; all failed and retry-waiting jobs when empty.
    Retry {
        /// Job ids.
        jobs: Vec<JobId>,
    },
    /// Scan every source now and report what was found.
    Scan,
    /// List jobs.
    Jobs {
        /// Only this state.
        state: Option<StateName>,
    },
    /// Check acknowledged receipts against the destinations.
    Verify {
        /// What to check.
        options: VerifyOptions,
        /// Queue what is missing or corrupt for upload again.
        repair: bool,
    },
    /// Scan, then wait until the queue is drained (or held), and report.
    Backup {
        /// Upload now even on battery or outside the allowed windows.
        #[serde(default)]
        now: bool,
        /// Upload even on a metered connection.
        #[serde(default)]
        allow_metered: bool,
    },
    /// Say of each file whether it is backed up, waiting, or left out.
    Why {
        /// Absolute paths.
        paths: Vec<std::path::PathBuf>,
    },
}

/// Daemon → CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The daemon's [`VERSION`].
        version: u32,
        /// The daemon's package version.
        daemon_version: String,
        /// Its process id.
        pid: u32,
    },
    /// Answer to [`Request::Status`].
    Status(Box<DaemonStatus>),
    /// The request was carried out.
    Done,
    /// Answer to [`Request::Retry`].
    Retried {
        /// Jobs queued again.
        queued: Vec<JobId>,
        /// Why the others were not.
        refused: Vec<String>,
    },
    /// Answer to [`Request::Scan`].
    Scanned {
        /// One report per source.
        scans: Vec<wire::Scan>,
    },
    /// Answer to [`Request::Jobs`].
    Jobs {
        /// The jobs.
        jobs: Vec<wire::Job>,
    },
    /// Answer to [`Request::Backup`].
    Backup(Box<wire::Backup>),
    /// Answer to [`Request::Verify`].
    Verified(Box<VerifyReport>),
    /// Answer to [`Request::Why`], one per path.
    Why {
        /// In the order asked.
        answers: Vec<wire::WhyAnswer>,
    },
    /// The request failed.
    Error(ProtocolError),
}

/// What `photosync status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Daemon process id.
    pub pid: u32,
    /// Daemon package version.
    pub version: String,
    /// When it started.
    pub started_at: Timestamp,
    /// `uploading`, `idle`, `paused` or `holding`.
    pub state: String,
    /// Why it is paused or holding, in words.
    pub reason: Option<String>,
    /// Whether a scan is running now.
    pub scanning: bool,
    /// Whether live file-system watching works (else only periodic scans).
    pub watching: bool,
    /// When the last full scan finished.
    pub last_scan: Option<Timestamp>,
    /// What the last full scan left out, by reason.
    #[serde(default)]
    pub skipped: Option<wire::Skipped>,
    /// The scheduler's view.
    pub scheduler: wire::Scheduler,
    /// While idle sleep is held off for uploads (`keep_awake`), until when
    /// at the latest.
    #[serde(default)]
    pub keeping_awake_until: Option<Timestamp>,
}

/// Typed error codes, so the CLI can pick its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The first message was not a hello, or versions differ.
    VersionMismatch,
    /// The message could not be read as a request.
    BadRequest,
    /// The frame was over the size cap.
    TooLarge,
    /// The peer is another user.
    Forbidden,
    /// The request is valid but cannot be done (e.g. unknown job).
    Invalid,
    /// The daemon failed while handling it.
    Internal,
    /// The daemon is shutting down or reloading.
    Unavailable,
}

/// An error on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    /// What kind.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

impl ProtocolError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let json = serde_json::to_string(&Request::Pause { until: None }).expect("json");
        assert_eq!(json, r#"{"type":"pause","until":null}"#);
        let back: Request = serde_json::from_str(r#"{"type":"jobs","state":"failed"}"#).expect("parse");
        assert_eq!(back, Request::Jobs { state: Some(StateName::Failed) });
        assert!(serde_json::from_str::<Request>(r#"{"type":"format_disk"}"#).is_err());
        let older: Request = serde_json::from_str(r#"{"type":"backup"}"#).expect("an older client's backup");
        assert_eq!(older, Request::Backup { now: false, allow_metered: false });
    }
}
